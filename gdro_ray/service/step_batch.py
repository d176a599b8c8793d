"""A step's learner batch: DAPO dynamic sampling (refill rounds), the trained subset, its
advantage weights, the behaviour log-probs of off-policy rollouts, and the staleness limit.

Dynamic sampling (`grpo.filter_all_equal`). A group whose rewards are all equal has zero GRPO
advantages, so it only costs compute. After the step's B prompts are sampled, while fewer than B
groups are informative and fewer than `grpo.max_refill_rounds` extra rounds were run, the
adversary is asked to `extend` the pending schedule by enough prompts to fill the gap at the
informative rate seen so far (capped at B), and those are sampled with the same weights. Rounds
also stop once the step has sampled as many prompts as the training pool holds (`refill_pool_spent`:
more rounds would only draw the same prompts again); if that happens before any step of the run
found an informative group — a constant reward — the run stops with one line, later it is a
warning and the step trains nothing. The
adversary later observes the whole grown schedule at once (every prompt it scheduled, so its
statistics stay compute-honest); the learner trains the first B informative groups in slot order
(or all of them when the rounds ran out: `refill_short`). In reweight mode the Prompt-GDRO
weights were normalised to mean 1 over the scheduled responses; they are normalised again over
the trained ones. The record separates `rollouts_sampled` (what was generated) from
`rollouts_trained`.

Failed rewards (`RewardHealth`). A step in which every reward call failed (a custom function's
calls raised, timed out or returned bad values; math-verify's comparisons all timed out) trains on
zero rewards: it prints a warning line, and `ALL_FAILED_STOP` such steps in a row — or every step
of a shorter run — stop the run with one line naming the function and the time limit.

Off-policy behaviour log-probs. In `cluster.off_policy` a step's rollouts were drawn by weights
one version older than the learner's; the PPO ratio must be taken against the policy that drew
them, so the samplers' own per-token log-probs go to the learner as `old_logprobs`. The engines
report raw (T = 1, full-vocabulary) log-probs, so the config requires temperature 1 and top_p 1
in that mode. Rollouts staler than `cluster.max_staleness` are refused: the step is sampled
again with the current weights (`stale_resampled` in the record).
"""
from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable

import numpy as np

from gdro_ray.errors import UserError
from gdro_ray.protocol import LearnerBatch, LearnStats, PromptRollouts, ShardResult, StepSchedule
from gdro_ray.service.shards import build_shards

# The informative rate used to size a refill round is floored here, so one unlucky round
# (say 1 informative group in 32) does not ask for 30× the batch; the round is capped at B anyway.
_MIN_RATE = 0.1
ALL_FAILED_STOP = 3  # consecutive steps whose reward calls all failed before the run stops


def informative(rewards: list[np.ndarray]) -> np.ndarray:
    """True for groups with at least two different rewards (the only ones with a gradient)."""
    return np.array([len(r) > 1 and not np.all(r == r[0]) for r in rewards], dtype=bool)


def refill_count(needed: int, sampled: int, useful: int, batch_size: int) -> int:
    """Prompts to ask for so that about `needed` more informative groups arrive, at the rate
    `useful / sampled` seen so far in this step (floored at 10%), at least 1 and at most B."""
    rate = max(useful / sampled if sampled else 1.0, _MIN_RATE)
    return int(min(batch_size, max(1, math.ceil(needed / rate))))


def trained_slots(rewards: list[np.ndarray], filter_all_equal: bool, batch_size: int) -> list[int]:
    """Slots whose groups the learner trains: all of them, or the first B informative ones."""
    if not filter_all_equal:
        return list(range(len(rewards)))
    return [int(i) for i in np.flatnonzero(informative(rewards))[:batch_size]]


def renormalised_weights(adv_weights, rollouts, slots: list[int]) -> np.ndarray:
    """The trained slots' advantage weights rescaled to mean 1 over the trained responses."""
    w = np.asarray(adv_weights, dtype=np.float64)[slots]
    n = np.asarray(rollouts, dtype=np.float64)[slots]
    total = float((w * n).sum())
    return w * (float(n.sum()) / total) if total > 0 else np.ones_like(w)


def assemble_batch(sched: StepSchedule, by_slot: dict[int, PromptRollouts], adv: list, slots: list[int],
                   sampler_logprobs: bool, informative_cap: float | None = None) -> LearnerBatch:
    """The learner batch of the trained `slots`: per response row only scalars, per trained slot
    one reference to its rollout arrays (the token ids never pass through here).

    Advantages × adversary weights, renormalised over the trained responses when some slots are
    left out; all slots keep the adversary's weights as they are, whose ω_max cap may hold their
    mean just under 1. With `informative_cap` (`prompt_gdro.informative_norm`: the cap ω_max)
    the weights are rescaled to mean 1 over the responses of groups with a non-zero advantage
    only, then capped."""
    if len(slots) == sched.batch_size:
        weights = np.asarray(sched.adv_weights, dtype=np.float64)[slots]
    else:
        weights = renormalised_weights(sched.adv_weights, sched.rollouts, slots)
    if informative_cap is not None:
        from gdro_ray.algorithms.prompt_gdro import informative_mean_one

        mask = [bool(np.any(np.asarray(adv[i]) != 0)) for i in slots]
        weights = informative_mean_one(weights, np.asarray(sched.rollouts, dtype=np.float64)[slots], mask,
                                       informative_cap)
    batch = LearnerBatch(sampler_logprobs=bool(sampler_logprobs))
    for g, (i, w) in enumerate(zip(slots, weights)):
        res = by_slot[i]
        batch.groups.append(res.group)
        batch.logprob_groups.append(res.logprobs)
        # what a rank may fetch of this group: its token ids, and its log-probs when trained against them
        batch.group_nbytes.append(int(res.nbytes) + (int(res.logprob_nbytes) if sampler_logprobs else 0))
        lens = res.response_lens
        a = np.asarray(adv[i], dtype=np.float64)
        batch.group += [g] * len(lens)
        batch.member += list(range(len(lens)))
        batch.prompt_lengths += [int(res.prompt_len)] * len(lens)
        batch.response_lengths += [int(x) for x in lens]
        batch.advantages += (a * float(w)).tolist()
        batch.signal_advantages += a.tolist()
        batch.prompt_index += [i] * len(lens)
    return batch


def _rewards_of(shard_out: list[ShardResult]) -> dict[int, np.ndarray]:
    return {r.slot: np.asarray(r.rewards, dtype=float) for o in shard_out for r in o.results}


def _call(actor, method: str, *args):
    """A Ray actor's method, or the same method of an in-process object (tests)."""
    fn = getattr(actor, method)
    if hasattr(fn, "remote"):
        import ray

        return ray.get(fn.remote(*args))
    return fn(*args)


def sample_refills(sched: StepSchedule, shard_out: list[ShardResult], t: dict, *, cfg, train: list[dict], adversary,
                   sampler_pool) -> tuple[StepSchedule, list[ShardResult], dict]:
    """Run dynamic sampling's extra rounds (synchronous mode): the `adversary` extends the
    schedule, the `sampler_pool` samples the new prompts of `train`. Returns the grown schedule,
    all shard outputs and the record fields `refill_rounds`, `refill_short`, `refill_pool_spent`."""
    g, B = cfg.grpo, cfg.batch_size
    pool = len(train)
    rounds, t0 = 0, time.perf_counter()
    while True:
        rewards = _rewards_of(shard_out)
        useful = int(informative([rewards[i] for i in sorted(rewards)]).sum())
        spent = len(rewards) >= pool  # the pool has had its chance: further rounds repeat its prompts
        if useful >= B or rounds >= g.max_refill_rounds or spent:
            break
        count = min(refill_count(B - useful, len(rewards), useful, B), pool - len(rewards))
        old = sched.batch_size
        sched = _call(adversary, "extend", count)
        rounds += 1
        shard_out = shard_out + sampler_pool.run(build_shards(cfg, train, sched, start=old, refill_round=rounds))
    t["refill"] = time.perf_counter() - t0
    return sched, shard_out, {"refill_rounds": rounds, "refill_short": useful < B,
                              "refill_pool_spent": spent and useful < B}


class DynamicSampling:
    """The driver's collaborator for `grpo.filter_all_equal`: extra rounds through the adversary
    and the sampler pool until the step holds B informative groups (`sample_refills`)."""

    def __init__(self, cfg, train: list[dict], adversary, sampler_pool):
        self.cfg, self.train, self.adversary, self.pool = cfg, train, adversary, sampler_pool

    def fill(self, sched: StepSchedule, shard_out: list[ShardResult],
             phases) -> tuple[StepSchedule, list[ShardResult], dict]:
        t: dict = {}
        out = sample_refills(sched, shard_out, t, cfg=self.cfg, train=self.train, adversary=self.adversary,
                             sampler_pool=self.pool)
        phases.add("refill", t["refill"])
        return out


class StalenessGuard:
    """The driver's collaborator for `cluster.max_staleness` (off-policy): rollouts that lag the
    learner by more versions are sampled again with the current weights (`refuse_stale`)."""

    def __init__(self, cfg, sample: Callable[[StepSchedule], tuple[list[ShardResult], float]]):
        self.cfg, self.sample = cfg, sample

    def check(self, sched: StepSchedule, shard_out: list[ShardResult], version: int,
              phases) -> tuple[list[ShardResult], bool]:
        t: dict = {}
        out, refused = refuse_stale(sched, shard_out, t, version=version,
                                    max_staleness=self.cfg.cluster.max_staleness, sample=self.sample)
        if refused:
            phases.add("sample", t["sample"])
        return out, refused


class RewardChecks:
    """Before a step learns: warn or stop when every reward call failed (`RewardHealth`, counted
    from the step this process started at) or, with dynamic sampling, no group is informative
    (`check_refill`). One per run: it remembers whether any earlier step trained a group."""

    def __init__(self, cfg, first_step: int, pool_size: int):
        self.cfg, self.pool_size = cfg, pool_size
        self.health = RewardHealth(cfg, first_step)
        self.trained_any = False

    def check(self, step: int, shard_out: list[ShardResult], rewards: list, refill: dict, slots: list[int]) -> None:
        """`step` counts from 1 (the step about to learn)."""
        all_failed = self.health.check(step, shard_out, rewards)
        if self.cfg.grpo.filter_all_equal and not all_failed:  # a failing reward has had its own line
            check_refill(refill, len(slots), self.trained_any, step, len(rewards), self.pool_size)
        self.trained_any = self.trained_any or bool(slots)


def check_refill(refill: dict, trained: int, trained_before: bool, step: int, sampled: int, pool: int) -> None:
    """After dynamic sampling: stop the run, or warn, when the step trains no group (see the module doc)."""
    if trained or not refill:
        return
    why = (f"every group of the {sampled} prompts sampled at step {step} had equal rewards "
           f"(grpo.filter_all_equal=true)")
    if refill.get("refill_pool_spent") and not trained_before:
        raise UserError(f"{why}, which covers the training pool ({pool} prompts) without one informative group "
                        f"and no earlier step had one: the reward looks constant (check reward.function)")
    print(f"warning: {why}; this step trains nothing", file=sys.stderr, flush=True)


class RewardHealth:
    """Counts steps in a row whose reward calls all failed; warns on each, stops at the limit.

    `first_step`/`steps`: the step this process started at and the run's last, so a run shorter
    than `stop_after` that fails on every step still ends with an error."""

    def __init__(self, cfg, first_step: int, stop_after: int = ALL_FAILED_STOP):
        self.cfg, self.streak = cfg, 0
        self.stop_after = max(1, min(stop_after, cfg.steps - first_step))

    def failures(self, shard_out: list[ShardResult], rewards: list) -> tuple[int, int, int]:
        """(failed calls, calls, of which timed out) of one step. A custom function is called once
        per prompt; math-verify once per rollout, where only timeouts are failures."""
        timeouts = sum(o.reward_timeouts for o in shard_out)
        if self.cfg.reward.function:
            return sum(o.reward_errors for o in shard_out), len(rewards), timeouts
        return timeouts, int(sum(len(r) for r in rewards)), timeouts

    def check(self, step: int, shard_out: list[ShardResult], rewards: list) -> bool:
        """True when every call of the step failed (after its warning line); raises at the limit."""
        failed, calls, timeouts = self.failures(shard_out, rewards)
        if calls == 0 or failed < calls:
            self.streak = 0
            return False
        self.streak += 1
        fn = self.cfg.reward.function or "math-verify"
        limit = f"sampler.reward_timeout_s={self.cfg.sampler.reward_timeout_s:g} s per response"
        if timeouts >= failed:
            what, fix = f"{failed}/{calls} timed out at {limit}", "raise sampler.reward_timeout_s or fix the function"
        else:  # raised or returned bad values; reward.on_error=stop shows the first one with its row
            what = f"{failed}/{calls} failed, {timeouts} of them timed out at {limit}"
            fix = "fix the function (reward.on_error=stop names the first failure)"
        what += f"; reward.function={fn}"
        if self.streak >= self.stop_after:
            steps = "in every step of the run" if self.streak < ALL_FAILED_STOP else f"in {self.streak} steps in a row"
            raise UserError(f"every reward call failed {steps} (step {step}: {what}): {fix}")
        print(f"warning: step {step}: every reward call failed ({what}); the step trains on zero rewards",
              file=sys.stderr, flush=True)
        return True


def refuse_stale(sched: StepSchedule, shard_out: list[ShardResult], t: dict, *, version: int, max_staleness: int,
                 sample: Callable[[StepSchedule], tuple[list[ShardResult], float]]) -> tuple[list[ShardResult], bool]:
    """Off-policy: if the rollouts lag the learner's weights `version` by more than
    `max_staleness` versions, `sample` the step again with the current weights (published just
    before); returns the shard outputs and whether they were refused."""
    sampled_with = min((o.weights_version for o in shard_out), default=version)
    if version - sampled_with <= max_staleness:
        return shard_out, False
    fresh, seconds = sample(sched)
    t["sample"] = t.get("sample", 0.0) + seconds
    return fresh, True


def learn_fields(learn: LearnStats) -> dict:
    """The learner's statistics for the step record: loss, KL, clipping, ratios (aggregate and
    per update), the bytes each rank fetched, and where each rank's time went."""
    keys = ("clip_frac", "ratio_mean", "ratio_min", "ratio_max", "grad_norm", "loss", "entropy")
    return {
        "loss": learn.loss, "kl": learn.kl, "entropy": learn.entropy, "clip_frac": learn.clip_frac,
        "grad_norm": learn.grad_norm,
        "ratio_mean": learn.ratio_mean, "ratio_min": learn.ratio_min, "ratio_max": learn.ratio_max,
        "optimizer_steps": learn.optimizer_steps,
        "updates": [{k: getattr(u, k) for k in ("epoch", "mini_batch", *keys)} for u in learn.updates],
        # the trained rollouts' array bytes, and what each learner rank fetched of them
        "rollout_bytes": learn.rollout_bytes, "rollout_bytes_per_rank": learn.fetched_bytes_per_rank,
        # where each learner rank's time went (gdro_ray/learner/phases.py names the phases)
        "learner_phase_s": learn.rank_phase_s, "learner_time_s": _rounded(learn.rank_time_s),
        "learner_cpu_s": _rounded(learn.rank_cpu_s),
    }


def _rounded(values: list | None) -> list | None:
    return None if values is None else [None if v is None else round(float(v), 3) for v in values]
