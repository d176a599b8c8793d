"""The framework-neutral bridge between the pure `Adversary` and another trainer's data loop.

Another framework pulls prompts (dataset row numbers) in blocks of one training batch, and hands
back the rewards of their rollouts later, in its own order, sometimes after it has pulled the
next block already (a dataloader that prefetches one batch). `PromptCurriculum`:

- `next_block()` is the next block's `StepSchedule` (B row numbers, the rollouts of each, and
  the advantage weights): `Adversary.schedule()` when nothing is outstanding, otherwise
  `schedule_ahead()` (its grouping then lags one step, as in our own off-policy mode; the lag is
  in the step record). At most `max_pending` blocks may be outstanding: a framework that never
  reports rewards fails loudly instead of silently training on a frozen curriculum.
- `observe_groups(groups)` takes (row, rewards of that row's rollouts) pairs of the oldest
  outstanding block, in any order, turns rewards into successes (reward ≥ `success_threshold`)
  and feeds them to `Adversary.observe`; it returns the step record (docs/metrics.md). A reward
  of NaN is a completion the host did not score (TRL's `None`): it is left out, not failed. Groups
  that are not exactly that block (an evaluation pass, a stale batch) are refused: `None`, or a
  ValueError with `strict=True`.
- `state_dict()` / `load_state_dict()` are JSON-ready and restore the outstanding blocks too.

The Adversary's options are our config keys (`prompt_gdro.*`, `classifier.*`, `rollout_gdro.*`,
`algorithm`, `seed`), validated by the same loader as `gdro-ray train`.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from gdro_ray.algorithms.adversary import Adversary, StepSchedule


def adversary_from_overrides(num_prompts: int, batch_size: int, group_size: int, overrides: Sequence[str] = (),
                             algorithm: str = "prompt_gdro", seed: int = 0) -> Adversary:
    """An Adversary for `num_prompts` rows, B = `batch_size` prompts per block, n̄ = `group_size`
    rollouts each, configured by dotted `key=value` overrides of our schema (one-line ConfigError
    naming a bad key)."""
    from gdro_ray.config import load_config

    n = int(group_size)
    base = [f"algorithm={algorithm}", f"batch_size={int(batch_size)}", f"budget_mean={n}", f"seed={int(seed)}"]
    if algorithm in ("grpo", "prompt_gdro"):
        # the framework gives every prompt exactly n rollouts: keep the budget window around n
        base += [f"rollout_gdro.n_min={min(n, 2)}", f"rollout_gdro.n_max={max(n, 2)}"]
    cfg = load_config(overrides=[*base, *overrides])
    return Adversary.from_config(cfg, int(num_prompts))


class PromptCurriculum:
    """Blocks of prompts chosen by the Adversary, and their rewards fed back."""

    def __init__(self, adversary: Adversary, success_threshold: float = 0.5, max_pending: int = 2):
        if max_pending < 1:
            raise ValueError(f"max_pending: must be ≥ 1, got {max_pending}")
        self.adversary = adversary
        self.success_threshold = float(success_threshold)
        self.max_pending = int(max_pending)
        self.pending: list[StepSchedule] = []  # handed out, not yet observed, oldest first
        self.refused = 0  # observe calls that did not match the oldest outstanding block
        self.last_record: dict | None = None

    @classmethod
    def create(cls, num_prompts: int, batch_size: int, group_size: int, overrides: Sequence[str] = (),
               algorithm: str = "prompt_gdro", seed: int = 0, success_threshold: float = 0.5) -> PromptCurriculum:
        adv = adversary_from_overrides(num_prompts, batch_size, group_size, overrides, algorithm, seed)
        return cls(adv, success_threshold)

    @property
    def batch_size(self) -> int:
        return self.adversary.batch_size

    # ---- out: blocks -----------------------------------------------------------------------
    def next_block(self) -> StepSchedule:
        if len(self.pending) >= self.max_pending:
            raise RuntimeError(f"GDRO curriculum: {len(self.pending)} blocks were handed out and none of their rewards "
                               "came back; wrap the reward function (TRL); with verl, use GDROReplayBuffer")
        sched = self.adversary.schedule_ahead(self.max_pending) if self.pending else self.adversary.schedule()
        self.pending.append(sched)
        return sched

    def extend(self, count: int) -> StepSchedule:
        """The oldest outstanding block grown by `count` prompts (a host's refill after it dropped
        groups, e.g. DAPO's all-equal filter); its new slots are the last `count`. The block is
        then observed as a whole."""
        if not self.pending:
            raise RuntimeError("GDRO curriculum: extend() with no block outstanding")
        grown = self.adversary.extend(int(count))
        self.pending[0] = grown
        return grown

    # ---- in: rewards -----------------------------------------------------------------------
    def observe_groups(self, groups: Iterable[tuple[int, Sequence[float]]], strict: bool = False) -> dict | None:
        """(row, rewards) per rollout group of the oldest outstanding block, in any order."""
        groups = [(int(row), np.asarray(r, dtype=np.float64).reshape(-1)) for row, r in groups]
        slots = self._match(groups)
        if slots is None:
            self.refused += 1
            if strict:
                want = self.pending[0].prompt_ids.tolist() if self.pending else []
                raise ValueError(f"GDRO curriculum: the batch's rows {sorted(r for r, _ in groups)[:8]}… are not the "
                                 f"outstanding block's rows {sorted(want)[:8]}… with their rollout counts")
            return None
        sched = self.pending[0]
        # a reward of NaN (the host's "not applicable") stays unscored: no statistic sees it
        success = [np.where(np.isnan(slots[i]), np.nan, (slots[i] >= self.success_threshold).astype(np.float64))
                   for i in range(sched.batch_size)]
        record = self.adversary.observe(sched, success, missing_ok=True)
        self.pending.pop(0)
        self.last_record = record
        return record

    def observe_stream(self, rows: Sequence[int], rewards: Sequence[float], group_size: int) -> dict | None:
        """Rewards of consecutive groups of `group_size` completions (TRL's layout), row per completion."""
        rows, rewards = list(rows), list(rewards)
        if len(rows) != len(rewards) or group_size < 1 or len(rows) % group_size:
            self.refused += 1
            return None
        groups = []
        for i in range(0, len(rows), group_size):
            chunk = rows[i:i + group_size]
            if any(r != chunk[0] for r in chunk):
                self.refused += 1
                return None
            groups.append((chunk[0], rewards[i:i + group_size]))
        return self.observe_groups(groups)

    def _match(self, groups: list[tuple[int, np.ndarray]]) -> list[np.ndarray] | None:
        """Each group's rewards in the slot it belongs to, or None when the groups are not the block."""
        if not self.pending:
            return None
        sched = self.pending[0]
        if len(groups) != sched.batch_size:
            return None
        free: dict[int, list[int]] = {}
        for slot, row in enumerate(sched.prompt_ids.tolist()):
            free.setdefault(row, []).append(slot)
        out: list[np.ndarray | None] = [None] * sched.batch_size
        for row, rewards in groups:
            # a prompt repeated in the block (resample with repeats): its groups fill its slots in turn
            cands = [s for s in free.get(row, []) if int(sched.rollouts[s]) == rewards.size]
            if not cands or np.any(np.isinf(rewards)):
                return None
            slot = cands[0]
            free[row].remove(slot)
            out[slot] = rewards
        return out  # every slot filled: the counts matched one to one

    # ---- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        from gdro_ray.algorithms.state import to_jsonable

        return to_jsonable({"adversary": self.adversary.state_dict(), "refused": self.refused})

    def load_state_dict(self, state: dict, drop_pending: bool = False) -> None:
        """Restore; `drop_pending` forgets the blocks handed out and not yet reported (a framework
        that saves after training on a block but before reporting it must not get it again)."""
        adv = dict(state["adversary"])
        if drop_pending:
            adv["pending"], adv["pending_ms"] = [], []
        self.adversary.load_state_dict(adv)
        self.pending = [StepSchedule.from_dict(p) for p in adv.get("pending") or []]
        self.refused = int(state.get("refused", 0))

    def metrics(self) -> dict:
        """Numbers worth logging in the host framework: the last step record's q and bins."""
        r = self.last_record or {}
        out = {"gdro/step": float(self.adversary.step), "gdro/refused_batches": float(self.refused)}
        for key in ("reward_mean", "useful_rollout_fraction", "shadow_price"):
            if key in r:
                out[f"gdro/{key}"] = float(r[key])
        for i, q in enumerate(r.get("bin_weights") or []):
            if q is not None:
                out[f"gdro/q/{i}"] = float(q)
        return out
