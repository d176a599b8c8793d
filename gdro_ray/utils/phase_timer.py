"""Wall time per named phase of a step: `with timer("learn"): ...`.

The driver names its stages with it (schedule, sample, learn, observe, publish, ...) and each
learner rank its own phases (`gdro_ray/learner/phases.py`). A phase entered twice adds up. `sync`
is called before each clock read, so a phase on an asynchronous device (CUDA) holds the time of
its kernels rather than the time of queueing them.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager


class PhaseTimer:
    def __init__(self, sync: Callable[[], None] | None = None) -> None:
        self._sync = sync
        self._totals: dict[str, float] = {}

    def _now(self) -> float:
        if self._sync is not None:
            self._sync()
        return time.perf_counter()

    @contextmanager
    def __call__(self, phase: str):
        start = self._now()
        try:
            yield
        finally:
            self.add(phase, self._now() - start)

    def add(self, phase: str, seconds: float) -> None:
        """Count `seconds` to `phase` (time measured elsewhere, e.g. by a sampler)."""
        self._totals[phase] = self._totals.get(phase, 0.0) + float(seconds)

    def seconds(self) -> dict[str, float]:
        """Seconds per phase so far, unrounded, in the order the phases were first entered."""
        return dict(self._totals)

    def totals(self) -> dict[str, float]:
        """Seconds per phase so far, rounded to the millisecond."""
        return {k: round(v, 3) for k, v in self._totals.items()}
