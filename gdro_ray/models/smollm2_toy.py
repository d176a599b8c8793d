"""`smollm2-toy`: SmolLM2-135M-Instruct after a short SFT on the toy task's answer format.

Why: zero-shot, SmolLM2-135M-Instruct answers ``Compute 553+130. Put the final answer in
\\boxed{}.`` with prose and wrong sums and almost never writes a box (1 right of 120 samples
on the toy tiers, benchmarks/RESULTS.md, "a real pretrained LLM that gets a reward"), so every reward and every GRPO
advantage is 0. A few dozen teacher-forced steps on the toy world's chat format
(``553+130=683\\boxed{683}<|im_end|>``, `toy_task.format_target`) teach the format; the
arithmetic stays the pretrained model's own, so it is right only part of the time and the
tiers differ (no-carry additions are easier than borrows and negative results). That partial
skill is what gives GRPO groups non-zero advantages.

Algorithm (the toy model's warm start, `sft.train_sft`, with other inputs):
1. Start from the converted SmolLM2 folder (`smollm2.convert_smollm2`; no hub access).
2. Draw ``steps × batch_size`` chat examples from the toy task's SFT bucket
   (`make_sft_set`, never in the RL pool or the held-out split), tier-balanced, every
   demonstration right; no bare-arithmetic stream.
3. AdamW with linear warm-up and cosine decay, loss on the response tokens only, one torch
   thread (`sft.PREPARE_THREADS`, the determinism argument of `prepare`).
4. Save model, tokenizer and generation config into ``cache_dir()/smollm2-toy-v1-s{seed}``
   through `atomic_dir`, with ``prepare.json`` (the recipe) written last; a later call with
   the same recipe returns the folder at once, a folder made by another recipe is rebuilt.

Measured (benchmarks/RESULTS.md, "a real pretrained LLM that gets a reward"; held-out 16 prompts per tier × 8 samples,
T = 1, vLLM): zero-shot pooled mean@8 0.004. A probe run of this recipe's kind (60 steps, lr
5e-5) already boxed 100% of its answers after 10 steps, with mean@8 0.20 / 0.14 / 0.00 / 0.02 /
0.19 / 0.00 per tier; this recipe (40 steps, loss 1.64 -> 0.15, 19.5 min on the busy 2-core
box) gives mean@8 0.54 / 0.43 / 0.02 / 0.01 / 0.22 / 0.00 (pass@8 0.81 / 0.81 / 0.13 / 0.06 /
0.63 / 0.00): SmolLM2 adds partly right but hardly subtracts, so the addition tiers carry the
advantages and the subtraction tiers stay near 0 (a longer SFT, or one that also teaches the
digit procedure, would be needed to lift them; not done).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from gdro_ray.models.sft import PREPARE_THREADS, SFTRecipe, build_lock, is_prepared, recipe_digest, torch_threads, train_sft
from gdro_ray.utils.io import atomic_dir, atomic_write_json

NAME = "smollm2-toy"
VERSION_TAG = "smollm2-toy-v1"

# Fields of SFTRecipe that only the tiny model reads (size, init_range, rope_theta) keep
# placeholder values here; `size` names the base model so the saved recipe says what it was.
SMOLLM2_TOY_SFT = SFTRecipe(
    size="smollm2-135m-instruct",
    steps=40,
    batch_size=8,  # 320 demonstrations in all, each seen once
    lr=5e-5,
    warmup=4,
    weight_decay=0.0,
    tier_mix=(1 / 6,) * 6,
    bare_batch=0,  # no bare-arithmetic stream: the point is the format, not more arithmetic
    bare_mix=(1 / 6,) * 6,
    right_rate=(1.0,) * 6,  # every demonstration right; the model's own arithmetic sets the difficulty
)


def model_dir(cache_dir: str | Path | None = None, seed: int = 0) -> Path:
    """Where the SFT'd SmolLM2 for `seed` lives (whether or not it exists yet)."""
    from gdro_ray.utils.env import cache_dir as default_cache

    root = Path(cache_dir) if cache_dir else default_cache()
    return root / f"{VERSION_TAG}-s{int(seed)}"


def prepare_smollm2_toy(cache_dir: str | Path | None = None, seed: int = 0, force: bool = False,
                        recipe: SFTRecipe | None = None, verbose: bool = False) -> Path:
    """Build (once) and return the format-SFT'd SmolLM2 folder; cached like the toy model."""
    recipe = recipe or SMOLLM2_TOY_SFT
    if recipe.bare_batch:
        raise ValueError("smollm2-toy: the recipe has no bare-arithmetic stream (bare_batch must be 0)")
    final = model_dir(cache_dir, seed)
    if recipe != SMOLLM2_TOY_SFT:
        final = final.with_name(final.name + f"-custom{recipe_digest(recipe)}")
    if is_prepared(final, recipe) and not force:
        return final
    with build_lock(final):
        if not force and is_prepared(final, recipe):
            return final
        return _build(final, recipe, seed, verbose)


def _build(final: Path, recipe: SFTRecipe, seed: int, verbose: bool) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from gdro_ray.models.smollm2 import convert_smollm2

    base = convert_smollm2(verbose=verbose)
    started = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(str(base))
    tok.padding_side = "right"  # encode_sft pads on the right itself; generation pads left
    with torch_threads(PREPARE_THREADS):
        model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
        torch.manual_seed(seed)
        losses = train_sft(model, tok, recipe, seed, log_every=5 if verbose else 0)
    with atomic_dir(final) as stage:
        model.save_pretrained(stage, safe_serialization=True)
        tok.save_pretrained(stage)
        GenerationConfig.from_pretrained(str(base)).save_pretrained(stage)
        meta = {"version": VERSION_TAG, "seed": seed, "base": str(base.name), "recipe": asdict(recipe),
                "first_loss": losses[0] if losses else None, "final_loss": losses[-1] if losses else None,
                "losses": [round(x, 5) for x in losses], "train_seconds": round(time.perf_counter() - started, 1),
                "torch": torch.__version__, "threads": PREPARE_THREADS}
        atomic_write_json(stage / "prepare.json", meta)  # last: its presence marks the folder complete
    return final


def recipe_of(path: Path) -> dict | None:
    """The recipe saved with a prepared folder, or None."""
    try:
        return json.loads((Path(path) / "prepare.json").read_text()).get("recipe")
    except (OSError, ValueError):
        return None
