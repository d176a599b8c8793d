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


def pytest_collection_modifyitems(config, items):
    """Skip tests marked `gpu` when CUDA is unavailable (CPU CI stays green).

    Looks at the marker, not at keywords: a parametrize id such as "gpu" is a keyword too.
    torch is imported only when some selected test carries the marker.
    """
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    import pytest
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in gpu_items:
        item.add_marker(skip)
