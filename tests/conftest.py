"""Test-wide environment: offline, Ray without token auth, temp files inside the checkout.

Set before any test imports Ray, vLLM or transformers. Ray's own root comes from
`gdro_ray.utils.env.setup_env`, which keeps its socket paths short whatever the checkout's path.
"""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_tmp = ROOT / ".tmp"
_tmp.mkdir(parents=True, exist_ok=True)
for k, v in {
    "GDRO_RAY_TMP": str(_tmp),
    "TMPDIR": str(_tmp),
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "HF_HUB_OFFLINE": "1",
    "HF_HOME": str(ROOT / ".cache" / "hf"),
    "GDRO_RAY_CACHE": str(ROOT / ".cache" / "gdro_ray"),
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(k, v)
import tempfile  # noqa: E402

from gdro_ray.utils.env import setup_env  # noqa: E402

setup_env()

tempfile.tempdir = None  # re-read TMPDIR


def nvidia_gpu_present() -> bool:
    """An NVIDIA GPU is attached (device nodes or the driver's GPU list), whatever torch says."""
    import glob

    return bool(glob.glob("/dev/nvidia[0-9]*") or glob.glob("/proc/driver/nvidia/gpus/*"))


def pytest_collection_modifyitems(config, items):
    """Skip tests marked `gpu` only where no NVIDIA GPU is attached (CPU CI stays green).

    Looks at the marker, not at keywords: a parametrize id such as "gpu" is a keyword too.
    Where a GPU is attached they run, and `pytest_runtest_setup` fails them loudly if CUDA is
    unusable: a broken driver or a CPU torch must not pass as "no GPU".
    """
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items or nvidia_gpu_present():
        return
    import pytest

    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (none attached: no /dev/nvidia*)")
    for item in gpu_items:
        item.add_marker(skip)


def pytest_runtest_setup(item):
    if item.get_closest_marker("gpu") is None or not nvidia_gpu_present():
        return
    import pytest
    import torch

    if not torch.cuda.is_available():
        pytest.fail(f"an NVIDIA GPU is attached but CUDA is unusable in this environment (torch {torch.__version__}, "
                    f"CUDA build {torch.version.cuda}): install the gpu extra (benchmarks/gpu_setup_and_check.sh)",
                    pytrace=False)


_THREADS_AT_START: list[int] = []


def _isolated_module():
    """Each test module starts from the process's original thread set-up and environment
    (tests/_isolation.py says what an in-process vLLM engine leaves behind otherwise)."""
    import sys

    from _isolation import process_state_restored

    torch = sys.modules.get("torch")
    if torch is not None and not _THREADS_AT_START:
        _THREADS_AT_START.append(torch.get_num_threads())  # collection imported torch; nothing ran yet
    with process_state_restored(_THREADS_AT_START[0] if _THREADS_AT_START else None):
        yield


def _register_module_isolation():
    import pytest

    return pytest.fixture(autouse=True, scope="module")(_isolated_module)


isolated_module = _register_module_isolation()
