"""What the policy writes: a few prompts per difficulty bin with their responses, every N steps.

Every `metrics.samples_every` steps the driver picks, per bin, `metrics.samples_per_bin` of the
step's prompts (the first in slot order: the schedule is already a seeded draw) and up to
`metrics.samples_responses` of each prompt's responses, successes first, so a hard bin's rare
success is what shows. Only those groups' arrays are fetched and decoded. Each picked prompt
becomes a `SampleRecord` (`gdro_ray.protocol`), whose `to_json()` is one line of <run_dir>/samples.jsonl:

    {"step": 9, "bin": "bin0", "prompt_id": 412, "prompt": "...", "answer": "...",
     "responses": [{"text": "...", "reward": 1.0, "advantage": 1.6, "tokens": 57, "truncated": false}, ...]}

The same lines go to the loggers (TensorBoard text, a wandb table, an MLflow artifact), the
adversary actor (`gdro-ray status` shows the hardest bin's last sample) and `gdro-ray report`.
A resumed run drops the lines of the steps it redoes, as metrics.jsonl does.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gdro_ray.protocol import SampleRecord, SampleResponse
from gdro_ray.utils.jsonl_log import JsonlLog

FILE_NAME = "samples.jsonl"
TEXT_CHARS = 4000  # a response longer than this is cut in the sample (the run keeps the tokens)


def group_label(group: int, num_groups: int) -> str:
    """`bin<b>` (bin 0 the hardest) or `unseen` for the last group."""
    return "unseen" if group == num_groups - 1 else f"bin{group}"


def pick_samples(group_ids: Sequence[int], rewards: Sequence[Sequence[float]], per_bin: int,
                 max_responses: int) -> list[tuple[int, list[int]]]:
    """(slot, response indices) to show: per group the first `per_bin` slots, and of each slot
    up to `max_responses` responses, the rewarded ones first (each kept in its own order)."""
    taken: dict[int, int] = {}
    out = []
    for slot, g in enumerate(int(x) for x in group_ids):
        if taken.get(g, 0) >= per_bin:
            continue
        taken[g] = taken.get(g, 0) + 1
        r = np.asarray(rewards[slot], dtype=float)
        order = sorted(range(r.size), key=lambda j: (not r[j] > 0, j))
        out.append((slot, order[:max_responses]))
    return out


def sample_record(step: int, label: str, prompt_id: int, example: dict, texts: Sequence[str],
                  rewards: Sequence[float], advantages: Sequence[float], lengths: Sequence[int],
                  max_new_tokens: int) -> SampleRecord:
    """One sample completion (its `to_json()` is the samples.jsonl line of the module docstring);
    a chat row's earlier turns as its context."""
    context = None
    if example.get("context"):
        context = [dict(t, content=t["content"][:TEXT_CHARS]) for t in example["context"]]
    return SampleRecord(
        step=int(step), bin=label, prompt_id=int(prompt_id), prompt=example.get("prompt"),
        answer=example.get("answer"), context=context,
        responses=[SampleResponse(text=t[:TEXT_CHARS], reward=float(r), advantage=round(float(a), 4), tokens=int(n),
                                  truncated=int(n) >= max_new_tokens)
                   for t, r, a, n in zip(texts, rewards, advantages, lengths)])


class SampleLog(JsonlLog):
    """<run_dir>/samples.jsonl: extended per sample step with the records' JSON; `trim` drops the
    steps a resume redoes. Its readers here take the lines as dicts, as read back from the file."""

    def __init__(self, run_dir: str | Path):
        super().__init__(Path(run_dir) / FILE_NAME)


def hardest_sample(records: list[dict]) -> dict | None:
    """Of the newest sample step, the sample of the hardest bin that has one (`unseen` last)."""
    if not records:
        return None
    last = max(int(r["step"]) for r in records)
    newest = [r for r in records if int(r["step"]) == last]
    return min(newest, key=lambda r: (r["bin"] == "unseen", int(r["bin"][3:]) if r["bin"] != "unseen" else 0))


def _short(text: str, chars: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= chars else text[: chars - 1] + "…"


def render_sample(rec: dict, chars: int = 300) -> str:
    """A sample as plain text lines: the prompt, then each response with its reward."""
    lines = [f"step {rec['step'] + 1}, {rec['bin']}, prompt {rec['prompt_id']}: {_short(rec['prompt'], chars)}"]
    for r in rec["responses"]:
        cut = ", cut at the token limit" if r.get("truncated") else ""
        lines.append(f"  reward {r['reward']:g} (advantage {r['advantage']:+.2f}, {r['tokens']} tokens{cut}): "
                     f"{_short(r['text'], chars)}")
    return "\n".join(lines)


def samples_markdown(records: list[dict], chars: int = 600) -> str:
    """The newest sample step, one block per bin (hardest first), for reports and TensorBoard."""
    if not records:
        return ""
    last = max(int(r["step"]) for r in records)
    newest = sorted((r for r in records if int(r["step"]) == last),
                    key=lambda r: (r["bin"] == "unseen", int(r["bin"][3:]) if r["bin"] != "unseen" else 0))
    blocks = [f"Samples after step {last + 1} (hardest bin first; rewarded responses first):", ""]
    for rec in newest:
        blocks += ["```", render_sample(rec, chars), "```", ""]
    return "\n".join(blocks)
