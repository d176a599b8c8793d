"""What one run's step loop works with: the adversary, the sampler pool, the learner group, the
weight transport and the data. `build.build_trainer` makes them from the config; tests and
benchmarks hand the `Trainer` their own stand-ins.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("gdro_ray.driver")


@dataclass
class RunParts:
    """What the step loop works with. Ray handles in a run; stand-ins in tests and benchmarks."""

    adversary: Any  # the adversary actor (or an object with the same methods)
    pool: Any  # SamplerPool
    learner: Any  # LearnerGroup
    weights: Any  # WeightTransport
    train: list[dict] = field(default_factory=list)
    eval_set: list[dict] = field(default_factory=list)
    model_path: str = ""
    base_signature: str | None = None  # what decides the base evaluation (`validation.base_signature`)
    base_reuse: dict | None = None  # a base evaluation to reuse (`eval.base_from`)

    def shutdown(self) -> None:
        import ray

        for name in ("weights", "pool", "learner"):
            obj = getattr(self, name, None)
            if obj is not None:
                try:
                    obj.shutdown()
                except Exception as e:  # keep shutting the rest down
                    log.warning("shutdown of %s failed: %s", name, e)
        if self.adversary is not None and hasattr(self.adversary, "close") and hasattr(self.adversary.close, "remote"):
            try:
                ray.get(self.adversary.close.remote(), timeout=10)
                ray.kill(self.adversary)
            except Exception:
                pass
        self.weights = self.pool = self.learner = self.adversary = None
