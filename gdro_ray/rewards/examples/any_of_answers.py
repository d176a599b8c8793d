r"""A reward over several accepted answers: ``reward.function=gdro_ray.rewards.examples.any_of_answers:any_of_answers_reward``.

Some problems have more than one right answer in the form the data gives (``"C(10,5)"`` and
``"252"``; both roots of an equation; "Yes" spelt two ways). The accepted answers of a row come
from its ``answers`` column when that is a list (it arrives in `metadata`), else from the answer
string split on ``ANSWER_SEPARATOR``. A response scores 1 when its last ``\boxed{}`` equals any
of them under math-verify, else 0.
"""
from __future__ import annotations

from gdro_ray.rewards.math_reward import math_reward

ANSWER_SEPARATOR = "||"


def accepted_answers(answer: str, row: dict) -> list[str]:
    listed = row.get("answers") if isinstance(row, dict) else None
    if isinstance(listed, (list, tuple)) and listed:
        return [str(a).strip() for a in listed if str(a).strip()]
    return [a.strip() for a in str(answer).split(ANSWER_SEPARATOR) if a.strip()]


def any_of_answers_reward(prompts, responses, answers, metadata) -> list[float]:
    del prompts
    return [max((math_reward(r, alt) for alt in accepted_answers(a, m)), default=0.0)
            for r, a, m in zip(responses, answers, metadata)]
