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

import torch

from gdro_ray.utils.phase_timer import PhaseTimer


def learner_phase_timer(device: torch.device | str = "cpu") -> PhaseTimer:
    """A rank's phase timer; on CUDA the device is synchronised at each phase edge."""
    return PhaseTimer(torch.cuda.synchronize if torch.device(device).type == "cuda" else None)
