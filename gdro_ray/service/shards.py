"""A step's schedule as sampler shards: what each sampler call is asked to generate.

Pure: the schedule (prompt ids and rollout counts), the training pool and the config in,
`Shard` messages out, so the driver's first round and dynamic sampling's refill rounds
(`step_batch.sample_refills`) build shards by the one rule. A shard's seed depends on the run's
seed, the step, the refill round and the shard's position only, so the same schedule draws the
same rollouts, and a prompt drawn again in a refill round is not sampled identically.
"""
from __future__ import annotations

from gdro_ray.protocol import Shard, StepSchedule
from gdro_ray.service.user_extensions import shard_extras

# Shard ids of refill round r start at r·ROUND_IDS, so every shard of a step has its own id.
ROUND_IDS = 1000


def build_shards(cfg, train: list[dict], sched: StepSchedule, start: int = 0, refill_round: int = 0) -> list[Shard]:
    """`sampler.shard_size` prompts per shard, in slot order from slot `start` (a refill round
    samples only the slots its `extend` added), with their answers, n_i and a seed."""
    s, size = cfg.sampler, max(1, cfg.sampler.shard_size)
    slots = list(range(int(start), sched.batch_size))
    shards = []
    for k, i in enumerate(range(0, len(slots), size)):
        part = slots[i:i + size]
        ex = [train[int(sched.prompt_ids[j])] for j in part]
        seed = cfg.seed * 1_000_003 + int(sched.step) * 1009 + k + 7919 * refill_round
        shards.append(Shard(
            shard_id=k + ROUND_IDS * refill_round, slots=part, prompts=[e["prompt"] for e in ex],
            answers=[e["answer"] for e in ex], n=[int(sched.rollouts[j]) for j in part],
            max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p, seed=seed % (2**31),
            contexts=[e.get("context") for e in ex] if any(e.get("context") for e in ex) else None,
            **shard_extras(cfg, ex),  # custom reward: row ids and metadata
        ))
    return shards
