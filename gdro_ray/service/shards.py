"""A step's schedule as sampler shards: what each sampler call is asked to generate.

Pure: the schedule (prompt ids and rollout counts), the training pool and the config in, plain
dicts out, so the driver's first round and dynamic sampling's refill rounds
(`step_batch.sample_refills`) build shards by the one rule. A shard's seed depends on the run's
seed, the step and the shard's position only, so the same schedule draws the same rollouts.
"""
from __future__ import annotations

from gdro_ray.service.user_extensions import shard_extras


def build_shards(cfg, train: list[dict], sched: dict) -> list[dict]:
    """`sampler.shard_size` prompts per shard, in slot order, with their answers, n_i and a seed."""
    s, size = cfg.sampler, max(1, cfg.sampler.shard_size)
    slots = list(range(len(sched["prompt_ids"])))
    shards = []
    for i in range(0, len(slots), size):
        part = slots[i:i + size]
        ex = [train[sched["prompt_ids"][j]] for j in part]
        shards.append({
            "shard_id": len(shards), "slots": part, "prompts": [e["prompt"] for e in ex],
            "answers": [e["answer"] for e in ex], "n": [int(sched["rollouts"][j]) for j in part],
            "max_new_tokens": s.max_new_tokens, "temperature": s.temperature, "top_p": s.top_p,
            "seed": (cfg.seed * 1_000_003 + sched["step"] * 1009 + len(shards)) % (2**31),
            **shard_extras(cfg, ex),  # custom reward: row ids and metadata
        })
    return shards
