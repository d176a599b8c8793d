"""Sampler actor: generates each prompt's n_i rollouts with an engine and scores them.

A sampler holds exactly one weights version at a time. The driver publishes a new version
between steps (`update_weights`), so every rollout of one shard — and of one step in
synchronous mode — comes from the same weights; each result carries the version it used.
Verification runs on the actor's main thread, where math-verify's signal-based time limit works,
after generation; with `sampler.reward_chunk` the shard is generated in chunks of prompts and each
finished chunk is scored on a background thread while the next one generates
(`gdro_ray/rewards/overlap.py`; math-verify then runs in its worker subprocesses).

With the collective weight transport the sampler is a member (rank >= 1) of a private group
with learner rank 0: `join_weight_group`, then one `receive_weights` per publish; the engine
receives straight into its own buffers (inside vLLM's worker for the vLLM engine).
"""
from __future__ import annotations

import logging
import os
import time

from gdro_ray.protocol import EvalResult, SamplerInfo, Shard, ShardResult

log = logging.getLogger("gdro_ray.sampler")


class Sampler:
    """Plain class; the pool wraps it with `ray.remote`."""

    def __init__(self, sampler_id: int, model_path: str, engine: str = "vllm", dtype: str = "float32",
                 seed: int = 0, reward_scale: str = "01", reward_timeout_s: float = 2.0,
                 weights: bytes | None = None, weights_version: int = 0, num_threads: int = 1,
                 reward_function: dict | None = None, reward_on_error: str = "zero", reward_chunk: int = 0,
                 max_model_len: int | None = None, gpu: dict | None = None, cpu_affinity: list[int] | None = None,
                 prompt_format: dict | None = None):
        from gdro_ray.utils.affinity import pin_process

        # first: the engine's threads (and vLLM's choice of cores) inherit the mask
        self.cpu_affinity = pin_process(cpu_affinity, "cluster.sampler_cpus")
        import torch

        from gdro_ray.engines import make_engine
        from gdro_ray.utils.env import setup_env

        setup_env()
        torch.set_num_threads(max(1, num_threads))
        self.sampler_id = sampler_id
        self.reward_scale = reward_scale
        self.reward_timeout_s = reward_timeout_s
        self.custom_reward = None  # `reward.function`: runs in its own subprocess (gdro_ray/rewards/custom.py)
        if reward_function is not None:
            from gdro_ray.rewards.custom import RewardFunctionRunner

            self.custom_reward = RewardFunctionRunner(reward_function, reward_on_error, reward_timeout_s)
        from gdro_ray.service.gpu_plan import sampler_engine_kwargs

        # vLLM's context and, on CUDA, its share of the card (gpu_plan.py says why)
        self.engine = make_engine(engine, model_path, dtype=dtype, seed=seed + 1000 * sampler_id,
                                  prompt_format=prompt_format, **sampler_engine_kwargs(engine, max_model_len, gpu))
        self.reward_chunk = int(reward_chunk)
        self._reward_thread = None  # the background scorer of chunked shards, started on first use
        if self.reward_chunk > 0 and self.custom_reward is None:  # math-verify's worker starts beside the engine
            from gdro_ray.rewards import _worker_pool

            self._scoring_thread().submit(_worker_pool.prewarm)
        self.version = 0
        if weights is not None:
            self.update_weights(weights, weights_version)
        self.pid = os.getpid()

    def ready(self) -> SamplerInfo:
        import torch

        from gdro_ray.utils.cuda_devices import cuda_device_uuid

        return SamplerInfo(sampler_id=self.sampler_id, pid=self.pid, weights_version=self.version,
                           cuda=torch.cuda.is_available(), cuda_uuid=cuda_device_uuid(),
                           cpu_affinity=self.cpu_affinity, torch_threads=torch.get_num_threads())

    def update_weights(self, blob, version: int) -> int:
        """`blob`: safetensors bytes, or `gdro_ray.transfer.weight_arrays` numpy arrays (read in place)."""
        from gdro_ray.transfer import weight_arrays

        if weight_arrays.is_weight_arrays(blob):
            self.engine.update_weights_from_tensors(weight_arrays.to_named_tensors(blob), version)
        else:
            self.engine.update_weights(blob, version)
        self.version = version
        return version

    # ---- collective weight transport (gdro_ray.service.weight_transport) ------------------------
    def join_weight_group(self, spec: dict) -> bool:
        """Join (or switch to) the group `spec` as rank spec["rank"]; blocks until all members joined."""
        self.engine.join_weight_group(spec)
        return True

    def receive_weights(self, layout: dict, version: int) -> int:
        """Receive one broadcast from learner rank 0 and load it; the old weights stay on failure."""
        self.engine.receive_weights(layout, version)
        self.version = version
        return version

    def leave_weight_group(self) -> None:
        self.engine.leave_weight_group()

    def catch_up_weights(self, spec: dict, layout: dict, version: int) -> int:
        """A joiner's one-off group with rank 0; returns the version held afterwards (the old one
        if the broadcast failed, so the pool retries another way)."""
        try:
            self.join_weight_group(spec)
            self.receive_weights(layout, version)
        except Exception as e:  # noqa: BLE001 - reported through the returned version
            log.warning("sampler %d: catch-up to v%d failed: %s", self.sampler_id, version, e)
        finally:
            self.leave_weight_group()
        return self.version

    def weights_checksum(self) -> float:
        """Float64 sum of the engine's parameters (see the engine for what it covers)."""
        return self.engine.weights_checksum()

    def generate_shard(self, shard: Shard, separate_arrays: bool = False):
        """Each prompt's `shard.n[i]` rollouts, scored: a `ShardResult` whose `PromptRollouts` hold
        each prompt's `pack_group` arrays and log-probs.

        With `separate_arrays` (the pool calls it so, with two Ray return values per prompt more)
        it returns the result without the arrays, then each prompt's arrays and log-probs: they
        become their own objects in the store and never pass through the driver."""
        from gdro_ray.rewards.math_reward import reward_stats
        from gdro_ray.rewards.overlap import ShardScoring, chunk_seed, chunk_spans
        from gdro_ray.transfer.rollout_arrays import prompt_rollouts

        if shard.weights_version is not None and shard.weights_version != self.version:
            raise RuntimeError(
                f"sampler {self.sampler_id} holds weights v{self.version}, shard wants v{shard.weights_version}")
        t0 = time.perf_counter()
        timeouts_before = reward_stats().get("timeouts", 0)
        custom_before = dict(self.custom_reward.stats) if self.custom_reward else {}
        spans = chunk_spans(len(shard.prompts), self.reward_chunk)
        inputs = shard.model_inputs()
        many = None
        if self.custom_reward is not None and self.custom_reward.concurrency > 1:
            def many(calls):
                return self.custom_reward.score_many([self._custom_call(shard, i, rollouts) for i, rollouts in calls])
        scoring = ShardScoring(lambda i, rollouts: self._score_prompt(shard, i, rollouts),
                               self._scoring_thread() if len(spans) > 1 else None, score_many=many)
        outs, generate_s = [], 0.0
        try:
            for c, (a, b) in enumerate(spans):
                scoring.raise_if_failed()  # reward.on_error=stop: generate nothing more
                tg = time.perf_counter()
                part = self.engine.generate(inputs[a:b], shard.n[a:b], shard.max_new_tokens,
                                            shard.temperature, shard.top_p, seed=chunk_seed(shard.seed, c))
                generate_s += time.perf_counter() - tg
                scoring.submit([(a + j, rollouts) for j, rollouts in enumerate(part)])
                outs += part
            tg = time.perf_counter()
            prompt_ids = self.engine.prompt_token_ids(inputs)
            generate_s += time.perf_counter() - tg
        except BaseException:
            scoring.drain()
            raise
        all_rewards = scoring.results()
        results, arrays = [], []
        for slot, pids, rollouts, rewards in zip(shard.slots, prompt_ids, outs, all_rewards):
            res = prompt_rollouts(slot, rewards, pids, [r.token_ids for r in rollouts], [r.logprobs for r in rollouts],
                                  truncated=sum(r.finish_reason == "length" for r in rollouts))
            if separate_arrays:
                arrays += [res.group, res.logprobs]
                res.group = res.logprobs = None
            results.append(res)
        t2 = time.perf_counter()
        custom = self.custom_reward.stats if self.custom_reward else None
        result = ShardResult(
            shard_id=shard.shard_id, sampler_id=self.sampler_id, weights_version=self.version, results=results,
            generate_s=generate_s, reward_s=max(0.0, t2 - t0 - generate_s), reward_busy_s=scoring.busy_s,
            reward_timeouts=reward_stats().get("timeouts", 0) - timeouts_before
            + (custom["timeouts"] - custom_before["timeouts"] if custom else 0),
            reward_errors=custom["errors"] - custom_before["errors"] if custom else 0,
            tokens=sum(len(r.token_ids) for rollouts in outs for r in rollouts))
        return (result, *arrays) if separate_arrays else result

    def _score_prompt(self, shard: Shard, i: int, rollouts: list) -> list[float]:
        """The rewards of prompt `i`'s rollouts (one custom-function call, or math-verify each)."""
        from gdro_ray.rewards.math_reward import math_reward

        answer = shard.answers[i]
        if self.custom_reward is not None:
            return self.custom_reward.score(*self._custom_call(shard, i, rollouts))
        return [math_reward(r.text, answer, scale=self.reward_scale, timeout_s=self.reward_timeout_s)
                for r in rollouts]

    @staticmethod
    def _custom_call(shard: Shard, i: int, rollouts: list) -> tuple:
        """The arguments of the custom reward's call for prompt `i`, then the row its errors name."""
        n, meta = len(rollouts), (shard.metadata or [{}] * len(shard.prompts))[i]
        return ([shard.prompts[i]] * n, [r.text for r in rollouts], [shard.answers[i]] * n,
                [dict(meta) for _ in range(n)], (shard.rows or shard.slots)[i])

    def _scoring_thread(self):
        """One background thread for the whole life of the sampler (see rewards/overlap.py)."""
        if self._reward_thread is None:
            from concurrent.futures import ThreadPoolExecutor

            self._reward_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"reward-{self.sampler_id}")
        return self._reward_thread

    def evaluate(self, examples: list[dict], k: int, max_new_tokens: int, temperature: float,
                 top_p: float, seed: int = 0) -> EvalResult:
        """Evaluate the weights this sampler holds (mean@k, pass@k per tier and pooled)."""
        from gdro_ray.eval.evaluate import evaluate_engine

        return evaluate_engine(self.engine, examples, k=k, max_new_tokens=max_new_tokens,
                               temperature=temperature, top_p=top_p, seed=seed)
