"""The messages between the actors: those of one training step, and the reports around it.

    adversary ──StepSchedule──▶ driver ──Shard──▶ sampler ──ShardResult──▶ driver
    driver ──LearnerBatch──▶ learner group ──▶ each rank ──RankStats (of UpdateStats)──▶ learner group
    learner group ──LearnStats──▶ driver ──observe(step, …)──▶ adversary
    driver ──StepRecord──▶ metrics.jsonl;  driver ──DriverReport──▶ adversary (gauges, status)
    learner rank ──LearnerInfo──▶ driver;  sampler ──SamplerInfo──▶ pool (when it is up)
    sampler ──EvalResult──▶ driver (held-out evaluation; its `to_dict()` is the JSON result)
    driver ──EvalRecord──▶ metrics.jsonl and adversary (gauges, status)
    driver ──SampleRecord──▶ samples.jsonl and adversary;  adversary ──StatusReport──▶ `gdro-ray status`

`StepSchedule` (`gdro_ray.algorithms.schedule`) is the adversary's own pure object; it crosses Ray
as it is and stays pending in the adversary, so the results name its step rather than send it
back. The rollouts' token ids and log-probs never pass through the driver: a sampler returns them
as separate Ray objects (`gdro_ray.transfer.rollout_arrays`), and `PromptRollouts` carries their
references. Outside Ray (tests, stand-in samplers) the same fields hold the arrays themselves;
every reader resolves either.

Plain dataclasses of builtins and numpy arrays: they pickle through Ray unchanged and need no
schema library.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from gdro_ray.algorithms.schedule import StepSchedule

__all__ = [
    "EVAL_RECORD", "DriverReport", "EvalRecord", "EvalResult", "LearnStats", "LearnerBatch",
    "LearnerInfo", "PromptRollouts", "RankStats", "SampleRecord", "SampleResponse", "SamplerInfo", "Shard",
    "ShardResult", "StatusReport", "StepRecord", "StepSchedule", "UpdateStats", "model_input",
]


def model_input(prompt: str, context: list[dict] | None = None) -> str | list[dict]:
    """A prompt as the engines take it: the text alone, or a chat row's `context` turns then the
    user turn (`gdro_ray.engines.prompt_format` renders either)."""
    return [*context, {"role": "user", "content": prompt}] if context else prompt


@dataclass(frozen=True)
class Shard:
    """What one sampler call generates: `n[i]` rollouts of `prompts[i]`, which fill step slot `slots[i]`."""

    shard_id: int
    slots: list[int]
    prompts: list[str]
    answers: list[str]
    n: list[int]
    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int | None = None
    rows: list | None = None  # custom reward: each prompt's dataset row id, named in its errors
    metadata: list | None = None  # custom reward: each prompt's other columns, passed to the function
    weights_version: int | None = None  # the version the sampler must hold (set by the pool)
    contexts: list | None = None  # chat rows: each prompt's turns before it (None where it has none)

    def for_version(self, version: int) -> Shard:
        return replace(self, weights_version=int(version))

    def model_inputs(self) -> list:
        """What the engine renders per prompt: the text, or its context turns then the user turn."""
        return [model_input(p, c) for p, c in zip(self.prompts, self.contexts or [None] * len(self.prompts))]


@dataclass
class PromptRollouts:
    """One prompt's rollouts: rewards and lengths, and where its arrays are.

    `group` is the prompt's `pack_group` arrays (prompt token ids, concatenated response token
    ids, offsets) and `logprobs` the per-token log-probs on the same offsets: Ray object
    references on the driver (attached by the sampler pool), or the arrays themselves."""

    slot: int
    rewards: list[float]
    prompt_len: int
    response_lens: list[int]
    nbytes: int = 0  # bytes of `group`'s arrays
    logprob_nbytes: int = 0
    truncated: int = 0  # responses cut off at `max_new_tokens` (finish reason "length")
    group: Any = None
    logprobs: Any = None


@dataclass
class ShardResult:
    """A sampler's answer to one `Shard`: each prompt's rollouts in shard order, and its costs."""

    shard_id: int
    sampler_id: int
    weights_version: int
    results: list[PromptRollouts]
    generate_s: float = 0.0
    reward_s: float = 0.0  # scoring the engine waited for
    reward_busy_s: float = 0.0  # all scoring, partly hidden behind generation when chunked
    reward_timeouts: int = 0
    reward_errors: int = 0
    tokens: int = 0  # response tokens generated


@dataclass
class LearnerBatch:
    """The trained rollouts of a step, one row per response, plus one array reference per group.

    Per row only scalars: which `group` (index into `groups`) and which `member` of it, its
    prompt and response length, its advantage (× the adversary's weight) and the raw advantage
    (`signal_advantages`), and the step slot it came from (`prompt_index`, the PPO mini-batches
    keep a prompt's rows together). `sampler_logprobs`: the ranks train against the samplers'
    log-probs (off-policy) and so fetch `logprob_groups` too."""

    groups: list = field(default_factory=list)
    logprob_groups: list = field(default_factory=list)
    group_nbytes: list[int] = field(default_factory=list)
    group: list[int] = field(default_factory=list)
    member: list[int] = field(default_factory=list)
    prompt_lengths: list[int] = field(default_factory=list)
    response_lengths: list[int] = field(default_factory=list)
    advantages: list[float] = field(default_factory=list)
    signal_advantages: list[float] = field(default_factory=list)
    prompt_index: list[int] = field(default_factory=list)
    sampler_logprobs: bool = False

    def __len__(self) -> int:
        return len(self.advantages)

    def rows(self) -> dict:
        """The per-row part that every rank receives (no array references), as the worker reads it."""
        return {"group": self.group, "member": self.member, "prompt_lengths": self.prompt_lengths,
                "response_lengths": self.response_lengths, "advantages": self.advantages,
                "signal_advantages": self.signal_advantages, "prompt_index": self.prompt_index,
                "sampler_logprobs": self.sampler_logprobs}


@dataclass
class UpdateStats:
    """One optimizer step of a learner rank (an epoch's mini-batch): its loss and the token means
    of the surrogate, KL, clipping, ratio and entropy over the mini-batch, as every rank reduced them."""

    loss: float = 0.0
    pg_loss: float = 0.0
    kl: float = 0.0
    clip_frac: float = 0.0
    ratio_mean: float = 1.0
    ratio_min: float = 1.0
    ratio_max: float = 1.0
    entropy: float = 0.0  # the policy's, per response token, before the update
    grad_norm: float = 0.0  # before clipping
    tokens: int = 0
    skipped: bool = False  # the gradient was not finite: no optimizer step
    epoch: int = 0
    mini_batch: int = 0


@dataclass
class RankStats:
    """One learner rank's answer to `train_step`: the step's statistics (alike on every rank, the
    update's collectives reduced them) and this rank's own timing and fetched bytes."""

    loss: float = 0.0  # the mean over the updates
    pg_loss: float = 0.0  # token means over every update, as in `UpdateStats`
    kl: float = 0.0
    clip_frac: float = 0.0
    ratio_mean: float = 1.0
    entropy: float = 0.0
    ratio_min: float = 1.0  # over every update
    ratio_max: float = 1.0
    grad_norm: float = 0.0  # the largest over the updates
    tokens: int = 0  # response tokens of the batch (every rank's rows)
    responses: int = 0
    skipped: bool = True  # no update stepped the optimizer
    optimizer_steps: int = 0
    updates: list[UpdateStats] = field(default_factory=list)
    version: int = 0  # the learner's weights version after the step
    per_prompt_surrogate: dict[int, float] = field(default_factory=dict)  # step slot → mean surrogate loss
    time_s: float = 0.0
    phase_s: dict[str, float] = field(default_factory=dict)  # wall seconds per learner phase (`learner/phases.py`)
    cpu_s: float | None = None  # process CPU seconds: well below `time_s` means the rank waited
    fetched_bytes: int | None = None  # rollout bytes this rank took from the object store (service batches)


@dataclass
class LearnStats:
    """What one GRPO update reports to the driver (`LearnerGroup.train_step`): the statistics
    every rank reduced alike (taken from rank 0) and each rank's own timing and fetched bytes."""

    loss: float | None = None
    kl: float | None = None
    entropy: float | None = None  # the policy's, per response token (token mean), before the update
    clip_frac: float | None = None
    grad_norm: float | None = None  # the largest over the step's optimizer steps
    ratio_mean: float | None = None
    ratio_min: float | None = None
    ratio_max: float | None = None
    optimizer_steps: int = 0
    updates: list[UpdateStats] = field(default_factory=list)  # per (epoch, mini-batch): its loss, clipping, ratios
    per_prompt_surrogate: dict[int, float] = field(default_factory=dict)  # step slot → mean surrogate loss
    rollout_bytes: int | None = None  # the trained rollouts' array bytes
    fetched_bytes_per_rank: list[int | None] | None = None  # what each rank took from the object store
    rank_phase_s: list[dict] | None = None  # seconds per learner phase, per rank (`learner/phases.py`)
    rank_time_s: list[float | None] | None = None
    rank_cpu_s: list[float | None] | None = None

    @classmethod
    def from_ranks(cls, stats: list[RankStats], rollout_bytes: int | None = None) -> LearnStats:
        """From the ranks' own `train_step` answers (rank 0 first)."""
        first = stats[0]
        return cls(
            loss=first.loss, kl=first.kl, entropy=first.entropy, clip_frac=first.clip_frac, grad_norm=first.grad_norm,
            ratio_mean=first.ratio_mean, ratio_min=first.ratio_min, ratio_max=first.ratio_max,
            optimizer_steps=first.optimizer_steps, updates=list(first.updates),
            per_prompt_surrogate={int(k): float(v) for k, v in first.per_prompt_surrogate.items()},
            rollout_bytes=rollout_bytes, fetched_bytes_per_rank=[s.fetched_bytes for s in stats],
            rank_phase_s=[s.phase_s for s in stats], rank_time_s=[s.time_s for s in stats],
            rank_cpu_s=[s.cpu_s for s in stats])

    def surrogate(self, slots: int) -> list[float]:
        """The per-prompt surrogate loss of slots 0 … slots−1; 0 for a slot no rank trained."""
        return [float(self.per_prompt_surrogate.get(i, 0.0)) for i in range(slots)]


@dataclass(frozen=True)
class LearnerInfo:
    """What a learner rank says about itself (`LearnerWorker.info`): where it runs and how it trains."""

    rank: int
    world_size: int
    device: str
    cuda_uuid: str | None  # the card's UUID (None on CPU): indexes differ per process, so sharing a card shows only here
    backend: str
    version: int
    num_params: int
    pid: int
    cpu_affinity: list[int] | None
    torch_threads: int
    micro_batch: int
    micro_batch_tokens: int
    gradient_checkpointing: bool


@dataclass
class SamplerInfo:
    """What a sampler says when it is up (`Sampler.ready`), kept by the pool per member, which
    updates `weights_version` as it publishes and adds `node_id` once the sampler is placed.
    Stand-in samplers may leave the device fields unset (None: not reported)."""

    sampler_id: int
    pid: int | None = None
    weights_version: int | None = None  # None: the sampler has not answered yet
    cuda: bool | None = None  # whether its engine sees CUDA
    cuda_uuid: str | None = None  # the card its engine uses: the weight transport avoids NCCL between ranks on one card
    cpu_affinity: list[int] | None = None
    torch_threads: int | None = None
    node_id: str | None = None  # the Ray node its placement group is on (set by the pool)


@dataclass
class EvalResult:
    """A held-out evaluation of the weights a sampler holds (`eval.evaluate.evaluate_engine`, the
    sampler's `evaluate`): mean@k and unbiased pass@k pooled, per tier, per dataset and for the
    worst tier, each prompt's rollouts and successes, and how it was sampled. The statistics are
    `{n_prompts, n_rollouts, mean_at_k, pass_at_k}` dicts, as the JSON files have them."""

    k: int
    pooled: dict
    per_tier: dict[str, dict] = field(default_factory=dict)  # "<tier>", or "<source>/<tier>" with several datasets
    worst_tier: dict | None = None  # {"tier", ...statistics}: the lowest pass@k (ties: mean@k)
    per_dataset: dict[str, dict] = field(default_factory=dict)  # source → statistics, its per_tier and worst_tier
    per_prompt: list[dict] = field(default_factory=list)  # {id, source, tier, n, c}
    meta: dict = field(default_factory=dict)  # sampling settings, engine, weights version, seconds, tokens

    def to_dict(self) -> dict:
        """The JSON-ready result (eval_base.json, evals/step*.json, `gdro-ray eval`'s file)."""
        return {"k": self.k, "pooled": self.pooled, "per_tier": self.per_tier, "worst_tier": self.worst_tier,
                "per_dataset": self.per_dataset, "per_prompt": self.per_prompt, "meta": self.meta}


#: Value of `type` that marks an evaluation record in metrics.jsonl; step records have no `type`.
EVAL_RECORD = "eval"


@dataclass
class EvalRecord:
    """The compact metrics.jsonl form of one evaluation (per-prompt detail stays out of it), which
    the driver also reports to the adversary actor for its gdro_eval_* gauges and `gdro-ray status`."""

    label: str  # base, periodic or final
    step: int  # the index of the step this evaluation follows (-1: before training)
    steps_done: int
    weights_version: int
    k: int | None
    n_prompts: int | None
    metrics: dict[str, float]  # `<group>/<stat>` (gdro_ray/metrics/eval_names.py)
    eval_s: float
    best: dict | None = None  # with `checkpoint.keep_best`: this value, the best so far and its step

    def to_json(self) -> dict:
        """The metrics.jsonl line."""
        return {"type": EVAL_RECORD, "label": self.label, "step": self.step, "steps_done": self.steps_done,
                "weights_version": self.weights_version, "k": self.k, "n_prompts": self.n_prompts,
                "metrics": self.metrics, "eval_s": self.eval_s, "best": self.best}


@dataclass
class DriverReport:
    """What the driver tells the adversary actor after each step, for its gauges (gdro_ray/metrics/exporter.py)
    and `gdro-ray status`. None: not measured (the exporter leaves that gauge as it was)."""

    step_time_s: float | None = None
    tokens_per_s: float | None = None
    reward_mean: float | None = None  # a custom reward's own mean, else the adversary's success rate
    samplers: int | None = None  # live samplers
    stages: dict[str, float] = field(default_factory=dict)  # seconds per driver stage
    staleness: int | None = None
    requeued: int | None = None  # run totals: shards requeued, sampler restarts, reward timeouts
    restarts: int | None = None
    reward_timeouts: int | None = None
    learner_phases: list[dict] | None = None  # seconds per learner phase, per rank
    response_len_mean: float | None = None
    response_len_max: int | None = None
    truncation_rate: float | None = None
    entropy: float | None = None  # the policy's, per response token, before the update


@dataclass
class SampleResponse:
    """One shown response of a sample completion: its text (cut to a length), reward, advantage,
    token count, and whether it hit the token limit."""

    text: str
    reward: float
    advantage: float
    tokens: int
    truncated: bool

    def to_json(self) -> dict:
        return {"text": self.text, "reward": self.reward, "advantage": self.advantage, "tokens": self.tokens,
                "truncated": self.truncated}


@dataclass
class SampleRecord:
    """One sample completion (`gdro_ray.metrics.samples`): a prompt of a step's difficulty bin with some
    of its responses, which the driver writes to samples.jsonl and reports to the adversary actor."""

    step: int
    bin: str  # `bin<b>` (bin 0 the hardest) or `unseen`
    prompt_id: int
    prompt: str | None
    answer: str | None
    responses: list[SampleResponse] = field(default_factory=list)
    context: list[dict] | None = None  # a chat row's turns before the prompt (None: it has none)

    def to_json(self) -> dict:
        """The samples.jsonl line; "context" only for a row that has one, so plain rows read as before."""
        out = {"step": self.step, "bin": self.bin, "prompt_id": self.prompt_id, "prompt": self.prompt,
               "answer": self.answer, "responses": [r.to_json() for r in self.responses]}
        if self.context is not None:
            out["context"] = self.context
        return out


@dataclass
class StatusReport:
    """The adversary actor's answer to `gdro-ray status`: the run, the adversary's last step record,
    the driver's last report, the sampler count asked for, and the newest evaluation and samples."""

    run_dir: str = ""
    algorithm: str = ""
    metrics_address: str = ""  # empty: no /metrics endpoint
    record: dict | None = None  # `Adversary.observe`'s record of the last step (None: no step finished)
    driver: DriverReport | None = None
    queued_shards: int | None = None  # what the pool pushed last while a step sampled
    desired_samplers: int = 0
    weights_version: int = 0
    rollouts_total: int = 0
    eval: EvalRecord | None = None
    samples: list[SampleRecord] = field(default_factory=list)  # the newest sample step's


@dataclass
class StepRecord:
    """One step's line of metrics.jsonl (docs/metrics.md): the adversary's record of the step
    (bins, q, prices, budget), then what the driver measured. Built once, by `Trainer.run_step`."""

    adversary: dict  # `Adversary.observe`'s record, as the adversary returned it
    schedule_digest: str  # equal digests: identical prompts and rollout counts
    weights_version: int  # the learner's version after this step's update
    samplers: int  # live samplers
    tokens: int  # response tokens sampled
    staleness: int  # versions the learner had moved past when it trained on these rollouts
    pass_rate: float  # mean over prompts of the share of successful rollouts
    rollouts_sampled: int
    rollouts_trained: int
    prompts_trained: int
    response_len_mean: float = 0.0  # response tokens, over every rollout sampled
    response_len_max: int = 0
    truncation_rate: float = 0.0  # share of rollouts cut off at sampler.max_new_tokens
    learn: dict = field(default_factory=dict)  # the learner's statistics (`step_batch.learn_fields`)
    refill: dict = field(default_factory=dict)  # dynamic sampling's rounds (only with grpo.filter_all_equal)
    stale_resampled: bool = False  # off-policy: the rollouts were refused as too stale and drawn again
    shards_requeued: int = 0  # run totals of the sampler pool
    sampler_restarts: int = 0
    reward_timeouts: int = 0  # this step's
    reward_errors: int = 0
    custom_reward_mean: float | None = None  # a custom reward's own mean (the adversary's is then success)
    weight_sync: dict | None = None  # what the step's weight publish reported
    stage_time_s: dict[str, float] = field(default_factory=dict)  # seconds per driver stage
    step_time_s: float = 0.0
    samples: list[SampleRecord] = field(default_factory=list)  # sample completions of this step (samples.jsonl, not here)

    @property
    def step(self) -> int:
        return int(self.adversary["step"])

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / max(self.step_time_s, 1e-9)

    def to_json(self) -> dict:
        """The flat metrics.jsonl line."""
        out = dict(self.adversary)
        out.update(
            schedule_digest=self.schedule_digest, weights_version=self.weights_version, samplers=self.samplers,
            tokens=self.tokens, staleness=self.staleness, pass_rate=self.pass_rate,
            response_len_mean=self.response_len_mean, response_len_max=self.response_len_max,
            truncation_rate=self.truncation_rate, **self.learn, **self.refill,
            rollouts_sampled=self.rollouts_sampled, rollouts_trained=self.rollouts_trained,
            prompts_trained=self.prompts_trained, stale_resampled=self.stale_resampled,
            shards_requeued=self.shards_requeued, sampler_restarts=self.sampler_restarts,
            reward_timeouts=self.reward_timeouts, reward_errors=self.reward_errors)
        if self.custom_reward_mean is not None:
            out["reward_mean"] = self.custom_reward_mean
        out.update(weight_sync=self.weight_sync, stage_time_s={k: round(v, 4) for k, v in self.stage_time_s.items()},
                   step_time_s=round(self.step_time_s, 4), tokens_per_s=self.tokens_per_s)
        return out
