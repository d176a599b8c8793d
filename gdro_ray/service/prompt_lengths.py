"""Prompts longer than the samplers can take, refused at start in one line.

A sampler's engine takes prompts of at most `max_model_len − sampler.max_new_tokens` tokens
(rendered as the engines render them: `prompt.*`, `gdro_ray/engines/prompt_format.py`); a longer one used to fail in
the middle of a step, deep inside a sampler actor, with a remote traceback. This runs in the
driver's set-up, before any actor starts.

Cost: one batched tokenizer call over every prompt, plus the exact chat-template rendering only
for prompts whose estimate (template overhead + plain token count) comes within a margin of the
limit: the 14.1k-prompt toy pool takes about 2 s on the 2 loaded development cores.
"""
from __future__ import annotations

from gdro_ray.engines.prompt_format import Prompt, PromptFormat, example_input
from gdro_ray.errors import UserError

# Rendering the message inside the template can merge or split a token or two at the seams;
# prompts estimated within this many tokens of the limit are rendered exactly.
_MARGIN = 32


def _overlong(tokenizer, prompts: list[Prompt], limit: int, fmt: PromptFormat) -> tuple[int, int] | None:
    """(index, tokens) of the longest prompt over `limit` tokens once rendered, or None.
    Conversations (chat rows with context) are always rendered: each turn adds its own markup."""
    if not prompts:
        return None
    overhead = len(fmt.render_ids(tokenizer, [""])[0])
    plain = tokenizer([p if isinstance(p, str) else fmt.text(p) for p in prompts], add_special_tokens=False)["input_ids"]
    worst = None
    for i, ids in enumerate(plain):
        if isinstance(prompts[i], str) and overhead + len(ids) < limit - _MARGIN:
            continue
        n = len(fmt.render_ids(tokenizer, [prompts[i]])[0])
        if n > limit and (worst is None or n > worst[1]):
            worst = (i, n)
    return worst


def check_prompt_lengths(model_path: str, named_sets: dict[str, list[dict]], max_model_len: int | None,
                         max_new_tokens: int, fmt: PromptFormat | None = None) -> None:
    """Raise a one-line UserError naming the data key and the prompt when one cannot be sampled."""
    if not max_model_len:  # the context is unknown: the engine sizes itself, nothing to check against
        return
    from transformers import AutoTokenizer

    limit = int(max_model_len) - int(max_new_tokens)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    for key, examples in named_sets.items():
        hit = _overlong(tokenizer, [example_input(e) for e in examples], limit, fmt or PromptFormat())
        if hit is not None:
            i, n = hit
            raise UserError(f"{key}: prompt {i} (id {examples[i].get('id', i)}) has {n} tokens; the samplers take at "
                            f"most {limit} (max_model_len {max_model_len} − sampler.max_new_tokens {max_new_tokens}): "
                            "shorten or drop it, or lower sampler.max_new_tokens")
