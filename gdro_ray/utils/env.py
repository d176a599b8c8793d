"""Process environment defaults that keep runs offline, quiet and inside the checkout.

Called by the CLI and the tests before Ray, vLLM or transformers are imported. Values
already set by the user win.
"""
from __future__ import annotations

import os
from pathlib import Path


def project_tmp() -> Path:
    """A temp folder for this user/checkout (short: Ray puts Unix sockets under it)."""
    root = os.environ.get("GDRO_RAY_TMP")
    if root:
        return Path(root)
    here = Path.cwd()
    return here / ".tmp"


def setup_env() -> None:
    tmp = project_tmp()
    (tmp / "ray").mkdir(parents=True, exist_ok=True)
    defaults = {
        "TMPDIR": str(tmp),
        "RAY_TMPDIR": str(tmp / "ray"),
        # Ray 2.60 turns on token auth and writes ~/.ray/auth_token; a local embedded run
        # does not need it, and CLI clients fail unless server and client agree.
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
        # vLLM on CPU: in-process engine (3 processes on 2 cores is slower), small KV cache.
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_LOGGING_LEVEL": "WARNING",
        "TOKENIZERS_PARALLELISM": "false",
    }
    for k, v in defaults.items():
        os.environ.setdefault(k, v)


def cache_dir() -> Path:
    """Where prepared models and converted datasets are cached."""
    d = os.environ.get("GDRO_RAY_CACHE")
    p = Path(d) if d else Path.home() / ".cache" / "gdro_ray"
    p.mkdir(parents=True, exist_ok=True)
    return p
