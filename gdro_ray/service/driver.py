"""The driver loop (`gdro-ray train`, `cli/train.py`) of GRPO with Group-DRO adversaries on Ray.

One step (synchronous mode), as `Trainer.run_step` reads top to bottom:
    1. schedule  the adversary actor picks B prompts (uniform epochs, or resampled by the
                 Prompt-GDRO distribution q over difficulty bins) and n_i rollouts per prompt
                 (Rollout-GDRO: Σ n_i = B·n̄ exactly, more rollouts where reward variance is high)
    2. sample    shards of prompts go to the sampler pool (vLLM); each sampler returns its
                 prompts' rewards and lengths, and their token arrays as separate objects
                 (`grpo.filter_all_equal`: extra rounds until B groups are informative)
    3. learn     GRPO advantages per variable-size group, times the Prompt-GDRO weights
                 (reweight mode), then `grpo.mini_batches` FSDP2 updates (clip-higher, k3 KL,
                 `grpo.loss_agg`)
    4. observe   rewards and per-prompt surrogate losses go back to the adversary, which
                 updates pass@k history, bins, scores S_b, variances v_b and the price μ
    5. publish   the new weights go to every sampler (`weight_transport.py`): once through the
                 object store, or by a collective broadcast from learner rank 0 on GPUs
In one-step off-policy mode (`cluster.off_policy`) step t+1 samples while step t learns.
Checkpoints are written every `checkpoint.every` steps; `--resume RUN_DIR` continues from the
last complete one. The parts the loop works with are made by `build.build_trainer`
(`cli/train.py` builds and runs them).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from gdro_ray.config import Config, to_dict
from gdro_ray.errors import UserError
from gdro_ray.metrics.samples import SampleLog, group_label, pick_samples, sample_record
from gdro_ray.protocol import DriverReport, LearnStats, SampleRecord, ShardResult, StepRecord, StepSchedule
from gdro_ray.service.run_log import RunLog
from gdro_ray.service.run_parts import RunParts
from gdro_ray.service.shards import build_shards
from gdro_ray.service.step_batch import (
    DynamicSampling,
    RewardChecks,
    StalenessGuard,
    assemble_batch,
    learn_fields,
    trained_slots,
)
from gdro_ray.service.user_extensions import success_indicators
from gdro_ray.utils.phase_timer import PhaseTimer


class Trainer:
    """The step loop of one run, over the parts it is given (`RunParts`)."""

    def __init__(self, cfg: Config, run_dir: str | Path, parts: RunParts, *, step: int = 0, version: int = 0,
                 resume: bool = False):
        self.cfg, self.run_dir, self.resume = cfg, Path(run_dir).absolute(), resume
        self.parts = parts
        self.adversary, self.pool, self.learner, self.weights = parts.adversary, parts.pool, parts.learner, parts.weights
        self.train = parts.train
        self.step, self.version = step, version  # steps done; the learner's weights version
        self.log = RunLog(self.run_dir)  # metrics.jsonl: step records here, eval records from ValidationLoop
        self.samples = SampleLog(self.run_dir)  # samples.jsonl: what the policy writes, every metrics.samples_every
        self._tokenizer = None
        self.refills = DynamicSampling(cfg, self.train, self.adversary, self.pool)
        self.staleness = StalenessGuard(cfg, self.sample)
        self.reward_checks = RewardChecks(cfg, step, len(self.train))  # counted from the step this process starts at
        self.inflight = None  # off-policy: (schedule, future of its sampling) launched ahead
        self.reward_timeouts = 0  # run total, for the gauge
        self._executor: ThreadPoolExecutor | None = None
        self._last_publish = None  # what the last weight publish reported (goes into the step record)

    # ---- the stages ----------------------------------------------------------------------------
    def sample(self, sched: StepSchedule) -> tuple[list[ShardResult], float]:
        """Every prompt of `sched` sampled by the pool; returns the shard results and the seconds."""
        t0 = time.perf_counter()
        out = self.pool.run(build_shards(self.cfg, self.train, sched))
        return out, time.perf_counter() - t0

    def publish_weights(self) -> None:
        """Give the samplers the learner's current version (nothing to do when they hold it)."""
        if self.version != self.pool.version:
            self._last_publish = self.weights.publish(self.version)

    def sync_weights(self) -> None:
        """Make the samplers hold the learner's current weights, between steps (an evaluation's
        and its checkpoint's weights are then the same). Off-policy: the sampling launched ahead
        on the previous weights is let finish first; its result stays for the next step."""
        if self.inflight is not None:
            self.inflight[1].result()
        self.publish_weights()

    def save_checkpoint(self) -> None:
        import ray

        from gdro_ray.service.checkpoint import write_checkpoint

        adv_state = ray.get(self.adversary.state_dict.remote())
        write_checkpoint(self.run_dir, self.step, self.learner.save_checkpoint, adv_state,
                         {"step": self.step, "weights_version": self.version}, keep=self.cfg.checkpoint.keep)

    def apply_scale_request(self) -> None:
        """Apply a `gdro-ray scale` request; only called while no sampling is in flight."""
        import ray

        want = ray.get(self.adversary.get_desired_samplers.remote())
        if want != self.pool.size():
            print(f"scaling samplers {self.pool.size()} → {want}", flush=True)
            self.pool.resize(want)

    # ---- one step ------------------------------------------------------------------------------
    def run_step(self) -> StepRecord:
        """One step (synchronous, or one-step off-policy with `cluster.off_policy`); the step
        counter advances and the finished record is returned."""
        if self.cfg.cluster.off_policy:
            return self._run_step_off_policy()
        import ray

        phases, started = PhaseTimer(), time.perf_counter()
        self.apply_scale_request()
        with phases("schedule"):
            sched = ray.get(self.adversary.schedule.remote())
        with phases("sample"):
            shard_out, _ = self.sample(sched)
        record = self._learn_and_observe(sched, shard_out, phases, stale_resampled=False)
        with phases("publish"):
            self.publish_weights()
        return self._finish(record, phases, started)

    def _run_step_off_policy(self) -> StepRecord:
        """Step t+1 samples (with the weights before this update) while step t learns.

        Samplers never switch weights inside a step: weights are published only between the
        end of one sampling and the launch of the next, so each step's rollouts are one version.
        """
        import ray

        phases, started = PhaseTimer(), time.perf_counter()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gdro-sample")
        if self.inflight is None:  # the first step of the run (or after resume)
            self.apply_scale_request()
            sched = ray.get(self.adversary.schedule.remote())
            self.inflight = (sched, self._executor.submit(self.sample, sched))
        sched, fut = self.inflight
        shard_out, seconds = fut.result()
        phases.add("sample", seconds)
        phases.add("schedule", 0.0)
        with phases("publish"):
            self.publish_weights()
        shard_out, stale = self.staleness.check(sched, shard_out, self.version, phases)
        self.inflight = None
        self.apply_scale_request()
        if self.step + 1 < self.cfg.steps:
            with phases("schedule"):
                nxt = ray.get(self.adversary.schedule_ahead.remote())
            self.inflight = (nxt, self._executor.submit(self.sample, nxt))
        record = self._learn_and_observe(sched, shard_out, phases, stale_resampled=stale)
        return self._finish(record, phases, started)

    def _learn_and_observe(self, sched: StepSchedule, shard_out: list[ShardResult], phases: PhaseTimer,
                           stale_resampled: bool) -> StepRecord:
        """GRPO update on the step's rollouts, then the adversary's observe (steps 3–4)."""
        import ray

        cfg = self.cfg
        refill = {}
        if cfg.grpo.filter_all_equal:  # DAPO dynamic sampling: extra rounds until B informative groups
            sched, shard_out, refill = self.refills.fill(sched, shard_out, phases)
        phases.add("generate", max((o.generate_s for o in shard_out), default=0.0))
        phases.add("reward", max((o.reward_s for o in shard_out), default=0.0))
        by_slot = {r.slot: r for o in shard_out for r in o.results}
        B = sched.batch_size
        if sorted(by_slot) != list(range(B)):
            raise RuntimeError(f"step {sched.step}: a prompt was lost or duplicated in sampling")
        rewards = [np.asarray(by_slot[i].rewards, dtype=float) for i in range(B)]
        correct = success_indicators(cfg, rewards)  # in [0,1] for the adversary; advantages use `rewards`

        with phases("learn"):
            from gdro_ray.algorithms.grpo import group_advantages

            adv = group_advantages(rewards, eps=cfg.grpo.eps, adv_clip=cfg.grpo.adv_clip)
            slots = trained_slots(rewards, cfg.grpo.filter_all_equal, cfg.batch_size)
            # all calls failed, or nothing informative: warn or stop
            self.reward_checks.check(self.step + 1, shard_out, rewards, refill, slots)
            # off-policy rollouts are trained against the policy that drew them: the samplers' log-probs
            batch = assemble_batch(sched, by_slot, adv, slots, sampler_logprobs=cfg.cluster.off_policy,
                                   informative_cap=cfg.prompt_gdro.omega_max if cfg.prompt_gdro.informative_norm
                                   else None)
            learn = self.learner.train_step(batch) if len(batch) else LearnStats()
            self.version += 1

        with phases("observe"):
            adversary_record = ray.get(self.adversary.observe.remote(
                sched.step, [c.tolist() for c in correct], learn.surrogate(B), self.version))

        samples = self._samples(sched, by_slot, rewards, adv, len(adversary_record["bin_weights"]))
        lengths = [n for i in range(B) for n in by_slot[i].response_lens]
        sampled_with = min((o.weights_version for o in shard_out), default=self.version - 1)
        digest = json.dumps([sched.prompt_ids.tolist(), sched.rollouts.tolist()]).encode()
        return StepRecord(
            adversary=adversary_record, schedule_digest=hashlib.sha1(digest).hexdigest()[:16],
            weights_version=self.version, samplers=self.pool.live(), tokens=sum(o.tokens for o in shard_out),
            staleness=(self.version - 1) - sampled_with,
            pass_rate=float(np.mean([float(np.mean(c > 0.5)) for c in correct])),
            rollouts_sampled=len(lengths), rollouts_trained=len(batch), prompts_trained=len(slots),
            response_len_mean=float(np.mean(lengths)) if lengths else 0.0, response_len_max=max(lengths, default=0),
            truncation_rate=sum(by_slot[i].truncated for i in range(B)) / max(len(lengths), 1),
            learn=learn_fields(learn), refill=refill, stale_resampled=stale_resampled,
            shards_requeued=self.pool.stats.requeued, sampler_restarts=self.pool.stats.restarts,
            reward_timeouts=sum(o.reward_timeouts for o in shard_out),
            reward_errors=sum(o.reward_errors for o in shard_out),
            custom_reward_mean=float(np.mean(np.concatenate(rewards))) if cfg.reward.function else None,
            samples=samples)

    def _samples(self, sched: StepSchedule, by_slot: dict, rewards: list, adv: list,
                 num_groups: int) -> list[SampleRecord]:
        """Every `metrics.samples_every` steps: a few prompts per bin with their decoded responses
        (`gdro_ray/metrics/samples.py`), written to samples.jsonl and shown by `gdro-ray status`."""
        m = self.cfg.metrics
        if not m.samples_every or (self.step + 1) % m.samples_every or not self.parts.model_path:
            return []
        from gdro_ray.transfer.rollout_arrays import responses_of

        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.parts.model_path)
        records = []
        for slot, picked in pick_samples(sched.group_ids, rewards, m.samples_per_bin, m.samples_responses):
            res, pid = by_slot[slot], int(sched.prompt_ids[slot])
            tokens = responses_of(res)  # this prompt's arrays only
            texts = self._tokenizer.batch_decode([tokens[j].tolist() for j in picked], skip_special_tokens=True)
            records.append(sample_record(
                self.step, group_label(int(sched.group_ids[slot]), num_groups), pid, self.train[pid], texts,
                [rewards[slot][j] for j in picked], [float(adv[slot][j]) for j in picked],
                [res.response_lens[j] for j in picked], self.cfg.sampler.max_new_tokens))
        self.samples.extend([r.to_json() for r in records])
        self.adversary.report_samples.remote(records)
        return records

    def _finish(self, record: StepRecord, phases: PhaseTimer, started: float) -> StepRecord:
        """The step's timing and weight publish into its record; the gauges; the step counter."""
        record.weight_sync, self._last_publish = self._last_publish, None
        record.stage_time_s = phases.seconds()
        record.step_time_s = time.perf_counter() - started
        self.reward_timeouts += record.reward_timeouts
        self.adversary.report_driver.remote(DriverReport(
            step_time_s=record.step_time_s, tokens_per_s=record.tokens_per_s,
            reward_mean=(record.custom_reward_mean if record.custom_reward_mean is not None
                         else record.adversary.get("reward_mean")), samplers=self.pool.live(),
            stages=record.stage_time_s, staleness=record.staleness, requeued=self.pool.stats.requeued,
            restarts=self.pool.stats.restarts, reward_timeouts=self.reward_timeouts,
            learner_phases=record.learn.get("learner_phase_s"), response_len_mean=record.response_len_mean,
            response_len_max=record.response_len_max, truncation_rate=record.truncation_rate,
            entropy=record.learn.get("entropy")))
        self.step += 1
        return record

    # ---- the loop ------------------------------------------------------------------------------
    def run(self) -> dict:
        """Base evaluation, the steps (each logged, checkpointed and evaluated on schedule), the
        final checkpoint and evaluation; the parts are shut down at the end, also on failure."""
        from gdro_ray.metrics.progress import Progress
        from gdro_ray.service.user_extensions import open_run_loggers
        from gdro_ray.service.validation import ValidationLoop

        cfg = self.cfg
        with stopped_job_as_one_line(self):
            loggers = open_run_loggers(cfg, self.run_dir, to_dict(cfg))  # tensorboard, wandb, mlflow, or None
            evals = ValidationLoop(cfg, self.run_dir, pool=self.pool, eval_set=self.parts.eval_set, log=self.log,
                                   sync_weights=self.sync_weights, checkpoint=self.save_checkpoint,
                                   start_step=self.step, resume=self.resume, adversary=self.adversary,
                                   base_reuse=self.parts.base_reuse, base_signature=self.parts.base_signature,
                                   tensorboard=loggers)
            base = evals.base(self.step)
            evals.catch_up(self.step)  # resumed: the checkpoint step's evaluation, if a kill interrupted it
            progress = Progress(cfg.steps, start=self.step)
            while self.step < cfg.steps:
                step = self.run_step()
                record = step.to_json()
                self.log.append(record)
                if loggers is not None:
                    loggers.log_step(record)
                    if step.samples:
                        loggers.log_samples([s.to_json() for s in step.samples], self.step)
                progress.update(self.step, record)
                if cfg.checkpoint.every and self.step % cfg.checkpoint.every == 0 and self.step < cfg.steps:
                    self.save_checkpoint()
                evals.after_step(self.step)
            self.publish_weights()
            self.save_checkpoint()
            final = evals.final(self.step)
            if loggers is not None:
                loggers.close()
            progress.summary(base, final, tier_names(self.parts.eval_set))
            return {"base": base, "final": final, "run_dir": str(self.run_dir)}

    def shutdown(self) -> None:
        self.log.close()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self.parts.shutdown()


def tier_names(eval_set: list[dict]) -> dict[str, str] | None:
    """The toy task's tier names (add3 … sub_neg) for its tier ids; other sets name their own tiers."""
    from gdro_ray.data import toy_task

    if eval_set and all(e.get("source") == toy_task.SOURCE for e in eval_set):
        return {str(i): name for i, name in enumerate(toy_task.TIER_NAMES)}
    return None


class stopped_job_as_one_line:
    """Around a run (or its start): a sampler's `reward.on_error=stop`, a dead learner rank or
    adversary, or a pool out of samplers becomes one `UserError` line; the parts are shut down
    on the way out, whatever happened."""

    def __init__(self, trainer: Trainer | None = None, run_dir: Path | None = None):
        self.trainer, self.run_dir = trainer, run_dir

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        import ray

        from gdro_ray.service.actor_errors import root_cause
        from gdro_ray.service.sampler_pool import SamplerPoolError
        from gdro_ray.service.user_extensions import reward_error_line

        if self.trainer is not None:
            self.trainer.shutdown()
        step = (self.trainer.step if self.trainer is not None else 0) + 1
        run_dir = self.trainer.run_dir if self.trainer is not None else self.run_dir
        if isinstance(exc, ray.exceptions.RayTaskError) and reward_error_line(exc) is not None:
            # The other samplers' calls of this step fail the same way (or die with their actors at
            # shutdown); Ray would print each result nobody fetched as a remote traceback. The user's
            # error is the line below, so those are silenced for the rest of this process.
            os.environ["RAY_IGNORE_UNHANDLED_ERRORS"] = "1"
            raise UserError(f"the job stopped at step {step}: {reward_error_line(exc)}") from None
        if isinstance(exc, (ray.exceptions.RayActorError, SamplerPoolError)):
            # A learner rank or the adversary died (samplers are replaced inside the pool).
            how = (f"continue with `gdro-ray train --resume {run_dir}`"
                   if run_dir is not None and (run_dir / "checkpoints" / "latest").is_file()
                   else "no checkpoint yet: start it again")
            raise UserError(f"the job stopped at step {step}: {root_cause(exc)}; {how}") from None
        return False
