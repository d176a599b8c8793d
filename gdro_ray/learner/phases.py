"""Wall time per phase of a learner step, per rank (`train_step`'s `phase_s`).

Phases: `fetch` (this rank's rollout arrays from the object store), `behaviour` (the no-grad
pass for later mini-batches' old log-probs), `forward`, `reference` (the frozen model's forward
for the KL term), `backward` (FSDP2's gradient reduce-scatter included), `optimizer` (grad-norm
clip and AdamW), `sync` (the small all-reduces of token counts and statistics: time there is
mostly a rank waiting for the slowest one). The phases do not cover the step: the rest is
planning, padding and bookkeeping. On a GPU the clock is read after a device synchronise, so a
phase holds its kernels' time and not the time of queueing them.
"""
from __future__ import annotations

import time
from contextlib import contextmanager

import torch


class PhaseTimer:
    """Accumulates wall seconds per named phase: `with timer("forward"): ...`."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self._cuda = torch.device(device).type == "cuda"
        self._totals: dict[str, float] = {}

    def _now(self) -> float:
        if self._cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    @contextmanager
    def __call__(self, phase: str):
        start = self._now()
        try:
            yield
        finally:
            self._totals[phase] = self._totals.get(phase, 0.0) + self._now() - start

    def totals(self) -> dict[str, float]:
        """Seconds per phase so far, rounded to the millisecond."""
        return {k: round(v, 3) for k, v in self._totals.items()}
