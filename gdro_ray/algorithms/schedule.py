"""One step's schedule (what the adversary hands out) and the checks of what comes back.

`StepSchedule` is fixed from `Adversary.schedule()` until `Adversary.observe()`; it travels as a
plain dict (`to_dict`/`from_dict`) between the adversary actor and the driver.
`validate_observation` is every check `observe` makes before it changes anything.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class StepSchedule:
    """What one step trains on; fixed from `schedule()` until `observe()`."""

    step: int
    prompt_ids: np.ndarray  # int64, length B; may repeat a prompt in resample mode with repeats
    group_ids: np.ndarray  # group of each prompt at schedule time
    rollouts: np.ndarray  # int64 n_i per prompt
    adv_weights: np.ndarray  # float advantage multiplier per prompt; mean over responses 1
    q: np.ndarray  # distribution over groups applied this step
    lag: int = 0  # steps of results not yet observed when this schedule was made (off-policy: 1)

    def to_dict(self) -> dict:
        return {
            "step": int(self.step),
            "prompt_ids": self.prompt_ids.tolist(),
            "group_ids": self.group_ids.tolist(),
            "rollouts": self.rollouts.tolist(),
            "adv_weights": self.adv_weights.tolist(),
            "q": self.q.tolist(),
            "lag": int(self.lag),
        }

    @classmethod
    def from_dict(cls, d: dict) -> StepSchedule:
        return cls(
            step=int(d["step"]),
            prompt_ids=np.asarray(d["prompt_ids"], dtype=np.int64),
            group_ids=np.asarray(d["group_ids"], dtype=np.int64),
            rollouts=np.asarray(d["rollouts"], dtype=np.int64),
            adv_weights=np.asarray(d["adv_weights"], dtype=np.float64),
            q=np.asarray(d["q"], dtype=np.float64),
            lag=int(d.get("lag", 0)),
        )

    @property
    def batch_size(self) -> int:
        return int(self.prompt_ids.size)


def json_list(values) -> list:
    """Floats as a JSON-safe list: NaN (an empty or unseen group's unknown value) becomes None."""
    arr = np.asarray(values, dtype=np.float64)
    return [None if not np.isfinite(v) else float(v) for v in arr]


def group_sums(group_ids: np.ndarray, values: np.ndarray, num_groups: int) -> np.ndarray:
    return np.bincount(group_ids, weights=values, minlength=num_groups)[:num_groups]


def validate_observation(pending: StepSchedule | None, step: int, schedule: StepSchedule, rewards, surrogate,
                         needs_surrogate: bool, missing_ok: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """All checks of `Adversary.observe`, vectorised; returns the flat rewards and each prompt's start.

    `pending` is the oldest schedule handed out, `step` the adversary's step (for the message);
    with `missing_ok` a NaN reward (a rollout not scored) passes, an infinite one does not.
    """
    if pending is None:
        raise ValueError(f"observe: no pending schedule (call schedule() first; step {step})")
    if int(schedule.step) != pending.step:
        raise ValueError(f"observe: schedule is for step {schedule.step}, the pending step is {pending.step}")
    if not np.array_equal(np.asarray(schedule.prompt_ids), pending.prompt_ids) or \
            not np.array_equal(np.asarray(schedule.rollouts), pending.rollouts):
        raise ValueError(f"observe: schedule for step {pending.step} does not match the one handed out "
                         "(prompt ids or rollout counts differ)")
    B = pending.batch_size
    if len(rewards) != B:
        raise ValueError(f"observe: rewards has {len(rewards)} prompts, the schedule has {B}")
    try:
        sizes = np.fromiter(map(len, rewards), dtype=np.int64, count=B)
    except TypeError:
        raise ValueError("observe: each prompt's rewards must be a 1-D sequence") from None
    bad = np.flatnonzero(sizes != pending.rollouts)
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"observe: prompt {int(pending.prompt_ids[i])} (slot {i}) has {int(sizes[i])} "
                         f"rewards, scheduled {int(pending.rollouts[i])}")
    try:
        flat = np.concatenate(list(rewards)).astype(np.float64, copy=False) if B else np.zeros(0)
    except (TypeError, ValueError):
        raise ValueError("observe: rewards must be numbers, one 1-D sequence per prompt") from None
    if flat.ndim != 1 or flat.size != int(sizes.sum()):
        raise ValueError("observe: each prompt's rewards must be a 1-D sequence")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    bad = np.isinf(flat) if missing_ok else ~np.isfinite(flat)
    for problem, mask in (("a non-finite reward", bad),
                          ("a reward outside [0,1]", (flat < 0.0) | (flat > 1.0))):
        hit = np.flatnonzero(mask)
        if hit.size:
            i = int(np.searchsorted(starts, hit[0], side="right") - 1)
            raise ValueError(f"observe: prompt {int(pending.prompt_ids[i])} (slot {i}) has {problem}")
    if surrogate is None and needs_surrogate:
        raise ValueError("observe: signal 'surrogate' needs the per-prompt surrogate losses")
    if surrogate is not None:
        s = np.asarray(surrogate, dtype=np.float64).reshape(-1)
        if s.size != B:
            raise ValueError(f"observe: surrogate has {s.size} values, the schedule has {B} prompts")
        if not np.all(np.isfinite(s)):
            raise ValueError("observe: surrogate has a non-finite value")
    return flat, starts
