"""The slow path of the verifier: math-verify under a time limit, and the reward's counters.

Shared by the in-process reward (`math_reward.py`, on the main thread) and the worker
subprocesses (`_worker_pool.py`, each on its own main thread), so neither imports the other for it.

`compare_with_alarm` runs ``parse`` + ``verify`` under a SIGALRM interval timer (float seconds),
re-armed every 50 ms after it first fires so that a library ``except:`` swallowing the interrupt
cannot outrun it; math-verify's own alarms are off (whole seconds, per sub-step, swallowed, and
they would overwrite this timer). The counters (`reward_stats`) are process-wide and thread-safe.
"""
from __future__ import annotations

import logging
import signal
import threading

BOX_TOKEN = "\\boxed"
_STAT_KEYS = ("calls", "correct", "no_box", "too_long", "fast_path", "slow_path", "memo_hits",
              "timeouts", "errors", "worker_starts", "worker_kills")
_stats = dict.fromkeys(_STAT_KEYS, 0)
_stats_lock = threading.Lock()
_mv_ready = False
_mv_lock = threading.Lock()


class VerifyTimeout(BaseException):
    """Raised by the interval timer inside a comparison (BaseException: `except Exception`
    in the libraries must not swallow it)."""


def count(key: str, n: int = 1) -> None:
    with _stats_lock:
        _stats[key] += n


def reward_stats() -> dict[str, int]:
    """Counters since start (or the last reset): calls, correct, no_box, too_long, fast_path,
    slow_path, memo_hits, timeouts, errors, worker_starts, worker_kills."""
    with _stats_lock:
        return dict(_stats)


def reset_counts() -> None:
    with _stats_lock:
        for k in _stats:
            _stats[k] = 0


class _DropTimeoutDisabledWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timeout is disabled")


def ensure_math_verify() -> None:
    """Import math-verify and warm its LaTeX parser once, outside any time limit."""
    global _mv_ready
    if _mv_ready:
        return
    with _mv_lock:
        if _mv_ready:
            return
        for name in ("math_verify.parser", "math_verify.grader"):
            logging.getLogger(name).addFilter(_DropTimeoutDisabledWarning())
        import math_verify

        # The first symbolic simplification loads much of sympy (~0.4 s): pay it here, not
        # inside the first caller's time limit.
        for gold, pred in (("$1$", "\\boxed{1}"), ("$(x+1)^2$", "\\boxed{x^2+2x+1}")):
            math_verify.verify(math_verify.parse(gold, parsing_timeout=None),
                               math_verify.parse(pred, parsing_timeout=None), timeout_seconds=None)
        _mv_ready = True


def _gold_text(answer: str) -> str:
    return answer if ("$" in answer or BOX_TOKEN in answer) else f"${answer}$"


def _math_verify_equal(pred: str, gold: str) -> bool:
    """math-verify with its own alarms off; the caller bounds the time."""
    import math_verify

    gold_parsed = math_verify.parse(_gold_text(gold), parsing_timeout=None)
    pred_parsed = math_verify.parse(f"\\boxed{{{pred}}}", parsing_timeout=None)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(math_verify.verify(gold_parsed, pred_parsed, timeout_seconds=None))


def _on_alarm(signum, frame):  # noqa: ARG001
    signal.setitimer(signal.ITIMER_REAL, 0.05)  # fire again if a bare `except:` eats this one
    raise VerifyTimeout()


def compare_with_alarm(pred: str, gold: str, timeout_s: float) -> str:
    """Main-thread comparison under an interval timer: "1", "0", "timeout" or "error".

    Restores any SIGALRM handler and pending timer the caller had. Used in process and by the
    worker subprocesses."""
    import time

    ensure_math_verify()
    start = time.monotonic()
    old_handler = signal.signal(signal.SIGALRM, _on_alarm)
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, max(timeout_s, 0.001))
    try:
        try:
            return "1" if _math_verify_equal(pred, gold) else "0"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except VerifyTimeout:
        return "timeout"
    except Exception:  # garbage LaTeX that the library did not catch itself
        return "error"
    finally:
        signal.signal(signal.SIGALRM, old_handler)
        if old_delay > 0:
            left = max(old_delay - (time.monotonic() - start), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, old_interval)
