"""The verifier reward: equivalence, box extraction, caps, time limits, threads, stats."""
from __future__ import annotations

import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gdro_ray.rewards import _worker_pool as pool
from gdro_ray.rewards import verify
from gdro_ray.rewards.math_reward import batch_math_reward, extract_boxed, math_reward, reward_stats

ADVERSARIAL = r"\boxed{9^{9^{9^{9}}}}"


def _delta(before: dict, key: str) -> int:
    return reward_stats()[key] - before[key]


@pytest.mark.parametrize("response, answer, expected", [
    (r"so the answer is \boxed{0.5}", r"\frac{1}{2}", 1.0),
    (r"\boxed{\frac{1}{2}}", "0.5", 1.0),
    (r"\boxed{\dfrac{3}{4}}", r"\frac{3}{4}", 1.0),
    (r"\boxed{41}", "42", 0.0),
    (r"\boxed{42}", "42", 1.0),
    (r"\boxed{ 42 }.", "42", 1.0),
    (r"\boxed{42.0}", "42", 1.0),
    (r"\boxed{x^2+2x+1}", "(x+1)^2", 1.0),
    (r"\boxed{2\sqrt{3}}", r"\sqrt{12}", 1.0),
    (r"\boxed{\sqrt{2}}", "1.41", 0.0),
    ("the answer is 42", "42", 0.0),                        # no box
    (r"\boxed{}", "42", 0.0),                                # empty box
    (r"\boxed{\boxed{7}}", "7", 1.0),                        # nested: unwrapped
    (r"\boxed{1} first, then \boxed{2}", "2", 1.0),          # the last box wins
    (r"\boxed{1} first, then \boxed{2}", "1", 0.0),
    (r"\boxed{2} then \boxed{\text{not } \boxed{3}}", "2", 0.0),  # last top-level box is the outer one
    (r"\boxed{5} and then \boxed{6", "5", 0.0),              # unfinished last box: no answer
    (r"\boxed{\{1,2\}}", r"\{1,2\}", 1.0),                   # escaped braces do not close the box
])
def test_reward_cases(response, answer, expected):
    assert math_reward(response, answer) == expected


def test_answer_given_boxed_and_pm1_scale():
    assert math_reward(r"\boxed{12}", r"\boxed{12}") == 1.0
    assert math_reward(r"\boxed{12}", "12", scale="pm1") == 1.0
    assert math_reward(r"\boxed{13}", "12", scale="pm1") == -1.0
    assert math_reward("no box", "12", scale="pm1") == -1.0


def test_extract_boxed():
    assert extract_boxed(r"a \boxed{x} b \boxed{\frac{1}{y}} c") == r"\frac{1}{y}"
    assert extract_boxed(r"\boxed{\boxed{\boxed{3}}}") == "3"
    assert extract_boxed(r"\boxed{a \boxed{b}}") == r"a \boxed{b}"
    assert extract_boxed(r"\boxed {4}") == "4"
    assert extract_boxed(r"\boxed 4") is None
    assert extract_boxed("nothing") is None
    assert extract_boxed(None) is None  # type: ignore[arg-type]


def test_batch_and_length_mismatch():
    assert batch_math_reward([r"\boxed{1}", r"\boxed{3}", ""], ["1", "2", "3"]) == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError):
        batch_math_reward(["a"], ["1", "2"])


def test_huge_strings_return_quickly():
    before = reward_stats()
    start = time.monotonic()
    assert math_reward("x" * 100_000 + r"\boxed{3}", "3") == 1.0
    assert math_reward(r"\boxed{" + "1+" * 50_000 + "1}", "3") == 0.0      # box over the cap
    assert math_reward("{" * 100_000 + r"\boxed{" * 10_000, "3") == 0.0      # unbalanced flood
    assert math_reward("\\" * 100_001, "3") == 0.0
    assert time.monotonic() - start < 2.0
    assert _delta(before, "too_long") == 1


def test_time_limit_on_main_thread_counts_timeout():
    before = reward_stats()
    start = time.monotonic()
    assert math_reward(ADVERSARIAL, "1", timeout_s=0.3) == 0.0
    assert time.monotonic() - start < 1.5
    assert _delta(before, "timeouts") == 1


def test_simulated_slow_comparison_times_out(monkeypatch):
    monkeypatch.setattr(verify, "_math_verify_equal", lambda pred, gold: time.sleep(30) or True)
    before = reward_stats()
    start = time.monotonic()
    assert math_reward(r"\boxed{\frac{2}{4}}", "0.5", timeout_s=0.2) == 0.0
    assert time.monotonic() - start < 1.0
    assert _delta(before, "timeouts") == 1


def test_caller_alarm_is_restored():
    fired = []
    old = signal.signal(signal.SIGALRM, lambda *a: fired.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        assert math_reward(r"\boxed{\sqrt{4}}", "2") == 1.0
        assert signal.getsignal(signal.SIGALRM) is not verify._on_alarm
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 0  # the caller's timer still pending
        time.sleep(0.7)
        assert fired == [1]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_works_inside_threads():
    cases = [(r"\boxed{0.5}", r"\frac{1}{2}", 1.0), (r"\boxed{x^2+2x+1}", "(x+1)^2", 1.0),
             (r"\boxed{\sqrt{3}}", "2", 0.0), (ADVERSARIAL, "1", 0.0)] * 2
    before = reward_stats()
    with ThreadPoolExecutor(max_workers=2) as ex:
        got = list(ex.map(lambda c: math_reward(c[0], c[1], timeout_s=1.0), cases))
    assert got == [c[2] for c in cases]
    assert _delta(before, "timeouts") == 2
    assert _delta(before, "errors") == 0


def test_stuck_worker_is_killed(monkeypatch):
    """A worker that never answers (C code ignoring signals) is SIGKILLed and counted."""
    pool.shutdown()
    hang = "import sys,time; print('ready', flush=True); sys.stdin.readline(); time.sleep(60)"
    monkeypatch.setattr(pool, "WORKER_CMD", [sys.executable, "-c", hang])
    monkeypatch.setattr(pool, "WORKER_GRACE_S", 0.2)
    before = reward_stats()
    try:
        with ThreadPoolExecutor(max_workers=1) as ex:
            start = time.monotonic()
            got = ex.submit(math_reward, r"\boxed{\frac{6}{8}}", "0.75", "01", 0.2).result()
            elapsed = time.monotonic() - start
        assert got == 0.0
        assert elapsed < 5.0
        assert _delta(before, "timeouts") == 1
        assert _delta(before, "worker_kills") == 1
    finally:
        pool.shutdown()


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=300), st.text(max_size=30))
def test_never_raises_on_garbage(response, answer):
    assert math_reward(response, answer, timeout_s=0.5) in (0.0, 1.0)
    assert math_reward("\\boxed{" + response + "}", answer, timeout_s=0.5) in (0.0, 1.0)


@settings(max_examples=40, deadline=None)
@given(st.integers(-10**12, 10**12), st.integers(1, 10**6))
def test_integer_answers(n, shift):
    assert math_reward(f"work... \\boxed{{{n}}}", str(n)) == 1.0
    assert math_reward(f"work... \\boxed{{{n + shift}}}", str(n)) == 0.0
