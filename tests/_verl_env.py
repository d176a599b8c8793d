"""verl's environment for test_integrations_verl.py: `benchmarks/.venv-verl`, built once.

verl 0.7.1 declares dependencies this CPU machine cannot or need not meet (numpy<2, vllm, wandb,
ray[default]), so the venv gets verl and the few packages its data path imports, without their
declared dependencies, and sees the project venv's torch, ray, transformers and numpy through a
.pth file. 0.7.1 is the last release with `data.sampler.class_path` (0.8.0 removed it).
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VERL_VENV = ROOT / "benchmarks" / ".venv-verl"
VERL_PINS = ("verl==0.7.1", "tensordict==0.10.0", "torchdata==0.11.0", "omegaconf==2.4.0", "hydra-core==1.3.8",
             "antlr4-python3-runtime==4.9.3", "codetiming==1.4.0", "pylatexenc==2.11", "pyvers==0.2.3",
             "peft==0.21.2", "orjson==3.13.0")


def verl_python(venv: Path = VERL_VENV) -> Path:
    return venv / "bin" / "python"


def is_built(venv: Path = VERL_VENV) -> bool:
    marker = venv / "gdro-ray-pins.txt"
    return verl_python(venv).is_file() and marker.is_file() and marker.read_text() == "\n".join(VERL_PINS) + "\n"


def ensure_verl_venv(venv: Path = VERL_VENV) -> Path:
    """Run with the project venv's python: `python tests/_verl_env.py`."""
    if is_built(venv):
        return verl_python(venv)
    if venv.exists():
        shutil.rmtree(venv)
    base = getattr(sys, "_base_executable", None) or shutil.which("python3") or sys.executable
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "gdro_project_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(verl_python(venv)), "-m", "pip", "install", "-q", "--no-deps", *VERL_PINS], check=True)
    (venv / "gdro-ray-pins.txt").write_text("\n".join(VERL_PINS) + "\n")
    return verl_python(venv)


if __name__ == "__main__":
    print(ensure_verl_venv())
