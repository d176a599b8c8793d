"""benchmarks/gpu_setup_and_check.sh up to the install: arguments and the prerequisite checks.

The install and the GPU run need a CUDA machine (and minutes of downloads); what is tested here
is every decision taken before them, with a stand-in `nvidia-smi` (--nvidia-smi) and, for the
header check, a stand-in interpreter (--python). `--check-only` stops before anything is written.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_setup_and_check.sh"


def _run(*args):
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def _fake_smi(tmp_path: Path, line: str, rc: int = 0) -> str:
    smi = tmp_path / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\necho '{line}'\nexit {rc}\n")
    smi.chmod(0o755)
    return str(smi)


H100 = "{}, NVIDIA H100 80GB HBM3, 81559 MiB"


def test_help_and_bad_arguments():
    p = _run("--help")
    assert p.returncode == 0 and "--check-only" in p.stdout and "constraints-gpu.txt" in p.stdout
    for args, what in ((["--bogus"], "unknown argument '--bogus'"), (["--venv"], "--venv needs a value"),
                       (["--budget-s", "abc"], "--budget-s must be"), (["--budget-s", "30"], "--budget-s must be")):
        p = _run(*args)
        assert p.returncode == 2 and what in p.stderr, (args, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1


def test_no_driver(tmp_path):
    p = _run("--nvidia-smi", str(tmp_path / "absent" / "nvidia-smi"), "--check-only")
    assert p.returncode == 3 and "no NVIDIA driver" in p.stderr and p.stdout == ""


def test_driver_query_failing(tmp_path):
    smi = _fake_smi(tmp_path, "Failed to initialize NVML: Driver/library version mismatch", rc=18)
    p = _run("--nvidia-smi", smi, "--check-only")
    assert p.returncode == 3 and "nvidia-smi failed: Failed to initialize NVML" in p.stderr


@pytest.mark.parametrize("version, ok", [("550.54.14", False), ("579.99", False), ("580.65.06", True),
                                         ("590.10", True), ("not-a-version", False)])
def test_driver_version_threshold(tmp_path, version, ok):
    p = _run("--nvidia-smi", _fake_smi(tmp_path, H100.format(version)), "--check-only", "--skip-install",
             "--python", sys.executable)
    if not ok:
        assert p.returncode == 3
        assert ("older than 580" in p.stderr) or ("cannot read the driver version" in p.stderr)
    elif shutil.which("cc") or shutil.which("gcc") or shutil.which("clang"):
        assert p.returncode == 0, p.stderr
        assert f"driver {version}" in p.stdout and "NVIDIA H100 80GB HBM3" in p.stdout
    else:  # this machine has no compiler: the next check names it
        assert p.returncode == 3 and "no C compiler" in p.stderr


def test_python_headers_missing(tmp_path):
    if not (shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")):
        pytest.skip("no C compiler here: the compiler check fails first")
    # an interpreter whose include folder has no Python.h (a Python without its -dev package)
    fake = tmp_path / "python3.12"
    fake.write_text(
        "#!/bin/sh\n"
        f"case \"$*\" in *'sysconfig'*) echo {tmp_path / 'include'} ;; "
        "*'version_info[:2])'*) echo 3.12 ;; *) exit 0 ;; esac\n")
    fake.chmod(0o755)
    p = _run("--nvidia-smi", _fake_smi(tmp_path, H100.format("580.65.06")), "--check-only", "--python", str(fake))
    assert p.returncode == 3 and "no Python headers" in p.stderr and "python3.12-dev" in p.stderr


def test_old_python_refused(tmp_path):
    if not (shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")):
        pytest.skip("no C compiler here: the compiler check fails first")
    fake = tmp_path / "python3.9"
    fake.write_text("#!/bin/sh\ncase \"$*\" in *'version_info[:2])'*) echo 3.9 ;; *'(3, 10) <='*) exit 1 ;; "
                    "*) exit 0 ;; esac\n")
    fake.chmod(0o755)
    p = _run("--nvidia-smi", _fake_smi(tmp_path, H100.format("580.65.06")), "--check-only", "--python", str(fake))
    assert p.returncode == 3 and "Python 3.9" in p.stderr and "3.10 to 3.13" in p.stderr


# ---- the `gpu` marker (tests/conftest.py) -----------------------------------------------------------
class _Item:
    def __init__(self, gpu: bool):
        self.gpu, self.markers = gpu, []

    def get_closest_marker(self, name):
        return object() if (name == "gpu" and self.gpu) else None

    def add_marker(self, marker):
        self.markers.append(marker)


def test_gpu_tests_skip_only_without_an_nvidia_gpu(monkeypatch):
    import conftest

    items = [_Item(gpu=True), _Item(gpu=False)]
    monkeypatch.setattr(conftest, "nvidia_gpu_present", lambda: False)
    conftest.pytest_collection_modifyitems(None, items)
    assert [m.name for m in items[0].markers] == ["skip"] and items[1].markers == []
    items = [_Item(gpu=True)]
    monkeypatch.setattr(conftest, "nvidia_gpu_present", lambda: True)
    conftest.pytest_collection_modifyitems(None, items)
    assert items[0].markers == []  # a GPU is attached: the test runs


def test_gpu_tests_fail_loudly_when_a_gpu_is_attached_but_cuda_is_not_usable(monkeypatch):
    import conftest
    import torch

    monkeypatch.setattr(conftest, "nvidia_gpu_present", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(pytest.fail.Exception, match="an NVIDIA GPU is attached but CUDA is unusable"):
        conftest.pytest_runtest_setup(_Item(gpu=True))
    conftest.pytest_runtest_setup(_Item(gpu=False))  # other tests are not concerned
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    conftest.pytest_runtest_setup(_Item(gpu=True))  # usable CUDA: nothing to say
