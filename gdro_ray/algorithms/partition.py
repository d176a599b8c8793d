"""Which response rows go to which optimizer step and which learner rank: plain index arithmetic.

Pure Python (no numpy, no torch), so the data plane (`rollout_arrays.rank_rows`, run on the
driver and the samplers) and the learner worker (under torch) share one rule: every rank, given
the same batch, computes the same split, and the rows a rank fetches are exactly the rows it trains.
"""
from __future__ import annotations

from collections.abc import Sequence


def rank_slice(n: int, rank: int, world_size: int) -> range:
    """Contiguous, balanced slice of n items for `rank` (sizes differ by at most one)."""
    return range(rank * n // world_size, (rank + 1) * n // world_size)


def mini_batch_partition(prompt_index: Sequence[int], mini_batches: int) -> list[list[int]]:
    """Split response rows into at most `mini_batches` non-empty parts along prompt boundaries.

    Prompts keep their order of first appearance and are dealt out as balanced contiguous runs
    (sizes differ by at most one prompt), so a GRPO group is never split between two optimizer
    steps and every learner rank, given the same batch, computes the same partition.
    """
    if int(mini_batches) < 1:
        raise ValueError(f"mini_batches: must be ≥ 1, got {mini_batches}")
    order: dict[int, list[int]] = {}
    for row, p in enumerate(prompt_index):
        order.setdefault(int(p), []).append(row)
    groups = list(order.values())
    parts = min(int(mini_batches), len(groups))
    out = []
    for m in range(parts):
        lo, hi = m * len(groups) // parts, (m + 1) * len(groups) // parts
        out.append(sorted(r for g in groups[lo:hi] for r in g))
    return out
