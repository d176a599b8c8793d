"""Test-wide environment: offline, Ray without token auth, temp files inside the checkout.

Set before any test imports Ray, vLLM or transformers.
"""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_tmp = ROOT / ".tmp"
(_tmp / "ray").mkdir(parents=True, exist_ok=True)
for k, v in {
    "TMPDIR": str(_tmp),
    "RAY_TMPDIR": str(_tmp / "ray"),
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


def _torch_thread_isolation():
    """Each test module starts from the process's original torch thread set-up.

    An in-process vLLM engine (test_engines, test_eval, ...) replaces `torch.set_num_threads`
    with a no-op for the rest of the process, and in-process learners set 1 thread; without this,
    what a later module computes (a learner's reduction order, prepare's weights) would depend
    on which modules ran before it (gdro_ray/utils/threads.py).
    """
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and not _THREADS_AT_START:
        _THREADS_AT_START.append(torch.get_num_threads())  # collection imported torch; nothing ran yet
    yield
    torch = sys.modules.get("torch")
    if torch is None:
        return
    from gdro_ray.utils.threads import set_torch_threads, undo_vllm_thread_patch

    undo_vllm_thread_patch()
    if _THREADS_AT_START:
        set_torch_threads(_THREADS_AT_START[0])


def _register_thread_isolation():
    import pytest

    return pytest.fixture(autouse=True, scope="module")(_torch_thread_isolation)


torch_thread_isolation = _register_thread_isolation()
