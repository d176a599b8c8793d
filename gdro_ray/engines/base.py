"""The generation-engine interface shared by the vLLM and transformers engines.

An engine turns raw user messages into rollouts. It owns the formatting (`prompt_format.py`):
by default each prompt becomes `[{"role": "user", "content": prompt}]` rendered with the
tokenizer's chat template (`add_generation_prompt=True`), with the run's system turn and template
arguments when `prompt.*` sets them, so samplers, the learner and evaluation all see the same
prompt token ids (`prompt_token_ids`).

Conventions both engines follow, so that they are interchangeable:
- `generate` returns, per prompt, exactly `n[i]` rollouts (n varies per prompt: Rollout-GDRO).
- `Rollout.token_ids` are the sampled tokens, including the end-of-sequence token when the
  rollout stopped on it (the learner must see that token to learn to stop); `text` is the
  decoded response without special tokens.
- `Rollout.logprobs[j]` is the log-probability of `token_ids[j]` under the model's raw
  next-token distribution (log-softmax of the logits: temperature 1, no top-p filtering).
  That is what a learner recomputes; samplers with temperature != 1 should not be read as
  the behaviour policy's exact probabilities.
- `finish_reason` is "stop" (end-of-sequence) or "length" (hit `max_new_tokens`).
- `update_weights(blob, version)` takes the safetensors bytes of the full state dict; once
  it returns, every later `generate` uses exactly those weights (no mixing of versions).
- `temperature == 0` means greedy decoding.
- Collective weight transport (both engines; not part of the `Engine` protocol):
  `update_weights_from_tensors(named, version)` loads (name, tensor) pairs;
  `join_weight_group(spec)` / `receive_weights(layout, version)` / `leave_weight_group()` make
  the engine a member of learner rank 0's broadcast group (`gdro_ray.transfer.weight_group`);
  `weights_checksum()` sums the parameters (a probe that an update landed).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from gdro_ray.engines.prompt_format import Prompt, PromptFormat


@dataclass
class Rollout:
    """One sampled response to one prompt."""

    prompt_index: int
    token_ids: list[int]
    text: str
    logprobs: list[float]
    finish_reason: str


@runtime_checkable
class Engine(Protocol):
    """What samplers and evaluation need from a generation backend."""

    def generate(
        self,
        prompts: list[Prompt],
        n: list[int],
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int | None = None,
    ) -> list[list[Rollout]]: ...

    def prompt_token_ids(self, prompts: list[Prompt]) -> list[list[int]]: ...

    def update_weights(self, blob: bytes, version: int) -> None: ...

    @property
    def weights_version(self) -> int: ...

    def close(self) -> None: ...


class ChatEngineBase:
    """What every engine shares: the weights version it holds and chat-rendered prompt ids.

    Subclasses set `self.tokenizer` and `self._version` (0 for the weights loaded from disk).
    """

    tokenizer: object
    _version: int = 0
    prompt_format: PromptFormat = PromptFormat()  # how prompts are rendered (`prompt.*`)

    @property
    def weights_version(self) -> int:
        return self._version

    def prompt_token_ids(self, prompts: list[Prompt]) -> list[list[int]]:
        return self.prompt_format.render_ids(self.tokenizer, prompts)


def check_generate_args(prompts: list[Prompt], n: list[int], max_new_tokens: int, temperature: float, top_p: float) -> None:
    """Reject malformed requests early with a message that names the argument."""
    if len(prompts) != len(n):
        raise ValueError(f"generate: {len(prompts)} prompts but {len(n)} rollout counts")
    if any(int(k) < 0 for k in n):
        raise ValueError(f"generate: rollout counts must be >= 0, got {min(n)}")
    if max_new_tokens < 1:
        raise ValueError(f"generate: max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"generate: temperature must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"generate: top_p must be in (0, 1], got {top_p}")


def chat_prompt_ids(tokenizer, prompts: list[str]) -> list[list[int]]:
    """Token ids of each raw user message rendered with the tokenizer's chat template."""
    return PromptFormat().render_ids(tokenizer, prompts)


def stop_token_ids(tokenizer, generation_config=None) -> set[int]:
    """End-of-sequence ids: the tokenizer's eos plus those of the model's generation config."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    eos = getattr(generation_config, "eos_token_id", None) if generation_config is not None else None
    if isinstance(eos, int):
        ids.add(eos)
    elif eos:
        ids.update(int(e) for e in eos)
    return ids
