"""FSDP2 GRPO learner: one `LearnerWorker` per rank (a plain class; the service wraps it with
`ray.remote`, tests drive it under torch.multiprocessing).

Algorithm of one `train_step` (`epochs` × `mini_batches` optimizer steps per call)
--------------------------------------------------------------------------------
1. Every rank receives the SAME per-row scalars (advantages, prompt index, lengths); the token
   ids are either in the batch for every row (list form) or, from the service, fetched by each
   rank from the object store for its own rows only (compact form, `gdro_ray.transfer.rollout_arrays`).
   The batch is split into `mini_batches` parts along prompt boundaries
   (`partition.mini_batch_partition`; every rank computes the same split) and each part is one
   optimizer step; the whole pass is repeated `epochs` times. Within a mini-batch each rank
   takes its contiguous slice of the part's responses (`rollout_arrays.rank_rows`).
2. The loss of a mini-batch is Σ_r w_r Σ_t ℓ_rt with per-response weights from `loss_agg`
   (`grpo.sequence_loss_weights`, computed over the whole mini-batch from the full batch, so
   the micro-batch losses of all ranks sum to it; the global token count is checked with an
   all_reduce first). FSDP2 *averages* gradients over ranks in its reduce-scatter, so the
   backward loss is scaled by world_size to turn that average back into the global sum.
3. Each rank runs the same number of micro-batches per mini-batch (right-padded, at most `micro_batch`
   sequences and, if `micro_batch_tokens` > 0, at most that many padded tokens); a rank with
   fewer runs zero-token dummy micro-batches, because every FSDP forward and backward is a
   collective and unequal counts would deadlock. Every rank plans every rank's micro-batches
   from the full batch, so the count needs no communication. Logits are computed only from
   the first response position on (`logits_to_keep`) and log-probs in bounded fp32 blocks.
4. Reference log-probs come from a frozen, unsharded copy of the initial model on each rank
   (fine for small and mid-size models; skipped entirely when kl_coef = 0). With LoRA
   (`lora`, gdro_ray/learner/lora.py) only the adapters train and the reference is the same
   sharded model with its adapters disabled: the frozen base is the initial model, so no copy.
   `old_logprobs` in the batch (the samplers', used in off-policy mode) are the behaviour
   policy for every update. Without them (on-policy) the behaviour log-probs are the policy's
   before the first update: the first mini-batch's own detached forward (ratio exactly 1) and,
   when there is more than one update, one no-grad pass over the other rows taken before it
   (as verl recomputes them; each rank over the rows it will train, so nothing is gathered), so
   later mini-batches see a real ratio and the clip. All log-probs are
   of the tempered policy softmax(logits / T), T = the sampling temperature (`grpo["temperature"]`),
   since that is what the samples were drawn from; the engines report raw (T = 1) log-probs, so
   they are valid `old_logprobs` only at T = 1.
5. Global grad-norm clip, AdamW step (fp32 master weights; `dtype="bfloat16"` computes in
   bf16 through FSDP2's MixedPrecisionPolicy and reduces gradients in fp32).
6. The per-sequence clipped surrogate with the unweighted advantage (Prompt-GDRO's
   `surrogate` signal) is measured in the first epoch at the policy before its mini-batch's
   update, summed across ranks, and averaged per prompt. Per-update statistics (loss, ratio
   mean/min/max, clip_frac, grad_norm) come back in `updates`; the top-level ones aggregate them.

Weight publication (safetensors bytes, object-store arrays, collective buckets) and checkpoints
are the `LearnerWeights` methods (gdro_ray/learner/weights_out.py).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import replace
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from gdro_ray.algorithms.grpo import (
    LOSS_AGGS,
    grpo_loss,
    sequence_loss_weights,
    token_logprobs_and_entropy,
)
from gdro_ray.algorithms.partition import mini_batch_partition, rank_slice
from gdro_ray.learner.batch import (
    build_micro_batch,
    dummy_micro_batch,
    plan_micro_batches,
    validate_batch,
)
from gdro_ray.learner.lora import LoraSettings, apply_lora, base_weights, scalings
from gdro_ray.learner.phases import learner_phase_timer
from gdro_ray.learner.weights_out import LearnerWeights
from gdro_ray.protocol import LearnerInfo, RankStats, UpdateStats
from gdro_ray.transfer.rollout_arrays import materialise, rank_rows, row_lengths
from gdro_ray.transfer.weight_group import rendezvous_store
from gdro_ray.utils.phase_timer import PhaseTimer

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# Stats summed over ranks as token-weighted sums (then divided by the global token count).
# `entropy`: the policy's own, −Σ p log p per response token, before the update.
_SUM_STATS = ("pg_loss", "kl", "clip_frac", "ratio_mean", "entropy")


class LearnerWorker(LearnerWeights):
    """One FSDP2 rank of the GRPO learner group."""

    def __init__(
        self,
        rank: int,
        world_size: int,
        master_addr: str,
        master_port: int,
        model_path: str,
        lr: float,
        weight_decay: float = 0.0,
        grad_clip: float = 1.0,
        micro_batch: int = 64,
        micro_batch_tokens: int = 0,
        backend: str = "auto",
        dtype: str = "float32",
        grpo: dict | None = None,
        seed: int = 0,
        device: str | None = None,
        num_threads: int | None = 1,
        gradient_checkpointing: bool = False,
        reshard_after_forward: bool = True,
        timeout_s: float = 1800.0,
        cpu_affinity: list[int] | None = None,
        lora: dict | None = None,
    ) -> None:
        from transformers import AutoModelForCausalLM

        from gdro_ray.utils.affinity import pin_process

        # before torch starts its thread pool, so the pool inherits the mask (cluster.learner_cpus)
        self.cpu_affinity = pin_process(cpu_affinity, "cluster.learner_cpus")

        if dtype not in _DTYPES:
            raise ValueError(f"learner dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        if num_threads:  # for real, even in a process where vLLM disabled torch.set_num_threads
            from gdro_ray.utils.threads import set_torch_threads

            set_torch_threads(num_threads)
        torch.manual_seed(seed)
        self.rank, self.world_size = rank, world_size
        self.model_path = model_path
        self.grad_clip, self.micro_batch = grad_clip, max(1, int(micro_batch))
        self.micro_batch_tokens = max(0, int(micro_batch_tokens))
        self.compute_dtype = _DTYPES[dtype]
        grpo = dict(grpo or {})
        self.clip_low = float(grpo.get("clip_low", 0.2))
        self.clip_high = float(grpo.get("clip_high", 0.28))
        self.kl_coef = float(grpo.get("kl_coef", 0.001))
        # The samplers draw from softmax(logits / T): the update (and the KL to the reference) is
        # taken on that same tempered policy, as the samples' distribution. T = 1 changes nothing.
        self.temperature = float(grpo.get("temperature", 1.0))
        if not self.temperature > 0:
            raise ValueError(f"learner: sampling temperature must be > 0, got {self.temperature}")
        self.mini_batches = int(grpo.get("mini_batches", 1))
        self.epochs = int(grpo.get("epochs", 1))
        self.loss_agg = str(grpo.get("loss_agg", "token_mean"))
        if self.mini_batches < 1 or self.epochs < 1 or self.loss_agg not in LOSS_AGGS:
            raise ValueError(f"learner: mini_batches={self.mini_batches} and epochs={self.epochs} must be ≥ 1, "
                             f"loss_agg={self.loss_agg!r} one of {LOSS_AGGS}")
        self._version = 0
        self._sender = None  # gdro_ray.transfer.weight_group.WeightSender, rank 0, made on first use

        if device is None:
            device = f"cuda:{rank % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if backend == "auto":
            backend = "nccl" if self.device.type == "cuda" else "gloo"
        self.backend = backend
        dist.init_process_group(
            backend,
            store=rendezvous_store(master_addr, int(master_port), rank, world_size, timeout_s),
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=timeout_s),
        )
        mesh = init_device_mesh(self.device.type, (world_size,))

        # Master weights stay fp32 so AdamW updates are not lost to bf16 rounding.
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        model.config.use_cache = False
        if gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.gradient_checkpointing = bool(getattr(model, "is_gradient_checkpointing", False))
        self.config = model.config
        self.pad_id = int(getattr(model.config, "pad_token_id", None) or 0)
        layer_classes = set(getattr(model, "_no_split_modules", None) or [])
        # LoRA: peft wraps the model before sharding, so FSDP2 shards the frozen base and the
        # adapters alike; rank 0 keeps the base for merged publication (lora.py says why)
        self.lora = LoraSettings.from_dict(lora)
        self._lora_scale: dict[str, float] = {}
        self._lora_base = None
        if self.lora is not None:
            model = apply_lora(model, self.lora)
            self._lora_scale = scalings(model)
            self._lora_base = base_weights(model) if rank == 0 else None
        mp = None
        if self.compute_dtype != torch.float32:
            mp = MixedPrecisionPolicy(param_dtype=self.compute_dtype, reduce_dtype=torch.float32)
        shard_kwargs = {"mesh": mesh, "reshard_after_forward": bool(reshard_after_forward)}
        if mp is not None:
            shard_kwargs["mp_policy"] = mp
        for module in model.modules():
            if type(module).__name__ in layer_classes:
                fully_shard(module, **shard_kwargs)
        fully_shard(model, **shard_kwargs)
        self.model = model
        # only what trains: with LoRA the adapters, so AdamW keeps no state for the frozen base
        self.optimizer = _adamw([p for p in model.parameters() if p.requires_grad], lr, weight_decay, self.device)

        self.ref_model = None
        self.has_reference = self.kl_coef != 0.0
        if self.has_reference and self.lora is None:
            ref = AutoModelForCausalLM.from_pretrained(model_path, dtype=self.compute_dtype)
            ref.config.use_cache = False
            self.ref_model = ref.to(self.device).eval().requires_grad_(False)

    # ------------------------------------------------------------------ info
    def version(self) -> int:
        """Batches trained (each with at least one optimizer step): the version of the weights."""
        return self._version

    def info(self) -> LearnerInfo:
        return LearnerInfo(
            rank=self.rank, world_size=self.world_size, device=str(self.device), cuda_uuid=_card_uuid(self.device),
            backend=self.backend, version=self._version, num_params=sum(p.numel() for p in self.model.parameters()),
            pid=os.getpid(), cpu_affinity=self.cpu_affinity, torch_threads=torch.get_num_threads(),
            micro_batch=self.micro_batch, micro_batch_tokens=self.micro_batch_tokens,
            gradient_checkpointing=self.gradient_checkpointing)

    # ------------------------------------------------------------------ training
    def _forward_logp(self, model: torch.nn.Module, mb, with_entropy: bool = False):
        """Token log-probs of `mb`'s responses under `model`; with `with_entropy` also the
        policy's entropy at each position, as (log-probs, entropy)."""
        out = model(input_ids=mb.input_ids, attention_mask=mb.attention_mask, logits_to_keep=mb.keep)
        logits = out.logits[:, :-1]
        if self.temperature != 1.0:
            logits = logits / self.temperature
        logp, entropy = token_logprobs_and_entropy(logits, mb.targets, with_entropy=with_entropy)
        return (logp, entropy) if with_entropy else logp

    def _reference_logp(self, mb):
        """The reference policy's token log-probs: the frozen copy, or with LoRA the base model
        itself (the same sharded weights with the adapters off)."""
        if self.lora is None:
            return self._forward_logp(self.ref_model, mb)
        with self.model.disable_adapter():
            return self._forward_logp(self.model, mb)

    def _micro_batches(self, batch: dict, parts: list[list[int]]):
        """This rank's micro-batches of `parts` (its contiguous share of each part, as
        `rollout_arrays.rank_rows` says), padded with dummies to the largest count of any rank.
        Every rank plans every rank's share from the same rows (lengths suffice)."""
        def share(r: int) -> list[int]:
            return [part[i] for part in parts for i in rank_slice(len(part), r, self.world_size)]

        plans = [plan_micro_batches(batch, share(r), self.micro_batch, self.micro_batch_tokens)
                 for r in range(self.world_size)]
        chunks = plans[self.rank]
        most = max(len(p) for p in plans)
        for k in range(most):
            if k < len(chunks):
                yield build_micro_batch(batch, chunks[k], self.pad_id, self.device)
            else:
                yield dummy_micro_batch(self.device)

    @torch.no_grad()
    def response_logprobs(self, batch: dict, reference: bool = False, rows: list[int] | None = None,
                          parts: list[list[int]] | None = None, gather: bool = True) -> list:
        """Per-token log-probs of every response (or of `rows`, or of the rows of `parts`, each
        rank computing its share of each part; the others come back empty) under the current
        policy (or the frozen reference). Collective. With `gather` every rank gets every row (an
        all_reduce of the table); without, each rank gets only the rows it computed, as fp32
        tensors. Needs only the token-id keys."""
        n = len(batch["response_token_ids"])
        parts = [list(range(n)) if rows is None else list(rows)] if parts is None else parts
        prompt_lens, lengths = row_lengths(batch)
        if reference and not self.has_reference:
            raise ValueError("no reference model: the learner was built with kl_coef = 0")

        def forward(mb):
            return self._reference_logp(mb) if reference else self._forward_logp(self.model, mb)

        if not gather:
            mine: list = [None] * n
            for mb in self._micro_batches(batch, parts):
                logp = forward(mb)
                for j, row in enumerate(mb.rows):
                    start = prompt_lens[row] - 1 - mb.start
                    mine[row] = logp[j, start : start + lengths[row]].float().cpu()
            return mine
        width = max(lengths, default=0)
        table = torch.zeros((n, max(width, 1)), dtype=torch.float32, device=self.device)
        for mb in self._micro_batches(batch, parts):
            logp = forward(mb)
            for j, row in enumerate(mb.rows):
                start = prompt_lens[row] - 1 - mb.start
                table[row, : lengths[row]] = logp[j, start : start + lengths[row]]
        dist.all_reduce(table)
        out = table.cpu().tolist()
        wanted = {i for part in parts for i in part}
        return [out[i][: lengths[i]] if i in wanted else [] for i in range(n)]

    def train_step(self, batch: dict, groups: dict | None = None) -> RankStats:
        """GRPO on one batch: `epochs` passes of `mini_batches` optimizer steps (see the module
        docstring). Collective. From the learner group: a `LearnerBatch`'s per-row part with
        `groups`, the references of the rollout groups this rank's rows are in (only those are
        fetched); in process: a working batch with every row's token lists."""
        t0, cpu0 = time.perf_counter(), time.process_time()
        phases = learner_phase_timer(self.device)
        fetched_bytes = None
        if groups is not None:
            own = rank_rows(batch["prompt_index"], self.mini_batches, self.rank, self.world_size)
            with phases("fetch"):
                batch, fetched_bytes = materialise(batch, groups, own)
        n = validate_batch(batch)
        prompt_lens, lengths = row_lengths(batch)
        batch = dict(batch, prompt_lengths=prompt_lens, response_lengths=lengths)  # planning reads these
        total_tokens = sum(lengths)
        mine = rank_slice(n, self.rank, self.world_size)

        # The all_reduce gives the global token count; every rank also knows it from the full
        # batch, so a mismatch means the ranks were sent different batches.
        counts = torch.tensor([float(sum(lengths[i] for i in mine))], dtype=torch.float64, device=self.device)
        spread = torch.tensor([float(total_tokens), -float(total_tokens)], dtype=torch.float64, device=self.device)
        with phases("sync"):
            dist.all_reduce(counts)
            dist.all_reduce(spread, op=dist.ReduceOp.MAX)
        if int(counts[0]) != total_tokens or spread[0] != -spread[1]:
            raise RuntimeError("learner ranks received different batches (global token counts disagree)")
        if total_tokens == 0:
            return self._empty_stats(n, time.perf_counter() - t0)

        parts = mini_batch_partition(batch["prompt_index"], self.mini_batches)
        work = dict(batch)
        if self.loss_agg != "token_mean":  # token_mean divides by the mini-batch's token count instead
            weights = [0.0] * n
            for rows in parts:  # each optimizer step's loss is the aggregate over its own mini-batch
                w = sequence_loss_weights([lengths[i] for i in rows], [batch["prompt_index"][i] for i in rows],
                                          self.loss_agg)
                for i, v in zip(rows, w):
                    weights[i] = float(v)
            work["loss_weights"] = weights
        on_policy = batch.get("old_logprobs") is None
        if on_policy and (len(parts) > 1 or self.epochs > 1):
            # Behaviour log-probs of the tempered policy, taken once before the first update. The
            # first mini-batch of the first epoch is trained before any update, so its own forward
            # (detached) is exactly the behaviour policy: only the other rows need this pass. Each
            # rank computes its own share of each later mini-batch, the rows it will train, so
            # nothing needs gathering across ranks.
            later = parts[1:] if self.epochs == 1 else parts
            with phases("behaviour"):
                work["old_logprobs"] = self.response_logprobs(batch, parts=later, gather=False)

        per_seq = torch.zeros(n, dtype=torch.float64, device=self.device)
        updates: list[UpdateStats] = []
        self.model.train()
        for epoch in range(self.epochs):
            for m, rows in enumerate(parts):
                detached = on_policy and epoch == 0 and m == 0
                u = self._update(work, rows, detached, per_seq if epoch == 0 else None, phases)
                updates.append(replace(u, epoch=epoch, mini_batch=m))
        with phases("sync"):
            dist.all_reduce(per_seq)

        steps = [u for u in updates if not u.skipped]
        if steps:
            self._version += 1
        tok = sum(u.tokens for u in updates)
        means = {key: sum(getattr(u, key) * u.tokens for u in updates) / tok for key in _SUM_STATS}
        return RankStats(
            **means,
            loss=sum(u.loss for u in updates) / len(updates),
            ratio_max=max(u.ratio_max for u in updates),
            ratio_min=min(u.ratio_min for u in updates),
            grad_norm=max(u.grad_norm for u in updates),
            tokens=total_tokens,
            responses=n,
            skipped=not steps,
            optimizer_steps=len(steps),
            updates=updates,
            version=self._version,
            per_prompt_surrogate=_per_prompt_mean(batch["prompt_index"], per_seq.cpu().tolist()),
            time_s=time.perf_counter() - t0,
            # this rank's wall seconds per phase, and its process CPU seconds over the step: CPU
            # well below wall means the rank waited (on a collective, or for a core)
            phase_s=phases.totals(), cpu_s=time.process_time() - cpu0,
            fetched_bytes=fetched_bytes,  # None for a batch that came with its token lists
        )

    def _update(self, batch: dict, rows: list[int], detached_old: bool, per_seq: torch.Tensor | None,
                timer: PhaseTimer) -> UpdateStats:
        """One optimizer step on the mini-batch `rows` (every rank the same rows). With
        `detached_old` the current forward is the behaviour policy (ratio exactly 1); otherwise
        `batch["old_logprobs"]` is. Fills `per_seq` with the pre-update surrogate when given; `timer`
        collects the wall time of its phases."""
        total = float(sum(batch["response_lengths"][i] for i in rows))
        sums = torch.zeros(len(_SUM_STATS) + 1, dtype=torch.float64, device=self.device)
        extremes = torch.full((2,), -math.inf, dtype=torch.float64, device=self.device)  # max ρ, −min ρ
        for mb in self._micro_batches(batch, [rows]):
            with timer("forward"):
                logp, entropy = self._forward_logp(self.model, mb, with_entropy=True)
            old_logp = logp.detach() if detached_old or mb.old_logp is None else mb.old_logp
            ref_logp = None
            if self.has_reference:
                with torch.no_grad(), timer("reference"):
                    ref_logp = self._reference_logp(mb)
            loss, stats, seq_surrogate = grpo_loss(
                logp, old_logp, ref_logp, mb.advantages, mb.mask,
                clip_low=self.clip_low, clip_high=self.clip_high, kl_coef=self.kl_coef,
                signal_advantages=mb.signal_advantages, num_tokens=max(total, 1.0),
                seq_weights=mb.seq_weights if "loss_weights" in batch else None,
            )
            with timer("backward"):
                (loss * self.world_size).backward()
            if mb.rows:
                stats["entropy"] = float((entropy * mb.mask).sum()) / max(stats["tokens"], 1)
                if per_seq is not None:
                    per_seq[mb.rows] = seq_surrogate.to(torch.float64)
                sums[0] += float(loss.detach())
                for j, key in enumerate(_SUM_STATS, start=1):
                    sums[j] += stats[key] * stats["tokens"]
                if stats["tokens"] > 0:
                    extremes[0] = max(float(extremes[0]), stats["ratio_max"])
                    extremes[1] = max(float(extremes[1]), -stats["ratio_min"])
        with timer("sync"):
            dist.all_reduce(sums)
            dist.all_reduce(extremes, op=dist.ReduceOp.MAX)

        max_norm = self.grad_clip if self.grad_clip and self.grad_clip > 0 else math.inf
        with timer("optimizer"):
            grad_norm = torch.nn.utils.clip_grad_norm_(list(self.model.parameters()), max_norm)
            if isinstance(grad_norm, DTensor):
                grad_norm = grad_norm.full_tensor()
            grad_norm = float(grad_norm)
            skipped = not math.isfinite(grad_norm)
            if not skipped:  # every rank sees the same global norm, so all skip or all step
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        means = {key: float(sums[j]) / max(total, 1.0) for j, key in enumerate(_SUM_STATS, start=1)}
        return UpdateStats(**means, loss=float(sums[0]), ratio_max=float(extremes[0]), ratio_min=-float(extremes[1]),
                           grad_norm=grad_norm, tokens=int(total), skipped=skipped)

    def _empty_stats(self, n: int, elapsed: float) -> RankStats:
        """A batch without a response token: nothing to train, the version stays."""
        return RankStats(responses=n, skipped=True, version=self._version, time_s=elapsed)

    def shutdown(self) -> None:
        if self._sender is not None:
            self._sender.shutdown()
        if dist.is_initialized():
            # A rank can still have collectives in flight here (a core dump showed rank 1 with
            # an all-gather of the last weight gather pending: rank 0 alone keeps the result):
            # wait for every rank's collectives before the group is torn down.
            if dist.get_world_size() > 1:
                dist.barrier()
            dist.destroy_process_group()


def exit_rank_process() -> None:
    """End a process that ran a multi-rank learner (a torch.multiprocessing rank of a test or
    benchmark) without the interpreter's finalisation. Gloo's worker threads release finished
    collectives, and with them Python-owned tensors, a moment after completion; one still doing
    so while the interpreter finalises aborts the process ("terminate called without an active
    exception": 1 run in 22-60 here, seen in CI). Call it after `shutdown()` and after every
    result is written. The service's learner actors are ended by `ray.kill`, not finalised."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _adamw(params, lr: float, weight_decay: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW with the fused kernel (one pass over each parameter on CPU and CUDA), as the HF
    Trainer (and so TRL) defaults to since torch 2.8: 0.13–0.17× the loop's time on SmolLM2's
    parameters on CPU (benchmarks/optimizer_step.py; RESULTS.md). The same update up to float
    rounding; FSDP2's sharded parameters take it too (the two-rank tests use it)."""
    fused = torch.device(device).type in ("cpu", "cuda")  # elsewhere the per-parameter loop
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused)


def _card_uuid(device: torch.device) -> str | None:
    if device.type != "cuda":
        return None
    from gdro_ray.utils.cuda_devices import cuda_device_uuid

    return cuda_device_uuid(device.index if device.index is not None else torch.cuda.current_device())


def _per_prompt_mean(prompt_index: list[int], values: list[float]) -> dict[int, float]:
    total: dict[int, float] = {}
    count: dict[int, int] = {}
    for p, v in zip(prompt_index, values):
        total[int(p)] = total.get(int(p), 0.0) + v
        count[int(p)] = count.get(int(p), 0) + 1
    return {p: total[p] / count[p] for p in total}
