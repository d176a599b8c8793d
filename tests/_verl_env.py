"""verl's environment for the verl plug-in tests: `benchmarks/.venv-verl`, kept in the checkout and
rebuilt only when `VERL_PINS` change (`make side-envs` builds it, as it builds TRL's).

verl 0.9.1 declares dependencies this CPU machine cannot or need not meet (transformers<5.11,
wandb, tensorboard, ray[default] again), so the venv gets verl, TransferQueue (the v1 trainer's
data plane) and the few packages their data path imports, without their declared dependencies,
and sees the project venv's torch, ray, transformers and numpy through a .pth file.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VERL_VENV = ROOT / "benchmarks" / ".venv-verl"
VERL_PINS = ("verl==0.9.1", "transferqueue==0.1.11", "tensordict==0.10.0", "torchdata==0.11.0",
             "omegaconf==2.4.0", "hydra-core==1.3.8", "antlr4-python3-runtime==4.9.3", "codetiming==1.4.0",
             "pylatexenc==2.11", "pyvers==0.2.3", "peft==0.21.2", "orjson==3.13.0")
REQUIRE_ENV = "GDRO_REQUIRE_VERL_VENV"  # set (make test, CI): a missing venv fails the test instead of skipping


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
    print(f"creating verl venv {venv} ({', '.join(VERL_PINS)}) …", flush=True)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "gdro_project_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    p = subprocess.run([str(verl_python(venv)), "-m", "pip", "install", "-q", "--no-deps", *VERL_PINS],
                       capture_output=True, text=True)
    if p.returncode:  # pip's own lines, less the local index notes it prints for every package
        noise = "is ignored: it is neither"
        print("\n".join(ln for ln in (p.stdout + p.stderr).splitlines() if noise not in ln)[-4000:], file=sys.stderr)
        raise SystemExit(f"verl venv: pip install failed (exit {p.returncode}): {' '.join(VERL_PINS)}")
    (venv / "gdro-ray-pins.txt").write_text("\n".join(VERL_PINS) + "\n")
    return verl_python(venv)


if __name__ == "__main__":
    print(ensure_verl_venv())
