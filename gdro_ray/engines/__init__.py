"""Generation engines (vLLM, transformers) behind one interface (`base.Engine`).

Importing this package imports neither vLLM nor torch; `make_engine` imports the chosen
backend only when called.
"""
from __future__ import annotations

import logging

from gdro_ray.engines.base import Engine, Rollout

__all__ = ["Engine", "Rollout", "make_engine", "vllm_available"]

log = logging.getLogger(__name__)


def vllm_available() -> bool:
    """True when `import vllm` works in this process (imports it: seconds)."""
    try:
        import vllm  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken install counts as absent
        return False
    return True


def make_engine(kind: str, model_path: str, dtype: str = "float32", seed: int = 0, fallback: bool = False, **kw) -> Engine:
    """Build an engine: `kind` is "vllm" or "hf".

    With `fallback=True`, a "vllm" request falls back to transformers (with a logged warning)
    when vLLM cannot be imported. Extra keywords go to the engine (`max_model_len`,
    `weight_updates` for vLLM; `batch_size`, `device` for transformers).
    """
    if kind == "vllm":
        from gdro_ray.engines.vllm_engine import VLLMEngine

        try:
            return VLLMEngine(model_path, dtype=dtype, seed=seed, **kw)
        except ImportError as e:
            if not fallback:
                raise
            log.warning("%s; falling back to the transformers engine", e)
            kind = "hf"
    if kind == "hf":
        from gdro_ray.engines.hf_engine import HFEngine

        return HFEngine(model_path, dtype=dtype, seed=seed, **kw)
    raise ValueError(f"unknown engine {kind!r} (expected 'vllm' or 'hf')")
