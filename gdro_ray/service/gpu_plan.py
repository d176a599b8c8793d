"""GPU-path decisions made from the config before actors start, and what samplers need to know.

Pure functions (no Ray, no CUDA calls) except `sampler_engine_kwargs`, so the decision logic is tested
on CPU. Why each rule exists:

- Ray 2.60 leaves every GPU visible to an actor that reserved none (it used to hide them), so a
  config with `*.num_gpus=0` on a GPU node would silently put learner ranks and samplers on
  `cuda:0`. Learner ranks that reserve no GPU therefore run on CPU (`learner_device`); samplers
  that reserve none still use the card they see (the CUDA vLLM build cannot run on CPU), but
  take only a small equal part of it.
- vLLM refuses to start when `gpu_memory_utilization × card` exceeds the free memory, so a second
  sampler on a card with a fixed 0.5 always failed. `sampler_memory_fraction` gives each sampler
  the part of the card Ray accounted to it (`sampler.num_gpus`), less what learner ranks on the
  same card hold.
- vLLM's context (`max_model_len`) must hold the longest prompt plus `sampler.max_new_tokens`;
  `engine_max_model_len` derives it and refuses, at start, a length the model cannot take.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from gdro_ray.config.loader import ConfigError
from gdro_ray.errors import UserError
from gdro_ray.utils.cuda_devices import cuda_device_uuid

# The most of a card a vLLM sampler asks for (vLLM's own default is 0.92): the rest is left to the
# CUDA context, NCCL buffers and the allocator's fragmentation.
CARD_CEILING = 0.9
# Below this a vLLM engine cannot hold the weights of anything useful: say so instead of starting it.
MIN_FRACTION = 0.02


def learner_device(num_gpus: float) -> str | None:
    """The device a learner rank is built with: CPU when it reserved no GPU, else its own card."""
    return "cpu" if num_gpus <= 0 else None


def sampler_memory_fraction(sampler_gpus: float, max_samplers: int, learner_gpus: float,
                            learner_ranks_on_card: int, explicit: float = 0.0) -> float:
    """vLLM's `gpu_memory_utilization` for one sampler on a CUDA card.

    `explicit` (sampler.gpu_memory_utilization > 0) wins. A sampler that reserved part of a card
    (0 < sampler.num_gpus < 1) takes that part: Ray already keeps the other reservations (learner
    ranks included) within the rest. One that reserved none shares what the learner ranks on its
    card leave with up to `max_samplers` others. Raises UserError when nothing useful is left.
    """
    if explicit > 0:
        return float(explicit)
    if sampler_gpus > 0:
        share = min(float(sampler_gpus), 1.0)
    else:
        held = min(1.0, learner_ranks_on_card * min(float(learner_gpus), 1.0)) if learner_gpus > 0 else 0.0
        share = (1.0 - held) / max(1, int(max_samplers))
    fraction = round(CARD_CEILING * share, 4)
    if fraction < MIN_FRACTION:
        raise UserError(
            f"sampler.num_gpus={sampler_gpus:g}: this sampler would get {fraction:.3f} of its GPU "
            f"({learner_ranks_on_card} learner rank(s) hold that card); give samplers GPUs of their own "
            "(sampler.num_gpus > 0) or set sampler.gpu_memory_utilization")
    return fraction


def model_context(model_path: str | Path) -> int | None:
    """The model's context length (`max_position_embeddings` of its text config), or None if unknown."""
    cfg_file = Path(model_path) / "config.json"
    if not cfg_file.is_file():
        return None
    try:
        cfg = json.loads(cfg_file.read_text())
    except (OSError, ValueError):
        return None
    text = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else cfg
    value = text.get("max_position_embeddings") or cfg.get("max_position_embeddings")
    return int(value) if isinstance(value, int) and value > 0 else None


def engine_max_model_len(max_prompt_tokens: int, max_new_tokens: int, context: int | None) -> int | None:
    """vLLM's `max_model_len`: the prompt limit plus the generation limit, within the model's context.

    `max_prompt_tokens` 0 means whatever the context leaves (then the context itself). None when
    neither a limit nor the context is known (the engine then reads the model itself).
    """
    if max_prompt_tokens > 0:
        need = int(max_prompt_tokens) + int(max_new_tokens)
        if context is not None and need > context:
            raise ConfigError(f"sampler.max_new_tokens: {max_new_tokens} + sampler.max_prompt_tokens "
                            f"{max_prompt_tokens} = {need} exceed the model's context of {context} tokens")
        return need
    if context is None:
        return None
    if max_new_tokens >= context:
        raise ConfigError(f"sampler.max_new_tokens: {max_new_tokens} leaves no room for a prompt in the model's "
                        f"context of {context} tokens")
    return context


def shared_cards(uuids: list[str | None]) -> list[str]:
    """Cards named more than once (None = not on a GPU): NCCL needs one card per rank."""
    return sorted(u for u, n in Counter(u for u in uuids if u).items() if n > 1)


def sampler_gpu_kwargs(cfg, model_path: str, learner_uuids: list[str | None] = ()) -> dict:
    """Keyword arguments every sampler actor gets (see `Sampler`): engine length and GPU share inputs.

    Validates the generation length against the model's context at start (UserError naming the key).
    """
    s = cfg.sampler
    return {
        "max_model_len": engine_max_model_len(s.max_prompt_tokens, s.max_new_tokens, model_context(model_path)),
        "gpu": {"sampler_gpus": s.num_gpus, "max_samplers": s.max_samplers, "learner_gpus": cfg.learner.num_gpus,
                "learner_uuids": [u for u in learner_uuids if u], "explicit": s.gpu_memory_utilization,
                "enforce_eager": s.enforce_eager, "tensor_parallel_size": s.tensor_parallel_size},
    }


def sampler_engine_kwargs(engine: str, max_model_len: int | None, gpu: dict | None) -> dict:
    """In the sampler actor: the extra engine arguments (vLLM only; the transformers engine sizes itself)."""
    if engine != "vllm":
        return {}
    kw: dict = {}
    if max_model_len:
        kw["max_model_len"] = int(max_model_len)
    uuid = cuda_device_uuid(0) if gpu is not None else None  # vLLM's single-process worker uses cuda:0
    if uuid is not None:  # on CUDA: graphs unless asked not to, tensor parallel when asked
        kw["enforce_eager"] = bool(gpu.get("enforce_eager", False))
        kw["tensor_parallel_size"] = int(gpu.get("tensor_parallel_size", 1))
        kw["gpu_memory_utilization"] = sampler_memory_fraction(
            gpu["sampler_gpus"], gpu["max_samplers"], gpu["learner_gpus"],
            sum(u == uuid for u in gpu.get("learner_uuids", [])), gpu.get("explicit", 0.0))
    return kw
