"""`gdro-ray prepare`: build the tiny toy model and warm-start it by supervised training.

Algorithm:
1. Build the character tokenizer and an untied Qwen3 (`tiny.py`, 328k parameters), seeded.
2. Draw two warm-start streams from the toy task's SFT bucket (`make_sft_set`), which never
   overlaps the RL training pool or the held-out split: *chat* examples (the real format:
   chat-templated prompt → ``format_target`` + ``<|im_end|>``) and *bare* arithmetic
   (``347+251=598\\boxed{598}`` with no prompt, 4x shorter, so cheap extra practice of the
   same digit skills). Every example is used once. Bare examples are always right; a chat
   example of tier t shows the right answer with probability `right_rate[t]` and otherwise
   the systematic slip (last digit + 1, `toy_task.slip`): the world's difficulty mechanism.
3. Each step sums the token-mean loss of 32 chat and 64 bare examples (teacher forcing; loss
   on the response only — prompt, operands of bare examples and padding are masked; right
   padding), AdamW (lr 3e-3, β2 0.98, wd 0.01) with linear warm-up and cosine decay.
4. Save to ``cache_dir()/toy-model-v2-s{seed}`` through `atomic_dir` (a crash leaves no
   half-written model). A later call with the same recipe does nothing; a cache made by
   another recipe (older calibration) is rebuilt.

Determinism: the data come from the task's own seeded RNG, the init from `torch.manual_seed`
inside a forked RNG, the batch order is fixed; there is no dropout. Training runs on
`PREPARE_THREADS` = 1 torch thread (restored afterwards), set through `torch._C` so that an
in-process vLLM engine that ran earlier (it disables `torch.set_num_threads` process-wide)
cannot change it; this thread count is what the determinism rests on: CPU kernels may order float
reductions differently with another thread count, and with 2 threads on a busy 2-core
machine a step was 10x slower (OpenMP threads spin against other processes). Two prepares
on the same CPU type and torch build give bit-identical weights (tested); another ISA or
torch version may differ in the last bits and so, through the phase transition below, in
the skill profile.

Calibration (what decides the numbers): small transformers learn digit arithmetic with a
plateau, then a fast transition once attention finds the digit offsets (RoPE base 100 ends
it earliest, at ~400-900 steps here). World v1 (900 steps, always-right demonstrations, the
hard tiers chain 47+8-6 and mul 47*6) left the hard tiers without the skill (near-greedy
mean@8 0.09 and 0.01), and RL could not move held-out scores. World v2 asks
for a skill the model can learn in 1,200 steps on every tier and puts the difficulty into
the *choice*: per-tier right rates 0.75/0.5/0.3/0.15/0.05/0.03 in the chat demonstrations.
Probe measurements (`benchmarks/world_probe.py`, seed 0: plain-PyTorch GRPO, 40 steps of
64 prompts × 8 rollouts from the heavy-tailed pool, lr 1e-4, no KL, T = 1; held-out 50
prompts per tier, 8 samples at T = 1; pooled = mean over tiers):

    world                                  pooled mean@8        pooled pass@8
    v1 + 400 steps of slip demos (old tiers)  0.220 -> 0.351 (+60%)  0.573 -> 0.640
    v2 (this recipe)                       0.187 -> 0.350 (+87%)   0.503 -> 0.630

v2 per tier, base -> after 40 GRPO steps (mean@8 / pass@8):

    0 add3        0.492 / 0.920  ->  0.700 / 0.960
    1 add_carry   0.333 / 0.860  ->  0.650 / 0.960
    2 sub3        0.138 / 0.520  ->  0.412 / 0.780
    3 sub_borrow  0.113 / 0.380  ->  0.240 / 0.620
    4 carry_out   0.015 / 0.100  ->  0.065 / 0.240
    5 sub_neg     0.030 / 0.240  ->  0.033 / 0.220

What the base model holds (T = 1, 40 prompts per tier: share of samples right / slipped):
add3 0.51/0.21, add_carry 0.30/0.36, sub3 0.18/0.22, sub_borrow 0.09/0.14, carry_out
0.03/0.13, sub_neg 0.03/0.02. So on carry_out the right procedure is rare but present and
RL raises it; sub_neg's arithmetic itself is still weak after 1,200 steps (a tier where
RL gains little in 40 steps at its 4% share of the pool). The evaluation therefore runs at
T = 1 (the toy preset): at T = 0.6 with top-p 0.8 a right answer held with probability 0.05
is cut off. Wall time: measured 10-11 min for the 1,200 steps while other jobs held the 2
cores at load 6; at v1's idle-machine rate (0.16 s/step, 141 s for 900 steps) that is ~3.2 min.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import torch

from gdro_ray.data import toy_task
from gdro_ray.models import tiny
from gdro_ray.models.sft import (
    PREPARE_THREADS,
    SFTRecipe,
    build_lock,
    is_prepared,
    recipe_digest,
    torch_threads,
    train_sft,
)
from gdro_ray.utils.io import atomic_dir, atomic_write_json

VERSION_TAG = "toy-model-v2"
DEFAULT_SFT = SFTRecipe()


def model_dir(cache_dir: str | Path | None = None, seed: int = 0) -> Path:
    """Where the prepared model for `seed` lives (whether or not it exists yet)."""
    from gdro_ray.utils.env import cache_dir as default_cache

    root = Path(cache_dir) if cache_dir else default_cache()
    return root / f"{VERSION_TAG}-s{int(seed)}"


def prepare_toy_model(cache_dir: str | Path | None = None, seed: int = 0, force: bool = False,
                      sft_steps: int | None = None, recipe: SFTRecipe | None = None, verbose: bool = False) -> Path:
    """Build, warm-start and cache the toy model; a no-op when already cached (unless `force`).

    `sft_steps` overrides the recipe's step count (tests use a tiny budget); a non-default
    recipe is cached under a name that says so, never under the default's name.
    """
    recipe = recipe or DEFAULT_SFT
    if sft_steps is not None:
        recipe = SFTRecipe(**{**asdict(recipe), "steps": int(sft_steps)})
    final = model_dir(cache_dir, seed)
    if recipe != DEFAULT_SFT:
        final = final.with_name(final.name + f"-custom{recipe_digest(recipe)}")
    if is_prepared(final, recipe) and not force:
        return final
    with build_lock(final):
        if not force and is_prepared(final, recipe):  # built by another process while we waited
            return final
        return _build(final, recipe, seed, verbose)


def _build(final: Path, recipe: SFTRecipe, seed: int, verbose: bool) -> Path:
    started = time.perf_counter()
    with torch_threads(PREPARE_THREADS):
        tok = tiny.build_tokenizer()
        model = tiny.build_model(recipe.size, seed=seed, tokenizer=tok, init_range=recipe.init_range,
                                 rope_theta=recipe.rope_theta)
        torch.manual_seed(seed)
        losses = train_sft(model, tok, recipe, seed, log_every=100 if verbose else 0)
    with atomic_dir(final) as stage:
        tiny.save(model, tok, stage)
        meta = {
            "version": VERSION_TAG, "seed": seed, "recipe": asdict(recipe),
            "final_loss": losses[-1] if losses else None, "train_seconds": round(time.perf_counter() - started, 1),
            "torch": torch.__version__, "threads": PREPARE_THREADS,
        }
        atomic_write_json(stage / "prepare.json", meta)
    return final


def _reward_fn():
    """The project's verifier when present, else the exact-integer check (toy answers are integers)."""
    try:
        from gdro_ray.rewards.math_reward import math_reward
    except ImportError:
        return toy_task.integer_reward
    return math_reward


@torch.no_grad()
def sample_responses(model, tok, prompts: list[str], k: int, temperature: float = 1.0,
                     max_new_tokens: int = 28, seed: int = 0, batch_prompts: int = 64) -> list[list[str]]:
    """k sampled responses per prompt with HF generate (left padded, batched); greedy when temperature == 0."""
    out: list[list[str]] = []
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False) for p in prompts]
    sampling = temperature > 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, len(texts), batch_prompts):
            enc = tok(texts[start : start + batch_prompts], add_special_tokens=False, padding=True, return_tensors="pt")
            mode = ({"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0, "num_return_sequences": k}
                    if sampling else {"do_sample": False, "temperature": None, "top_k": None, "top_p": None})
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, eos_token_id=tok.eos_token_id,
                                 pad_token_id=tok.pad_token_id, **mode)
            decoded = tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            per = k if sampling else 1
            out += [decoded[i : i + per] for i in range(0, len(decoded), per)]
    return out


def per_tier_pass(examples: list[dict], responses: list[list[str]], reward=None) -> dict:
    """Per tier and pooled: pass@1 (mean correctness) and pass@k (any correct among the k)."""
    reward = reward or _reward_fn()
    rows: dict = {}
    for ex, resp in zip(examples, responses):
        scores = [float(reward(r, ex["answer"]) > 0) for r in resp]
        rows.setdefault(ex["tier"], []).append((sum(scores) / len(scores), float(any(scores))))
    table = {t: {"n": len(v), "pass@1": sum(a for a, _ in v) / len(v), "pass@k": sum(b for _, b in v) / len(v)} for t, v in sorted(rows.items())}
    # pooled over tiers with equal weight (the held-out split is balanced)
    table["pooled"] = {k: sum(table[t][k] for t in rows) / len(rows) for k in ("pass@1", "pass@k")} if rows else {}
    return table


def evaluate_base(model_path: str | Path, per_tier: int = 40, k: int = 8, temperature: float = 1.0,
                  max_new_tokens: int = 28, seed: int = 0) -> dict:
    """Per-tier pass@1 / pass@k of a prepared model on the held-out toy split (HF generate)."""
    model, tok = tiny.load(model_path)
    model.eval()
    split = toy_task.make_eval_split(per_tier=per_tier, seed=0)
    with torch_threads(PREPARE_THREADS):
        responses = sample_responses(model, tok, [e["prompt"] for e in split], k=k, temperature=temperature,
                                     max_new_tokens=max_new_tokens, seed=seed)
    table = per_tier_pass(split, responses)
    return {"k": k, "temperature": temperature, "per_tier": per_tier, "max_new_tokens": max_new_tokens,
            "tiers": {str(t): v for t, v in table.items()}}


def format_table(result: dict) -> str:
    k = result["k"]
    lines = [f"{'tier':<14}{'n':>5}{'pass@1':>9}{f'pass@{k}':>9}"]
    for t, row in result["tiers"].items():
        if t == "pooled":
            continue
        name = f"{t} {toy_task.TIER_NAMES[int(t)]}"
        lines.append(f"{name:<14}{row['n']:>5}{row['pass@1']:>9.3f}{row['pass@k']:>9.3f}")
    pooled = result["tiers"]["pooled"]
    lines.append(f"{'pooled':<14}{'':>5}{pooled['pass@1']:>9.3f}{pooled['pass@k']:>9.3f}")
    return "\n".join(lines)
