"""Checks of the GPU placement keys, called by `validate` (loader.py); each failure names its key.

Why: NCCL refuses two ranks of one communicator on one card ("Duplicate GPU detected"), so FSDP2
ranks that reserve part of a GPU each would be packed on one card by Ray and fail at start-up
on the GPU cluster, long after `--dry-run` passed. Ray also refuses fractional reservations above
one GPU, which is better said here, with the key, than in a scheduling error.
"""
from __future__ import annotations

from gdro_ray.config.schema import Config


def check_gpu_keys(cfg: Config, need) -> None:
    s, lr = cfg.sampler, cfg.learner
    need(not (0 < lr.num_gpus < 1 and lr.world_size > 1), "learner.num_gpus",
         f"{lr.num_gpus:g} GPU per rank with learner.world_size={lr.world_size} would put several FSDP2 ranks on "
         "one card, which NCCL refuses; use learner.num_gpus=1 (or world_size=1)")
    for key, v in (("learner.num_gpus", lr.num_gpus), ("sampler.num_gpus", s.num_gpus)):
        need(v <= 1 or float(v).is_integer(), key, f"above 1 it must be a whole number of GPUs, got {v:g}")
    need(0.0 <= s.gpu_memory_utilization <= 1.0, "sampler.gpu_memory_utilization",
         f"must be in [0,1] (0 = derive from sampler.num_gpus), got {s.gpu_memory_utilization:g}")
    need(s.max_prompt_tokens >= 0, "sampler.max_prompt_tokens",
         f"must be ≥ 0 (0 = what the model's context leaves), got {s.max_prompt_tokens}")
