r"""Verifier reward: is the last ``\boxed{...}`` of a response mathematically equal to the answer?

Algorithm, per call:

1. ``extract_boxed`` scans the response left to right for ``\boxed{``, matches braces (escaped
   ``\{``/``\}`` do not count) and skips boxes nested inside an earlier box, so the *last
   top-level* box wins. A box whose whole content is another box is unwrapped. A final box that
   never closes (a truncated generation) means "no answer". Only the last ``MAX_RESPONSE_CHARS``
   characters are scanned, so the scan is linear and bounded.
2. Caps: a box longer than ``MAX_BOX_CHARS`` (or an answer longer than that) scores 0 without
   parsing; long LaTeX is where sympy blows up.
3. Fast path, no sympy: equal after removing whitespace and thin spaces -> 1; two plain
   decimal numbers compared exactly as fractions (equal -> 1; two different integers -> 0).
   On the toy task and DAPO's integer answers most calls end here.
4. Slow path (`verify.py`), math-verify ``parse`` + ``verify`` (gold wrapped as ``$answer$``),
   with one time limit ``timeout_s`` for parse and verify together:
   - on the main thread: in process, under a ``SIGALRM`` interval timer (float seconds). The
     timer is re-armed every 50 ms after it first fires, so a library ``except:`` that swallows
     the interrupt cannot outrun it. math-verify's own alarms are switched off
     (``parsing_timeout=None``, ``timeout_seconds=None``) because they are whole seconds, apply
     per sub-step (a call could take several limits), swallow the timeout (so it cannot be
     counted) and would overwrite this timer.
   - on any other thread (signals only reach the main thread, and math-verify refuses threads
     when its alarms are on): a small pool of worker subprocesses (``gdro_ray.rewards._worker_pool``,
     started without the current folder on their path) that run step 4 on *their* main thread;
     the caller waits ``timeout_s + _worker_pool.WORKER_GRACE_S`` and SIGKILLs a worker that does not answer
     (C code that never checks signals), then starts a fresh one on the next call.
   Set ``GDRO_RAY_REWARD_BACKEND=subprocess`` to use the workers on the main thread too.
5. Definitive comparisons are memoised (LRU): the rollouts of one prompt repeat final answers.

Never raises on any response or answer string; timeouts and errors score 0 (or -1 with
``scale="pm1"``) and are counted in ``reward_stats()``.
"""
from __future__ import annotations

import os
import re
import signal
import threading
from collections import OrderedDict
from collections.abc import Sequence
from fractions import Fraction

from gdro_ray.rewards.verify import BOX_TOKEN, compare_with_alarm, count, reset_counts, reward_stats  # noqa: F401 (reward_stats: this module's API)

MAX_RESPONSE_CHARS = 200_000   # only the tail of a longer response is scanned for boxes
MAX_BOX_CHARS = 1_000          # a longer box (or answer) is not parsed: scores 0
MEMO_SIZE = 8192

_memo: OrderedDict[tuple[str, str], bool] = OrderedDict()
_memo_lock = threading.Lock()


def reset_reward_stats() -> None:
    reset_counts()
    with _memo_lock:
        _memo.clear()


# ---------------------------------------------------------------------------- extraction
def _match_brace(text: str, open_at: int) -> int:
    """Index of the `}` closing the `{` at `open_at`, or -1 when it never closes."""
    depth = 0
    i = open_at
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2  # an escaped character (\{, \}, \\) never opens or closes a group
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _unwrap_box(content: str) -> str:
    """`\\boxed{\\boxed{x}}` -> `x`: strip boxes that make up the whole content."""
    while True:
        s = content.strip()
        if not s.startswith(BOX_TOKEN):
            return s
        brace = s.find("{", len(BOX_TOKEN))
        if brace < 0 or s[len(BOX_TOKEN):brace].strip():
            return s
        end = _match_brace(s, brace)
        if end != len(s) - 1:
            return s
        content = s[brace + 1:end]


def extract_boxed(text: str) -> str | None:
    r"""Content of the last top-level ``\boxed{...}`` of `text` (stripped), or None.

    Returns None when there is no box or the last box never closes. Never raises."""
    if not isinstance(text, str):
        return None
    if len(text) > MAX_RESPONSE_CHARS:
        text = text[-MAX_RESPONSE_CHARS:]
    last: str | None = None
    pos = 0
    while True:
        at = text.find(BOX_TOKEN, pos)
        if at < 0:
            break
        after = at + len(BOX_TOKEN)
        brace = after
        while brace < len(text) and text[brace] in " \t":
            brace += 1
        if brace >= len(text) or text[brace] != "{":
            pos = after  # `\boxed` without a group (e.g. `\boxed 5`) is not an answer box
            continue
        end = _match_brace(text, brace)
        if end < 0:
            return None  # the final answer box is unfinished: no answer
        last = text[brace + 1:end]
        pos = end + 1  # boxes inside this one are not top-level
    return None if last is None else _unwrap_box(last)


# ---------------------------------------------------------------------------- fast path
_SPACES = re.compile(r"\s+|\\[,;:! ]|\\(?:left|right)(?=[()\[\]|.])")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")


def _normalise(s: str) -> str:
    s = _SPACES.sub("", s.strip().strip("$"))
    return s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").rstrip(".")


def _fast_compare(pred: str, gold: str) -> bool | None:
    """True/False when decidable without sympy, else None."""
    p, g = _normalise(pred), _normalise(gold)
    if p and p == g:
        return True
    if _PLAIN_NUMBER.fullmatch(p) and _PLAIN_NUMBER.fullmatch(g):
        if Fraction(p) == Fraction(g):
            return True
        if "." not in p and "." not in g:
            return False  # two different integers: no rounding question to leave to sympy
    return None


# ---------------------------------------------------------------------------- slow path
def _use_in_process() -> bool:
    if os.environ.get("GDRO_RAY_REWARD_BACKEND", "auto") == "subprocess":
        return False
    return threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")


def _slow_compare(pred: str, gold: str, timeout_s: float) -> str:
    if _use_in_process():
        return compare_with_alarm(pred, gold, timeout_s)
    from gdro_ray.rewards import _worker_pool

    return _worker_pool.compare(pred, gold, timeout_s)


# ---------------------------------------------------------------------------- public API
def _memo_get(key: tuple[str, str]) -> bool | None:
    with _memo_lock:
        hit = _memo.get(key)
        if hit is not None:
            _memo.move_to_end(key)
        return hit


def _memo_put(key: tuple[str, str], value: bool) -> None:
    with _memo_lock:
        _memo[key] = value
        if len(_memo) > MEMO_SIZE:
            _memo.popitem(last=False)


def _is_equal(pred: str, gold: str, timeout_s: float) -> bool:
    fast = _fast_compare(pred, gold)
    if fast is not None:
        count("fast_path")
        return fast
    key = (pred, gold)
    hit = _memo_get(key)
    if hit is not None:
        count("memo_hits")
        return hit
    count("slow_path")
    outcome = _slow_compare(pred, gold, timeout_s)
    if outcome == "timeout":
        count("timeouts")
        return False
    if outcome == "error":
        count("errors")
        return False
    _memo_put(key, outcome == "1")
    return outcome == "1"


def math_reward(response: str, answer: str, scale: str = "01", timeout_s: float = 2.0) -> float:
    r"""1.0 when the last top-level ``\boxed{}`` of `response` equals `answer`, else 0.0.

    `scale="pm1"` maps to +1/-1. `timeout_s` bounds the symbolic comparison. Never raises."""
    hit, miss = (1.0, -1.0) if scale == "pm1" else (1.0, 0.0)
    count("calls")
    try:
        if not isinstance(answer, str):
            answer = "" if answer is None else str(answer)
        gold = extract_boxed(answer) or answer.strip()
        pred = extract_boxed(response)
        if pred is None:
            count("no_box")
            return miss
        if not pred or not gold:  # an empty box, or an example without an answer
            count("no_box" if not pred else "errors")
            return miss
        if len(pred) > MAX_BOX_CHARS or len(gold) > MAX_BOX_CHARS:
            count("too_long")
            return miss
        if _is_equal(pred, gold, float(timeout_s)):
            count("correct")
            return hit
        return miss
    except Exception:  # never let a reward bug kill a sampler
        count("errors")
        return miss


def batch_math_reward(responses: Sequence[str], answers: Sequence[str], scale: str = "01",
                      timeout_s: float = 2.0) -> list[float]:
    """`math_reward` over pairs; `responses` and `answers` must have the same length."""
    if len(responses) != len(answers):
        raise ValueError(f"batch_math_reward: {len(responses)} responses but {len(answers)} answers")
    return [math_reward(r, a, scale=scale, timeout_s=timeout_s) for r, a in zip(responses, answers)]
