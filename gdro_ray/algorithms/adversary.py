"""The adversary: data order, difficulty groups and both GDRO controllers behind one object.

This is the pure (numpy-only) core that the Ray adversary actor and the simulator both wrap.
One training step is a round trip:

1. `schedule()` classifies nothing new (groups use history up to the previous step, SPEC
   §2.1) and decides, for this step:
   - which prompts: GRPO, Rollout-GDRO alone and Prompt-GDRO in `reweight` mode walk the pool
     in an epoch-wise seeded shuffle (a data cursor), B prompts per step; Prompt-GDRO in
     `resample` mode draws each slot's group from q over the groups in play, then a prompt
     uniformly inside that group (see `_resample`).
   - how many rollouts each prompt gets: Rollout-GDRO's integer allocation (Σ n_i = B·n̄
     exactly) when it is on, n̄ each otherwise; in `knapsack` mode from each prompt's own
     posterior-mean success rate (`knapsack.py`).
   - the advantage multiplier per prompt: Prompt-GDRO's q of the prompt's group, normalised to
     mean 1 over the step's responses and capped (reweight mode), 1.0 otherwise.
   Calling it again before `observe` returns the same pending schedule.
2. `observe(schedule, rewards)` validates everything first (so bad input changes nothing),
   then feeds the visits to the classifier and the learning-progress tracker (`progress.py`),
   the per-prompt difficulty signal to Prompt-GDRO (with `signal="progress"`: the tracker's
   per-step change of re-visited prompts), the (n, c) counts to Rollout-GDRO, and returns the
   per-step record (`docs/metrics.md`), which also says how hard q leans (`q_ratio`) and what
   share of groups the schedule expected to carry a gradient.

Controllers that the algorithm does not use still run in *shadow*: they observe every step, so
a GRPO run reports the scores and variances the adversary would have acted on, but their
decisions are never applied. `bin_weights` is always the q that was applied: for the data
cursor that is the pool's group shares (what uniform prompt sampling amounts to).
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from gdro_ray.algorithms.classifier import DifficultyClassifier
from gdro_ray.algorithms.knapsack import gradient_probability
from gdro_ray.algorithms.progress import ProgressTracker
from gdro_ray.algorithms.prompt_gdro import PromptGDRO, q_ratio
from gdro_ray.algorithms.resample import resample_prompts
from gdro_ray.algorithms.rollout_gdro import RolloutGDRO
from gdro_ray.algorithms.schedule import StepSchedule, group_sums, json_list, validate_observation
from gdro_ray.algorithms.signals import SIGNAL_KINDS, difficulty_signal

ALGORITHMS = ("grpo", "prompt_gdro", "rollout_gdro", "both")
MODES = ("reweight", "resample")
ROLLOUT_PROXIES = ("reward_variance", "passk_variance")
SHARE_NORMALIZATIONS = ("auto", "batch", "batch_raw", "pool", "none")
SIGNALS = (*SIGNAL_KINDS, "progress")  # progress: the ProgressTracker's per-step change of success
RESAMPLE_BASES = ("uniform", "pool")


class Adversary:
    """Classifier + Prompt-GDRO + Rollout-GDRO + the data order, deterministic given `seed`."""

    def __init__(self, num_prompts: int, algorithm: str, batch_size: int, budget_mean: int,
                 classifier_kw: dict | None = None, prompt_kw: dict | None = None,
                 rollout_kw: dict | None = None, signal: str = "learnability",
                 mode: str = "resample", allow_repeats: bool = True, seed: int = 0,
                 rollout_proxy: str = "passk_variance", max_repeats: int = 2,
                 share_normalization: str = "auto", resample_base: str = "uniform"):
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm: must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
        if mode not in MODES:
            raise ValueError(f"mode: must be one of {', '.join(MODES)}, got {mode!r}")
        if rollout_proxy not in ROLLOUT_PROXIES:
            raise ValueError(f"rollout_proxy: must be one of {', '.join(ROLLOUT_PROXIES)}, got {rollout_proxy!r}")
        if share_normalization not in SHARE_NORMALIZATIONS:
            raise ValueError(f"share_normalization: must be one of {', '.join(SHARE_NORMALIZATIONS)}, "
                             f"got {share_normalization!r}")
        if resample_base not in RESAMPLE_BASES:
            raise ValueError(f"resample_base: must be one of {', '.join(RESAMPLE_BASES)}, got {resample_base!r}")
        if signal not in SIGNALS:
            raise ValueError(f"signal: must be one of {', '.join(SIGNALS)}, got {signal!r}")
        if num_prompts < 1:
            raise ValueError(f"num_prompts: must be ≥ 1, got {num_prompts}")
        if batch_size < 1:
            raise ValueError(f"batch_size: must be ≥ 1, got {batch_size}")
        self.num_prompts = int(num_prompts)
        self.algorithm = algorithm
        self.batch_size = int(batch_size)
        self.budget_mean = int(budget_mean)
        self.signal = signal
        self.rollout_proxy = rollout_proxy
        self.mode = mode
        self.allow_repeats = bool(allow_repeats)
        if int(max_repeats) != max_repeats or max_repeats < 0:
            raise ValueError(f"max_repeats: must be an integer ≥ 0 (0 = unlimited), got {max_repeats}")
        self.max_repeats = int(max_repeats)
        self.resample_base = resample_base
        self.seed = int(seed)
        self.use_prompt = algorithm in ("prompt_gdro", "both")
        self.use_rollout = algorithm in ("rollout_gdro", "both")
        self.resample = self.use_prompt and mode == "resample"
        self.reweight = self.use_prompt and mode == "reweight"
        if self.resample and not self.allow_repeats and self.batch_size > self.num_prompts:
            raise ValueError(f"batch_size: {batch_size} > {num_prompts} prompts needs allow_repeats in resample mode")

        # Prompt-GDRO's share normalisation (prompt_gdro.py): in resample mode the batch share is
        # q's own choice, so it may not be the reference; `auto` picks the batch share under the
        # data cursor (the paper's form: there it is the natural frequency) and none in resample.
        if share_normalization == "auto":
            share_normalization = "none" if self.resample else "batch"
        self.share_normalization = share_normalization
        self.classifier = DifficultyClassifier(self.num_prompts, **(classifier_kw or {}))
        self.num_groups = int(self.classifier.num_groups)
        prompt_kw = dict(prompt_kw or {})
        prompt_kw.setdefault("normalize_by_share", share_normalization != "none")
        prompt_kw.setdefault("share_raw", share_normalization == "batch_raw")
        self.prompt_gdro = PromptGDRO(self.num_groups, **prompt_kw)
        self.rollout_gdro = RolloutGDRO(self.num_groups, budget_mean=self.budget_mean, **(rollout_kw or {}))
        # Learning progress runs for every algorithm (reported as bin_progress), like the shadow controllers.
        self.progress = ProgressTracker(self.num_prompts, self.num_groups, beta=self.prompt_gdro.beta)

        self.step = 0
        self.epoch = 0  # data-cursor epoch: its permutation is a function of (seed, epoch)
        self.cursor = 0  # position inside the current epoch's permutation
        self._perm: np.ndarray | None = None
        self._rng = np.random.default_rng([self.seed, 1])
        # Schedules handed out and not yet observed, oldest first. Normally one; one-step
        # off-policy training asks for the next step's schedule (`schedule_ahead`) before the
        # current one is observed, so its grouping lags the history by one step (recorded).
        self._pending: list[StepSchedule] = []
        self._pending_ms: list[float] = []
        self._last: dict[str, Any] = {}

    @classmethod
    def from_config(cls, cfg, num_prompts: int) -> Adversary:
        """Build from a `gdro_ray.config.Config` (sections classifier, prompt_gdro, rollout_gdro)."""
        c, p, r = cfg.classifier, cfg.prompt_gdro, cfg.rollout_gdro
        return cls(
            num_prompts=num_prompts, algorithm=cfg.algorithm, batch_size=cfg.batch_size,
            budget_mean=cfg.budget_mean,
            classifier_kw=dict(k=c.k, window=c.window, edges=tuple(c.edges), hysteresis=c.hysteresis,
                               prior_refit_every=c.prior_refit_every, prior_strength_max=c.prior_strength_max,
                               binning=c.binning, refresh_every=c.refresh_every),
            prompt_kw=dict(eta=p.eta, gamma=p.gamma, beta=p.beta, share_floor=p.share_floor,
                           score_clip=p.score_clip if p.score_clip > 0 else float("inf"),  # 0 = no clip
                           omega_max=p.omega_max, weights=p.weights, worst_eta=p.worst_eta),
            rollout_kw=dict(n_min=r.n_min, n_max=r.n_max, dual_lr=r.dual_lr, v_min=r.v_min,
                            variance_beta=r.variance_beta, mode=r.mode),
            signal=p.signal, mode=p.mode, allow_repeats=p.allow_repeats, seed=cfg.seed,
            rollout_proxy=r.proxy, max_repeats=p.max_repeats, share_normalization=p.share_normalization,
            resample_base=p.resample_base,
        )

    # ------------------------------------------------------------------ data order
    def _permutation(self) -> np.ndarray:
        if self._perm is None:
            perm = np.random.default_rng([self.seed, 2, self.epoch]).permutation(self.num_prompts)
            self._perm = perm.astype(np.int32)  # 4 bytes per prompt: the pool is < 2^31 (classifier limit)
        return self._perm

    def _take_cursor(self, count: int) -> np.ndarray:
        """Next `count` prompts of the shuffled pool, crossing into new epochs as needed."""
        parts = []
        while count > 0:
            perm = self._permutation()
            take = min(count, self.num_prompts - self.cursor)
            parts.append(perm[self.cursor:self.cursor + take])
            self.cursor += take
            count -= take
            if self.cursor >= self.num_prompts:
                self.epoch, self.cursor, self._perm = self.epoch + 1, 0, None
        return np.concatenate(parts).astype(np.int64)

    def _resample(self, q: np.ndarray, counts: np.ndarray, size: int | None = None,
                  taken: np.ndarray | None = None) -> np.ndarray:
        """B slots (or `size`) drawn by q over the groups, then prompts inside each group
        (gdro_ray/algorithms/resample.py); `taken`: the step's earlier prompts (a refill round)."""
        cap = 1 if not self.allow_repeats else self.max_repeats
        return resample_prompts(self._rng, self.classifier, q, counts, self.batch_size if size is None else int(size),
                                cap, taken)

    # ------------------------------------------------------------------ the round trip
    def schedule(self) -> StepSchedule:
        """This step's prompts, groups, rollouts and advantage weights (idempotent until observe)."""
        if self._pending:
            return self._pending[0]
        return self._make_schedule()

    def pending_schedule(self) -> StepSchedule | None:
        """The oldest schedule handed out and not yet observed (the one `observe` takes next)."""
        return self._pending[0] if self._pending else None

    def schedule_ahead(self, max_pending: int = 2) -> StepSchedule:
        """A schedule for the step after the newest pending one (one-step off-policy mode).

        It is built from the history observed so far, i.e. without the pending steps' results.
        """
        if len(self._pending) >= max_pending:
            raise ValueError(f"schedule_ahead: {len(self._pending)} schedules already pending "
                             f"(max {max_pending}); observe step {self._pending[0].step} first")
        return self._make_schedule()

    def extend(self, count: int) -> StepSchedule:
        """Add `count` prompts to the oldest pending schedule (DAPO dynamic sampling's refill
        round) and return the grown schedule; `observe` then takes all of them at once.

        The extra prompts come the way the step's own did (the data cursor, or q resampled
        with the step's q), with Rollout-GDRO's allocation for them (Σ n = count·n̄) and, in
        reweight mode, their q weights; grouping uses the history as of now, which is the step's
        own unless a later schedule is pending. Calls are part of the deterministic sequence:
        the same schedule/extend/observe calls from the same state give the same prompts.
        """
        if not self._pending:
            raise ValueError(f"extend: no pending schedule (call schedule() first; step {self.step})")
        if int(count) < 1:
            raise ValueError(f"extend: count must be ≥ 1, got {count}")
        t0 = time.perf_counter()
        base = self._pending[0]
        extra = self._draw(int(count), base.q, taken=base.prompt_ids)
        grown = StepSchedule(base.step, *(np.concatenate([a, b]) for a, b in zip(
            (base.prompt_ids, base.group_ids, base.rollouts, base.adv_weights), extra[1:])), base.q, base.lag)
        self._pending[0] = grown
        self._pending_ms[0] += (time.perf_counter() - t0) * 1e3
        return grown

    def _draw(self, size: int, q_fixed: np.ndarray | None = None, taken: np.ndarray | None = None):
        """(q, prompt ids, group ids, rollouts, advantage weights) for `size` new slots."""
        counts = np.asarray(self.classifier.group_counts(), dtype=np.int64)
        in_play = counts > 0  # groups with members: the only ones q may put mass on
        if self.resample:
            if q_fixed is not None:
                q = np.where(in_play, q_fixed, 0.0)
                q = q / q.sum() if q.sum() > 0 else in_play / in_play.sum()
            else:
                q = self._q(in_play)
                q = np.where(in_play, q, 0.0)  # an empty group can never be asked for a prompt
                if self.resample_base == "pool":  # q tilts the pool's own mix: equal scores = uniform prompts
                    q = q * counts
                q = q / q.sum()
            prompt_ids = self._resample(q, counts, size, taken)
        else:
            q = counts / max(int(counts.sum()), 1)
            if self.reweight:
                q = self._q(in_play)
            prompt_ids = self._take_cursor(size)
        group_ids = np.asarray(self.classifier.groups(prompt_ids), dtype=np.int64)
        if self.use_rollout:
            success = self.classifier.success_rates(prompt_ids) if self.rollout_gdro.mode == "knapsack" else None
            rollouts = np.asarray(self.rollout_gdro.allocate(group_ids, success), dtype=np.int64)
        else:
            rollouts = np.full(prompt_ids.size, self.budget_mean, dtype=np.int64)
        if self.reweight:
            per_response = np.repeat(group_ids, rollouts)
            w = np.asarray(self.prompt_gdro.advantage_weights(per_response, in_play), dtype=np.float64)
            starts = np.concatenate([[0], np.cumsum(rollouts)[:-1]])
            adv_weights = w[starts]  # every response of a prompt shares its group's weight
        else:
            adv_weights = np.ones(prompt_ids.size, dtype=np.float64)
        return q, prompt_ids, group_ids, rollouts, adv_weights

    def _q(self, in_play: np.ndarray) -> np.ndarray:
        """Prompt-GDRO's q; linear weights that lean to the worst group read the groups' success."""
        pg = self.prompt_gdro
        success = self.classifier.group_success_rates() if pg.weights == "linear" and pg.worst_eta > 0 else None
        return np.asarray(pg.distribution(in_play, success), dtype=np.float64)

    def _make_schedule(self) -> StepSchedule:
        t0 = time.perf_counter()
        q, prompt_ids, group_ids, rollouts, adv_weights = self._draw(self.batch_size)
        lag = len(self._pending)
        sched = StepSchedule(self.step + lag, prompt_ids, group_ids, rollouts, adv_weights, q, lag)
        self._pending.append(sched)
        self._pending_ms.append((time.perf_counter() - t0) * 1e3)
        return sched

    def _validate(self, schedule: StepSchedule, rewards, surrogate, missing_ok: bool) -> tuple[np.ndarray, np.ndarray]:
        return validate_observation(self._pending[0] if self._pending else None, self.step, schedule, rewards,
                                    surrogate, self.signal == "surrogate", missing_ok)

    def observe(self, schedule: StepSchedule, rewards: list[np.ndarray],
                surrogate: np.ndarray | None = None, missing_ok: bool = False) -> dict:
        """Take the step's rewards (per prompt its n_i rewards in [0,1]); return the step record.

        With `missing_ok`, a NaN reward is a rollout that was not scored (a host framework's "not
        applicable"): no statistic sees it, and a prompt with none scored is not visited at all
        (the budget it spent still counts in `rollouts`; `rollouts_observed` counts the rest).

        Raises ValueError naming the problem, with no state changed, on a schedule that is
        not the pending one, wrong lengths, wrong rollout counts, or non-finite / out-of-range
        rewards.
        """
        t0 = time.perf_counter()
        flat, starts = self._validate(schedule, rewards, surrogate, missing_ok)
        sch = self._pending[0]
        G = self.num_groups
        n = sch.rollouts
        scored = np.isfinite(flat)  # every rollout, unless missing_ok let NaNs through
        n_scored = np.add.reduceat(scored.astype(np.int64), starts) if n.size else np.zeros(0, np.int64)
        correct = (np.add.reduceat(((flat > 0.5) & scored).astype(np.int64), starts) if n.size
                   else np.zeros(0, np.int64))
        reward_total = float(flat[scored].sum())
        sur = None if surrogate is None else np.asarray(surrogate, dtype=np.float64).reshape(-1)
        # the chance each group carries a gradient, from the success rates the schedule saw
        expected_useful = gradient_probability(n, self.classifier.success_rates(sch.prompt_ids))
        # what the statistics see: the prompts with a scored rollout, their scored rollouts only
        seen = n_scored > 0
        ids, groups, n_obs, c_obs = sch.prompt_ids[seen], sch.group_ids[seen], n_scored[seen], correct[seen]
        rewards_obs = [r[np.isfinite(r)] for r, hit in zip((np.asarray(x, dtype=np.float64) for x in rewards), seen)
                       if hit]
        sur_obs = None if sur is None else sur[seen]

        # The pool's group shares as they were when the step was grouped (before this visit).
        pool_shares = (np.asarray(self.classifier.group_counts(), dtype=np.float64)
                       if self.share_normalization == "pool" else None)
        self.classifier.observe(ids, n_obs, c_obs)
        self.classifier.end_step()
        delta, gap = self.progress.observe(sch.step, ids, groups, n_obs, c_obs)
        if self.signal == "progress":
            # per-step progress of the re-visited prompts; a group's mean is Σ Δ / Σ steps (progress.py)
            hit = gap > 0
            signals = delta[hit] / gap[hit]
            self.prompt_gdro.observe(groups[hit], signals, pool_shares, weights=gap[hit].astype(np.float64))
        else:
            signals = np.asarray(difficulty_signal(self.signal, rewards_obs, sur_obs), dtype=np.float64)
            self.prompt_gdro.observe(groups, signals, pool_shares)
        proxy = None
        if self.rollout_proxy == "passk_variance":
            # π(1 − π) of each prompt's pass@k estimate after this visit (empirical-Bayes shrunk, so a
            # hard prompt with 0/n correct still has a small positive value rather than exactly 0).
            est = self.classifier.estimates(ids)
            proxy = np.clip(est * (1.0 - est), 0.0, 0.25)
        self.rollout_gdro.observe(groups, n_obs, c_obs, proxy)

        useful = (correct > 0) & (correct < n_scored)
        B = sch.batch_size
        on_useful = float((sch.adv_weights * n)[useful].sum() / max(int(n[useful].sum()), 1)) if useful.any() else None
        bin_prompts = np.bincount(sch.group_ids, minlength=G)[:G]
        pm, rm = self.prompt_gdro.metrics(), self.rollout_gdro.metrics()
        record = {
            "step": sch.step,
            "algorithm": self.algorithm,
            "mode": self.mode if self.use_prompt else "cursor",
            "prompts": B,
            "rollouts": int(n.sum()),
            "rollouts_observed": int(n_scored.sum()),
            "budget_mean": self.budget_mean,
            "epoch": self.epoch,
            "repeated_slots": int(B - np.unique(sch.prompt_ids).size),
            "bin_prompts": np.asarray(self.classifier.group_counts(), dtype=int).tolist(),
            "bin_batch_prompts": bin_prompts.astype(int).tolist(),
            "bin_rollouts": group_sums(sch.group_ids, n.astype(np.float64), G).astype(int).tolist(),
            "bin_share": (bin_prompts / max(B, 1)).tolist(),
            "bin_weights": json_list(sch.q),
            "bin_scores": json_list(self.prompt_gdro.scores),
            "bin_variance": json_list(rm.get("variance", np.zeros(G))),
            "bin_pass_at_k": json_list(self.classifier.group_pass_at_k()),
            "bin_clip_fraction": json_list(pm.get("clip_fraction", np.zeros(G))),
            "bin_adv_weight": (group_sums(sch.group_ids, sch.adv_weights, G)
                               / np.maximum(bin_prompts, 1)).tolist(),
            "shadow_price": float(self.rollout_gdro.shadow_price),
            "reward_mean": reward_total / max(int(n_scored.sum()), 1),
            "useful_rollout_fraction": float(n[useful].sum() / max(int(n.sum()), 1)),
            "useful_prompt_fraction": float(useful.sum() / max(int((n > 0).sum()), 1)),
            "signal_mean": float(signals.mean()) if signals.size else 0.0,
            "expected_useful_fraction": float(expected_useful.mean()) if B else 0.0,
            "q_ratio": q_ratio(sch.q),
            "adv_weight_ratio": float(sch.adv_weights.max() / sch.adv_weights.min()) if B and sch.adv_weights.min() > 0
            else None,
            "adv_weight_informative_mean": on_useful,
            "bin_progress": json_list(self.progress.group_progress()),
            "bin_edges": self.classifier.live_edges().tolist(),
        }
        self.step += 1
        self._pending.pop(0)
        record["adversary_ms"] = self._pending_ms.pop(0) + (time.perf_counter() - t0) * 1e3
        record["schedule_lag"] = int(sch.lag)  # 0: grouped with all history; 1: one step stale
        self._last = record
        return record

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """State of everything; a restored adversary hands out exactly the same future schedules.

        The adversary's own fields (step, data cursor, epoch, RNG state, pending schedule) are
        plain JSON values; the controllers' arrays are numpy (pass the whole dict through
        `gdro_ray.algorithms.state.to_jsonable` for JSON). The epoch permutation is not
        stored: it is a function of (seed, epoch).
        """
        return {
            "version": 1,
            "config": {"num_prompts": self.num_prompts, "algorithm": self.algorithm,
                       "batch_size": self.batch_size, "budget_mean": self.budget_mean,
                       "signal": self.signal, "mode": self.mode, "allow_repeats": self.allow_repeats,
                       "seed": self.seed, "rollout_proxy": self.rollout_proxy, "max_repeats": self.max_repeats,
                       "share_normalization": self.share_normalization, "resample_base": self.resample_base},
            "step": self.step, "epoch": self.epoch, "cursor": self.cursor,
            "rng": self._rng.bit_generator.state,
            "pending": [p.to_dict() for p in self._pending],
            "pending_ms": list(self._pending_ms),
            "classifier": self.classifier.state_dict(),
            "prompt_gdro": self.prompt_gdro.state_dict(),
            "rollout_gdro": self.rollout_gdro.state_dict(),
            "progress": self.progress.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        cfg = state.get("config", {})
        for key in ("num_prompts", "algorithm", "batch_size", "budget_mean"):
            if key in cfg and cfg[key] != getattr(self, key):
                raise ValueError(f"load_state_dict: {key} is {getattr(self, key)!r} here, "
                                 f"{cfg[key]!r} in the saved state")
        self.classifier.load_state_dict(state["classifier"])
        self.prompt_gdro.load_state_dict(state["prompt_gdro"])
        self.rollout_gdro.load_state_dict(state["rollout_gdro"])
        # a state saved before progress was tracked starts it afresh: the first visit after the
        # resume is each prompt's first measurement point
        self.progress = ProgressTracker(self.num_prompts, self.num_groups, beta=self.prompt_gdro.beta)
        if "progress" in state:
            self.progress.load_state_dict(state["progress"])
        self.step, self.epoch, self.cursor = int(state["step"]), int(state["epoch"]), int(state["cursor"])
        self._perm = None
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = state["rng"]
        pending = state.get("pending") or []
        pending = [pending] if isinstance(pending, dict) else pending
        self._pending = [StepSchedule.from_dict(p) for p in pending]
        ms = state.get("pending_ms", [])
        self._pending_ms = [float(x) for x in (ms if isinstance(ms, list) else [ms] * len(pending))]

    def state_bytes_per_prompt(self) -> float:
        """Memory per prompt: the classifier's and progress tracker's arrays plus the cached epoch permutation."""
        perm_bytes = 4.0 if (not self.resample) else 0.0
        return float(self.classifier.state_bytes_per_prompt()) + self.progress.state_bytes_per_prompt() + perm_bytes

    def metrics(self) -> dict:
        """Current gauges for Prometheus: the last step record plus controller metrics."""
        return {
            "step": self.step, "epoch": self.epoch, "algorithm": self.algorithm,
            "group_counts": np.asarray(self.classifier.group_counts(), dtype=int).tolist(),
            "classifier": self.classifier.metrics(),
            "prompt_gdro": self.prompt_gdro.metrics(),
            "rollout_gdro": self.rollout_gdro.metrics(),
            "progress": self.progress.metrics(),
            "last_step": dict(self._last),
        }
