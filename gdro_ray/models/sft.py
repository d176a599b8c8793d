"""Supervised warm start shared by the toy model (`prepare.py`) and smollm2-toy (`smollm2_toy.py`).

- `SFTRecipe`: every input of the warm start; saved with the model, so a cache made by another
  recipe is rebuilt, not reused (`is_prepared`).
- `encode_sft` / `train_sft`: teacher forcing on the toy task's chat format (and, for the tiny
  model, bare arithmetic), loss on the response tokens only, AdamW with warm-up and cosine decay.
- `build_lock`: one builder per cache entry across processes (samplers and learners may all ask).
- `torch_threads(PREPARE_THREADS)`: one torch thread, set so that an in-process vLLM engine cannot
  change it; the bit-identical weights of two prepares rest on it (`prepare.py` says why).
"""
from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from gdro_ray.data import toy_task

# Not torch.set_num_threads: an in-process vLLM engine turns it into a no-op for the rest of the
# process, and the weights would then depend on what ran before (gdro_ray/utils/threads.py).
from gdro_ray.utils.threads import torch_threads  # noqa: F401 (the thread setting the builders use)

PREPARE_THREADS = 1


@dataclass(frozen=True)
class SFTRecipe:
    """The warm-start recipe; every field changes the result (and is saved with the model)."""

    size: str = "tiny"
    steps: int = 1200
    batch_size: int = 32  # chat examples per step
    lr: float = 3e-3
    warmup: int = 50
    weight_decay: float = 0.01
    init_range: float = 0.02
    # RoPE base: contexts are < 128 tokens, and with the usual 10^4 most rotary frequencies
    # are too slow to tell offset 7 from 6; 100 ended the digit-alignment plateau earliest (measured)
    rope_theta: float = 100.0
    # share of each tier in the chat stream (steps × batch_size fresh examples, each seen once)
    tier_mix: tuple[float, ...] = (0.20, 0.20, 0.15, 0.15, 0.15, 0.15)
    # bare-arithmetic examples per step beside the chat batch (``347+251=598\\boxed{598}``
    # without the chat prompt: 4x shorter, so cheap extra practice of the same skill); always right
    bare_batch: int = 64
    bare_mix: tuple[float, ...] = (0.15, 0.15, 0.15, 0.15, 0.20, 0.20)
    # per tier, the share of chat demonstrations that show the right answer; the rest show the
    # systematic slip (last digit + 1, `toy_task.slip`). The difficulty knob of the world: the
    # model holds the right procedure (bare practice is always right) but picks it in the chat
    # format only this often, so RL has a tier-wide behaviour to strengthen.
    right_rate: tuple[float, ...] = (0.75, 0.5, 0.3, 0.15, 0.05, 0.03)


def is_prepared(path: Path, recipe: SFTRecipe | None = None) -> bool:
    """A complete prepared model is at `path` (made with `recipe`, when one is given).

    Checking the recipe means a cache left by an older calibration is rebuilt, not reused.
    """
    meta_file = path / "prepare.json"
    if not (meta_file.is_file() and (path / "model.safetensors").is_file()):
        return False
    if recipe is None:
        return True
    try:
        saved = json.loads(meta_file.read_text()).get("recipe")
    except (OSError, ValueError):
        return False
    return saved == json.loads(json.dumps(asdict(recipe)))


def encode_sft(tok, examples: list[dict], bare: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, labels), right padded; labels are -100 outside the target.

    Chat form: the chat-templated prompt, then ``format_target + <|im_end|>`` (the labelled
    part). Bare form (the arithmetic "pretraining" phase): just the target text, labelled
    from the result on (the operands before '=' are random, there is nothing to learn).
    """
    if bare:
        targets = [toy_task.format_target(e) for e in examples]
        cut = [t.index("=") + 1 for t in targets]
        prefixes = [t[:c] for t, c in zip(targets, cut)]
        responses = [t[c:] + tok.eos_token for t, c in zip(targets, cut)]
    else:
        prefixes = [tok.apply_chat_template([{"role": "user", "content": e["prompt"]}], add_generation_prompt=True, tokenize=False) for e in examples]
        responses = [toy_task.format_target(e) + tok.eos_token for e in examples]
    p_ids = tok(prefixes, add_special_tokens=False)["input_ids"]
    r_ids = tok(responses, add_special_tokens=False)["input_ids"]
    width = max(len(p) + len(r) for p, r in zip(p_ids, r_ids))
    ids = torch.full((len(examples), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for row, (p, r) in enumerate(zip(p_ids, r_ids)):
        seq = p + r
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
        labels[row, len(p) : len(seq)] = torch.tensor(r)
    return ids, mask, labels


def _lr_at(step: int, recipe: SFTRecipe) -> float:
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    progress = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
    return recipe.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def _streams(tok, recipe: SFTRecipe, seed: int):
    """(chat tensors, chat batch), (bare tensors, bare batch): each example used once."""
    out = []
    for name, batch, mix in (("chat", recipe.batch_size, recipe.tier_mix), ("bare", recipe.bare_batch, recipe.bare_mix)):
        if batch <= 0:
            out.append((None, 0))
            continue
        rates = recipe.right_rate if name == "chat" else None
        examples = toy_task.make_sft_set(toy_task.tier_counts(recipe.steps * batch, mix), seed=seed, stream=name,
                                         right_rate=rates)
        out.append((encode_sft(tok, examples, bare=name == "bare"), batch))
    return out


def train_sft(model, tok, recipe: SFTRecipe, seed: int, log_every: int = 0, on_step=None) -> list[float]:
    """Teacher-forced warm start in place; returns every step's (chat + bare) loss.

    Each step sums the token-mean loss of a chat batch and of a bare-arithmetic batch.
    Every example is used once; `make_sft_set` already shuffled them, so batch i is rows
    [i·B, (i+1)·B) of its stream: no other randomness is involved.
    """
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=recipe.lr, betas=(0.9, 0.98),
    )
    streams = _streams(tok, recipe, seed)
    model.train()
    losses: list[float] = []
    started = time.perf_counter()
    for step in range(recipe.steps):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, recipe)
        total = 0.0
        for tensors, batch in streams:
            if tensors is None:
                continue
            ids, mask, labels = tensors
            rows = slice(step * batch, (step + 1) * batch)
            width = int(mask[rows].sum(1).max())  # drop all-padding columns (right padding)
            loss = model(input_ids=ids[rows, :width], attention_mask=mask[rows, :width], labels=labels[rows, :width]).loss
            loss.backward()
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(total)
        if on_step is not None:
            on_step(step, model)
        if log_every and (step % log_every == 0 or step == recipe.steps - 1):
            print(f"  sft step {step + 1:5d}/{recipe.steps}  loss {total:.4f}  {time.perf_counter() - started:5.0f} s", flush=True)
    model.eval()
    return losses


@contextmanager
def build_lock(final: Path):
    """One builder per cache entry across processes (samplers and learners may all ask)."""
    import fcntl

    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f".{final.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def recipe_digest(recipe: SFTRecipe) -> str:
    import hashlib

    return hashlib.blake2b(json.dumps(asdict(recipe), sort_keys=True).encode(), digest_size=4).hexdigest()
