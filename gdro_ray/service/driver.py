"""The driver loop (`gdro-ray train`, `cli/train.py`) of GRPO with Group-DRO adversaries on Ray.

One step (synchronous mode):
    1. schedule  the adversary actor picks B prompts (uniform epochs, or resampled by the
                 Prompt-GDRO distribution q over difficulty bins) and n_i rollouts per prompt
                 (Rollout-GDRO: Σ n_i = B·n̄ exactly, more rollouts where reward variance is high)
    2. sample    shards of prompts go to the sampler pool (vLLM); each sampler returns its
                 prompts' rollouts with token ids, log-probs and verifier rewards
    3. learn     GRPO advantages per variable-size group, times the Prompt-GDRO weights
                 (reweight mode), then `grpo.mini_batches` FSDP2 updates (clip-higher, k3 KL,
                 `grpo.loss_agg`); `grpo.filter_all_equal` first refills the batch (step_batch.py)
    4. observe   rewards and per-prompt surrogate losses go back to the adversary, which
                 updates pass@k history, bins, scores S_b, variances v_b and the price μ
    5. publish   the new weights go to every sampler (`weight_transport.py`): once through the
                 object store, or by a collective broadcast from learner rank 0 on GPUs
Checkpoints are written every `checkpoint.every` steps; `--resume RUN_DIR` continues from the
last complete one. With no arguments the embedded default (`toy` preset) runs end to end.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from gdro_ray.config import Config, dump_config, to_dict
from gdro_ray.errors import UserError
from gdro_ray.protocol import ShardResult, StepSchedule
from gdro_ray.service.ray_start import init_ray
from gdro_ray.service.run_log import RunLog
from gdro_ray.service.user_extensions import success_indicators
from gdro_ray.utils.io import atomic_write_text

log = logging.getLogger("gdro_ray.driver")


class StepOutcome(NamedTuple):
    """What one step hands to the loop, before `_finish_record` adds the step's timing to the record."""

    record: dict  # the step record so far (adversary, learner and sampling fields)
    stage_s: dict[str, float]  # seconds per stage: schedule, sample, learn, observe, publish, ...
    started: float  # perf_counter() at the step's start


class Trainer:
    """Owns the actors of one run and the step loop (the driver's side of the job)."""

    def __init__(self, cfg: Config, run_dir: Path, resume: bool = False):
        self.cfg, self.run_dir, self.resume = cfg, Path(run_dir).absolute(), resume  # actors work elsewhere
        self.step = 0
        self.version = 0
        self.reward_timeouts = 0
        self.inflight = None  # off-policy: (schedule, future of its sampling) launched ahead
        self.log = RunLog(self.run_dir)  # metrics.jsonl: step records here, eval records from ValidationLoop
        self._stale_resampled = False  # off-policy: this step's rollouts were refused as too stale
        self.weights = None  # the weight transport, chosen in setup()
        self.last_publish = None  # what the last weight publish reported (goes into the step record)
        self.reward_checks = None  # the failed-reward and empty-refill checks, made at the first step

    # ---- set-up ------------------------------------------------------------------------------
    def setup(self) -> None:
        import ray

        from gdro_ray.data.eval_sets import load_eval_set, load_train_set, spread_subset
        from gdro_ray.models.registry import resolve_model_path
        from gdro_ray.service.adversary_actor import ACTOR_NAME, AdversaryService
        from gdro_ray.service.learner_group import LearnerGroup
        from gdro_ray.service.sampler_pool import SamplerPool

        cfg = self.cfg
        init_ray(cfg)  # first: a cluster too small for the config fails before any work
        self.model_path = str(resolve_model_path(cfg.model.path))
        from gdro_ray.service.gpu_plan import sampler_gpu_kwargs

        self.sampler_kw = sampler_gpu_kwargs(cfg, self.model_path)  # checks the lengths against the model's context
        from gdro_ray.service import user_extensions as ext

        reward_kw = ext.reward_sampler_kwargs(cfg)  # a custom reward that does not import stops here
        ext.check_logger_packages(cfg)  # so does a logger whose package is absent
        train_cols, eval_cols = ext.data_columns(cfg)
        from gdro_ray.data import toy_task  # the toy sets honour their size keys (the loaders build the defaults)

        self.train = (toy_task.make_train_pool(cfg.data.toy_pool_size) if cfg.data.train == "toy"
                      else load_train_set(cfg.data.train, train_cols))
        if cfg.data.max_prompts:
            self.train = self.train[: cfg.data.max_prompts]
        self.eval_set = (toy_task.make_eval_split(cfg.data.toy_eval_per_tier) if cfg.data.eval == "toy"
                         else load_eval_set(cfg.data.eval, eval_cols))
        self.eval_set = spread_subset(self.eval_set, cfg.data.max_eval_prompts)
        from gdro_ray.service.validation import check_keep_best_on

        check_keep_best_on(cfg.checkpoint.keep_best, cfg.eval.k, self.eval_set)  # a tier the set lacks
        from gdro_ray.service.prompt_lengths import check_prompt_lengths  # before any actor starts

        check_prompt_lengths(self.model_path, {"data.train": self.train, "data.eval": self.eval_set},
                             self.sampler_kw["max_model_len"], cfg.sampler.max_new_tokens)
        from gdro_ray.service.validation import base_signature, load_base_from

        self.base_signature = base_signature(cfg, self.model_path, self.eval_set)
        # a resumed run reads its own eval_base.json (validation.py), so its source may be gone by then
        reuse = cfg.eval.base_from and not (self.resume and (self.run_dir / "eval_base.json").is_file())
        self.base_reuse = load_base_from(cfg.eval.base_from, self.base_signature) if reuse else None
        self.adversary = ray.remote(AdversaryService).options(
            name=ACTOR_NAME, namespace="gdro_ray", num_cpus=0, lifetime=None, get_if_exists=False,
            resources={cfg.cluster.adversary_resource: 1.0} if cfg.cluster.adversary_resource else {},
        ).remote(to_dict(cfg), len(self.train), cfg.metrics.host, cfg.metrics.port, cfg.metrics.enabled,
                 str(self.run_dir.resolve()))
        try:
            addr = ray.get(self.adversary.metrics_address.remote())
        except ray.exceptions.RayActorError as e:  # died in __init__: say why in one line
            from gdro_ray.service.actor_errors import adversary_start_error

            raise UserError(adversary_start_error(e, cfg.metrics.host, cfg.metrics.port)) from None
        if addr:
            print(f"adversary metrics: {addr}", flush=True)
        # Only now, with every start check passed and the metrics port taken, is the folder written:
        # a refused start leaves it as it was (--overwrite clears the earlier run here, not before).
        if getattr(self, "clear_first", False):
            from gdro_ray.service.run_dir import clear_run_dir

            clear_run_dir(self.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if not self.resume:  # a resumed run rewrites it only once its checkpoint is restored (_restore)
            atomic_write_text(self.run_dir / "config.yaml", dump_config(cfg))
        g = cfg.grpo
        L = cfg.learner
        self.learner = LearnerGroup(
            L.world_size, self.model_path, lr=L.lr, weight_decay=L.weight_decay, grad_clip=L.grad_clip,
            micro_batch=L.micro_batch, backend=L.backend, dtype=cfg.model.dtype, seed=cfg.seed,
            grpo={"clip_low": g.clip_low, "clip_high": g.clip_high, "kl_coef": g.kl_coef, "mini_batches": g.mini_batches,
                  "epochs": g.epochs, "loss_agg": g.loss_agg,
                  "temperature": cfg.sampler.temperature if cfg.sampler.temperature > 0 else 1.0},
            num_cpus=L.num_cpus, num_gpus=L.num_gpus, ray_resource=L.ray_resource,
            cpu_affinity=cfg.cluster.learner_cpus or None, reshard_after_forward=L.reshard_after_forward)
        pin = {"cpu_affinity": cfg.cluster.sampler_cpus} if cfg.cluster.sampler_cpus else {}  # cluster.sampler_cpus
        learner_uuids = [i.get("cuda_uuid") for i in self.learner.infos() if i.get("cuda_uuid")]
        service_kw = dict(self.sampler_kw, **reward_kw, **pin, gpu=dict(self.sampler_kw["gpu"], learner_uuids=learner_uuids),
                          num_threads=max(1, int(cfg.sampler.num_cpus)))  # as many torch threads as CPUs, as the learner
        self.pool = SamplerPool(self.model_path, cfg.sampler.engine, cfg.model.dtype, cfg.seed, g.reward_scale,
                                cfg.sampler.reward_timeout_s, cfg.sampler.num_cpus, cfg.sampler.num_gpus,
                                cfg.sampler.max_samplers, cfg.sampler.max_restarts, ray_resource=cfg.sampler.ray_resource,
                                service_kwargs=service_kw)
        adversary = self.adversary
        self.pool.on_queue = lambda n: adversary.report_queue.remote(n)  # fire-and-forget gauge update
        if self.resume:
            self._restore()
        self.pool.resize(cfg.sampler.num_samplers)
        self.pool.wait_ready(cfg.sampler.num_samplers)
        from gdro_ray.service.weight_transport import make_weight_transport

        self.weights = make_weight_transport(cfg.weight_sync, self.learner, self.pool, cfg.learner.num_gpus,
                                             cfg.sampler.num_gpus)
        print(f"weight sync: {self.weights.description}", flush=True)

    def _restore(self) -> None:
        import ray

        from gdro_ray.service.checkpoint import latest_checkpoint, read_json

        ckpt = getattr(self, "resume_from", None) or latest_checkpoint(self.run_dir)  # verified by cli.train
        self.learner.load_checkpoint(str(ckpt / "learner"))
        ray.get(self.adversary.load_state_dict.remote(read_json(ckpt / "adversary.json")))
        drv = read_json(ckpt / "driver.json")
        self.step, self.version = int(drv["step"]), int(drv["weights_version"])
        self.log.trim(self.step)  # steps after the checkpoint are redone
        self.pool.blob_ref = ray.put(self.learner.state_dict_bytes())
        self.pool.version = self.pool.blob_version = self.version
        atomic_write_text(self.run_dir / "config.yaml", dump_config(self.cfg))  # with its overrides, now they took
        print(f"resumed {self.run_dir} from {ckpt.name} (step {self.step})", flush=True)

    # ---- one step ------------------------------------------------------------------------------
    def _sample(self, sched: StepSchedule) -> tuple[list[ShardResult], float]:
        from gdro_ray.service.shards import build_shards

        t0 = time.perf_counter()
        out = self.pool.run(build_shards(self.cfg, self.train, sched))
        return out, time.perf_counter() - t0

    def _learn_observe(self, sched: StepSchedule, shard_out: list[ShardResult], t: dict) -> dict:
        """GRPO update on the step's rollouts, then the adversary's observe (steps 3–4)."""
        import numpy as np
        import ray

        from gdro_ray.algorithms.grpo import group_advantages
        from gdro_ray.service.step_batch import RewardChecks, assemble_batch, learn_fields, sample_refills, trained_slots

        cfg = self.cfg
        refill = {}
        if cfg.grpo.filter_all_equal:  # DAPO dynamic sampling: extra rounds until B informative groups
            sched, shard_out, refill = sample_refills(sched, shard_out, t, cfg=cfg, train=self.train,
                                                      adversary=self.adversary, sampler_pool=self.pool)
        t["generate"] = max((o.generate_s for o in shard_out), default=0.0)
        t["reward"] = max((o.reward_s for o in shard_out), default=0.0)
        by_slot = {r.slot: r for o in shard_out for r in o.results}
        B = sched.batch_size
        if sorted(by_slot) != list(range(B)):
            raise RuntimeError(f"step {sched.step}: a prompt was lost or duplicated in sampling")
        rewards = [np.asarray(by_slot[i].rewards, dtype=float) for i in range(B)]
        correct = success_indicators(cfg, rewards)  # in [0,1] for the adversary; advantages use `rewards`

        t2 = time.perf_counter()
        adv = group_advantages(rewards, eps=cfg.grpo.eps, adv_clip=cfg.grpo.adv_clip)
        slots = trained_slots(rewards, cfg.grpo.filter_all_equal, cfg.batch_size)
        if self.reward_checks is None:  # counted from the step this process starts at (after a resume)
            self.reward_checks = RewardChecks(cfg, self.step, len(self.train))
        self.reward_checks.check(self.step + 1, shard_out, rewards, refill, slots)  # all calls failed, nothing informative: warn or stop
        # off-policy rollouts are trained against the policy that drew them: the samplers' log-probs
        batch = assemble_batch(sched, by_slot, adv, slots, sampler_logprobs=cfg.cluster.off_policy,
                               informative_cap=cfg.prompt_gdro.omega_max if cfg.prompt_gdro.informative_norm else None)
        learn = self.learner.train_step(batch) if len(batch) else {}
        self.version += 1
        t["learn"] = time.perf_counter() - t2

        t3 = time.perf_counter()
        sur = learn.get("per_prompt_surrogate", {})
        surrogate = [float(sur.get(i, 0.0)) for i in range(B)]  # keyed by slot (int); a prompt no rank trained: 0
        record = ray.get(self.adversary.observe.remote(sched.step, [c.tolist() for c in correct], surrogate,
                                                       self.version))
        t["observe"] = time.perf_counter() - t3

        sampled_with = min((o.weights_version for o in shard_out), default=self.version - 1)
        tokens = sum(o.tokens for o in shard_out)
        digest = hashlib.sha1(json.dumps([sched.prompt_ids.tolist(), sched.rollouts.tolist()]).encode()).hexdigest()[:16]
        record.update({
            "schedule_digest": digest,  # audit trail: equal digests = identical prompts and rollout counts
            "weights_version": self.version, "samplers": self.pool.live(), "tokens": tokens,
            # versions the learner had moved past when it trained on these rollouts
            "staleness": (self.version - 1) - sampled_with,
            "pass_rate": float(np.mean([float(np.mean(c > 0.5)) for c in correct])),
            "loss": learn.get("loss"), "kl": learn.get("kl"), "clip_frac": learn.get("clip_frac"),
            "grad_norm": learn.get("grad_norm"), **learn_fields(learn), **refill,
            "rollouts_sampled": int(sum(len(r) for r in rewards)), "rollouts_trained": len(batch),
            "prompts_trained": len(slots), "stale_resampled": self._stale_resampled,
            "shards_requeued": self.pool.stats.requeued, "sampler_restarts": self.pool.stats.restarts,
            "reward_timeouts": sum(o.reward_timeouts for o in shard_out),
            "reward_errors": sum(o.reward_errors for o in shard_out),
            # a custom reward's own mean (the adversary's reward_mean is then the success rate)
            **({"reward_mean": float(np.mean(np.concatenate(rewards)))} if cfg.reward.function else {}),
        })
        return record

    def sync_weights(self) -> None:
        """Make the samplers hold the learner's current weights, between steps (an evaluation's
        and its checkpoint's weights are then the same). Off-policy: the sampling launched ahead
        on the previous weights is let finish first; its result stays for the next step."""
        if self.inflight is not None:
            self.inflight[1].result()
        self._publish({})

    def _publish(self, t: dict) -> None:
        t4 = time.perf_counter()
        if self.version != self.pool.version:
            if self.weights is None:  # actors wired by hand, without setup(): today's object-store path
                from gdro_ray.service.weight_transport import ObjectStoreTransport

                self.weights = ObjectStoreTransport(self.learner, self.pool)
            self.last_publish = self.weights.publish(self.version)
        t["publish"] = time.perf_counter() - t4

    def _finish_record(self, record: dict, t: dict, t0: float) -> dict:
        step_time = time.perf_counter() - t0
        record["weight_sync"], self.last_publish = self.last_publish, None
        record.update({"stage_time_s": {k: round(v, 4) for k, v in t.items()}, "step_time_s": round(step_time, 4),
                       "tokens_per_s": record["tokens"] / max(step_time, 1e-9)})
        self.adversary.report_driver.remote({
            "step_time_s": step_time, "tokens_per_s": record["tokens_per_s"], "reward_mean": record["reward_mean"],
            "samplers": self.pool.live(), "stages": t, "staleness": record["staleness"],
            "requeued": self.pool.stats.requeued, "restarts": self.pool.stats.restarts,
            "reward_timeouts": self.reward_timeouts, "learner_phases": record.get("learner_phase_s")})
        return record

    def _maybe_resize(self) -> None:
        """Apply a `gdro-ray scale` request; only called while no sampling is in flight."""
        import ray

        want = ray.get(self.adversary.get_desired_samplers.remote())
        if want != self.pool.size():
            print(f"scaling samplers {self.pool.size()} → {want}", flush=True)
            self.pool.resize(want)

    def run_step(self) -> StepOutcome:
        """One synchronous step: schedule → sample → learn → observe → publish."""
        import ray

        t, t0 = {}, time.perf_counter()
        self._maybe_resize()
        sched = ray.get(self.adversary.schedule.remote())
        t["schedule"] = time.perf_counter() - t0
        shard_out, t["sample"] = self._sample(sched)
        record = self._learn_observe(sched, shard_out, t)
        self._publish(t)
        return StepOutcome(record, t, t0)

    def run_step_off_policy(self, executor) -> StepOutcome:
        """One-step off-policy: step t+1 samples (with the weights before this update) while step t learns.

        Samplers never switch weights inside a step: weights are published only between the
        end of one sampling and the launch of the next, so each step's rollouts are one version.
        """
        import ray

        t, t0 = {}, time.perf_counter()
        if self.inflight is None:  # the first step of the run (or after resume)
            self._maybe_resize()
            sched = ray.get(self.adversary.schedule.remote())
            self.inflight = (sched, executor.submit(self._sample, sched))
        sched, fut = self.inflight
        shard_out, t["sample"] = fut.result()
        t["schedule"] = 0.0
        self._publish(t)
        from gdro_ray.service.step_batch import refuse_stale  # resample rollouts past cluster.max_staleness

        shard_out, self._stale_resampled = refuse_stale(sched, shard_out, t, version=self.version,
                                                        max_staleness=self.cfg.cluster.max_staleness, sample=self._sample)
        self.inflight = None
        self._maybe_resize()
        if self.step + 1 < self.cfg.steps:
            ts = time.perf_counter()
            nxt = ray.get(self.adversary.schedule_ahead.remote())
            t["schedule"] = time.perf_counter() - ts
            self.inflight = (nxt, executor.submit(self._sample, nxt))
        record = self._learn_observe(sched, shard_out, t)
        return StepOutcome(record, t, t0)

    # ---- the loop ------------------------------------------------------------------------------
    def _checkpoint(self) -> None:
        import ray

        from gdro_ray.service.checkpoint import write_checkpoint

        adv_state = ray.get(self.adversary.state_dict.remote())
        write_checkpoint(self.run_dir, self.step, self.learner.save_checkpoint, adv_state,
                         {"step": self.step, "weights_version": self.version}, keep=self.cfg.checkpoint.keep)

    def run(self) -> dict:
        import ray

        from gdro_ray.metrics.progress import Progress
        from gdro_ray.service.sampler_pool import SamplerPoolError

        cfg = self.cfg
        try:
            self.setup()
            from gdro_ray.service.user_extensions import open_run_loggers

            tb = open_run_loggers(cfg, self.run_dir, to_dict(cfg))  # metrics.loggers (tensorboard, wandb, mlflow) or None
            from gdro_ray.service.validation import ValidationLoop

            # base, every eval.every steps, final; keeps the best checkpoint
            evals = ValidationLoop(cfg, self.run_dir, pool=self.pool, eval_set=self.eval_set, log=self.log,
                                   sync_weights=self.sync_weights, checkpoint=self._checkpoint, start_step=self.step,
                                   resume=self.resume, adversary=self.adversary, base_reuse=self.base_reuse,
                                   base_signature=self.base_signature, tensorboard=tb)
            base = evals.base(self.step)
            evals.catch_up(self.step)  # resumed: the checkpoint step's evaluation, if a kill interrupted it
            progress = Progress(cfg.steps, start=self.step)
            executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gdro-sample")
            while self.step < cfg.steps:
                if cfg.cluster.off_policy:
                    record, t, t0 = self.run_step_off_policy(executor)
                else:
                    record, t, t0 = self.run_step()
                self.reward_timeouts += record["reward_timeouts"]
                record = self._finish_record(record, t, t0)
                self.step += 1
                self.log.append(record)
                if tb is not None:
                    tb.log_step(record)
                progress.update(self.step, record)
                if cfg.checkpoint.every and self.step % cfg.checkpoint.every == 0 and self.step < cfg.steps:
                    self._checkpoint()
                evals.after_step(self.step)
            executor.shutdown(wait=True)
            self._publish({})
            self._checkpoint()
            final = evals.final(self.step)
            if tb is not None:
                tb.close()
            progress.summary(base, final)
            return {"base": base, "final": final, "run_dir": str(self.run_dir)}
        except ray.exceptions.RayTaskError as e:  # a sampler raised: reward.on_error=stop is the user's stop
            from gdro_ray.service.user_extensions import reward_error_line

            if reward_error_line(e) is None:
                raise
            # The other samplers' calls of this step fail the same way (or die with their actors at
            # shutdown); Ray would print each result nobody fetched as a remote traceback. The user's
            # error is the line below, so those are silenced for the rest of this process.
            os.environ["RAY_IGNORE_UNHANDLED_ERRORS"] = "1"
            raise UserError(f"the job stopped at step {self.step + 1}: {reward_error_line(e)}") from None
        except (ray.exceptions.RayActorError, SamplerPoolError) as e:
            # A learner rank or the adversary died (samplers are replaced inside the pool).
            how = (f"continue with `gdro-ray train --resume {self.run_dir}`"
                   if (self.run_dir / "checkpoints" / "latest").is_file() else "no checkpoint yet: start it again")
            from gdro_ray.service.actor_errors import root_cause

            raise UserError(f"the job stopped at step {self.step + 1}: {root_cause(e)}; {how}") from None
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        import ray

        self.log.close()

        for name in ("weights", "pool", "learner"):
            obj = getattr(self, name, None)
            if obj is not None:
                try:
                    obj.shutdown()
                except Exception as e:  # keep shutting the rest down
                    log.warning("shutdown of %s failed: %s", name, e)
        if getattr(self, "adversary", None) is not None:
            try:
                ray.get(self.adversary.close.remote(), timeout=10)
                ray.kill(self.adversary)
            except Exception:
                pass
