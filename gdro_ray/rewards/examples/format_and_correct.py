r"""A format reward combined with correctness: ``reward.function=gdro_ray.rewards.examples.format_and_correct:format_and_correct_reward``.

Score per response = ``FORMAT_WEIGHT`` × well-formed + (1 − ``FORMAT_WEIGHT``) × correct, so it
stays in [0, 1] and only a correct answer reaches the default `reward.success_threshold` 0.5.

Well-formed: exactly one ``\boxed{...}`` that closes, with some reasoning before it
(``MIN_REASONING_CHARS``) and little after it (``MAX_TAIL_CHARS``). Correct: math-verify on the
last box (`gdro_ray.rewards.math_reward`), which also bounds its own time. The point of the
bonus: a model that never boxes gets no learning signal from correctness alone.
"""
from __future__ import annotations

from gdro_ray.rewards.math_reward import extract_boxed, math_reward

FORMAT_WEIGHT = 0.1
MIN_REASONING_CHARS = 1
MAX_TAIL_CHARS = 40


def is_well_formed(response: str) -> bool:
    """One closed box, something before it, at most a short tail after it."""
    if response.count("\\boxed") != 1 or extract_boxed(response) is None:
        return False
    head, _, _ = response.partition("\\boxed")
    close = response.rfind("}")
    return len(head.strip()) >= MIN_REASONING_CHARS and len(response[close + 1:].strip()) <= MAX_TAIL_CHARS


def format_and_correct_reward(prompts, responses, answers, metadata) -> list[float]:
    del prompts, metadata  # the score depends on the response and its reference only
    return [FORMAT_WEIGHT * is_well_formed(r) + (1.0 - FORMAT_WEIGHT) * math_reward(r, a)
            for r, a in zip(responses, answers)]
