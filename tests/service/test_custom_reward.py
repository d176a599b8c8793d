"""reward.function: loading by module or file, the subprocess runner, its limits and failure modes,
the two shipped examples, and the sampler call site."""
from __future__ import annotations

import json
import math
import os
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gdro_ray.config import load_config
from gdro_ray.errors import UserError
from gdro_ray.rewards.custom import RewardFunctionError, RewardFunctionRunner, check_scores, parse_target, resolve_spec
from gdro_ray.rewards.examples.any_of_answers import any_of_answers_reward
from gdro_ray.rewards.examples.format_and_correct import format_and_correct_reward, is_well_formed

USER_MODULE = '''
import asyncio, math, os, time

def length_reward(prompts, responses, answers, metadata):
    return [len(r) / 10 + (1.0 if m.get("bonus") else 0.0) for r, m in zip(responses, metadata)]

async def async_reward(prompts, responses, answers, metadata):
    await asyncio.sleep(0)
    return [1.0 if a in r else 0.0 for r, a in zip(responses, answers)]

def numpy_reward(prompts, responses, answers, metadata):
    import numpy as np
    return np.arange(len(responses), dtype=np.float32)

def raises(prompts, responses, answers, metadata):
    raise KeyError("no such column")

def hangs(prompts, responses, answers, metadata):
    while True:
        try:
            time.sleep(10)
        except BaseException:  # even a function that swallows everything is stopped
            pass

def short(prompts, responses, answers, metadata):
    return [1.0] * (len(responses) - 1)

def nan_second(prompts, responses, answers, metadata):
    return [1.0, math.nan] + [0.5] * (len(responses) - 2)

def not_a_list(prompts, responses, answers, metadata):
    return 1.0

def pid(prompts, responses, answers, metadata):
    return [float(os.getpid())] * len(responses)

def huge(prompts, responses, answers, metadata):
    return [1e308, -1e308] + [0.5] * (len(responses) - 2)

def generator(prompts, responses, answers, metadata):
    return (1.0 for _ in responses)

def exits(prompts, responses, answers, metadata):
    os._exit(3)

def greedy(prompts, responses, answers, metadata):
    hog = bytearray(2 << 30)  # 2 GiB, over the 512 MiB the test gives the worker
    return [float(len(hog))] * len(responses)

def as_limit(prompts, responses, answers, metadata):
    import resource
    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    return [-1.0 if soft == resource.RLIM_INFINITY else soft / 2**20] * len(responses)  # MiB

def grandchild(prompts, responses, answers, metadata):
    import subprocess
    child = subprocess.Popen(["sleep", "477"])
    with open(os.environ["GDRO_TEST_CHILD_PID"], "w") as f:
        f.write(str(child.pid))
    time.sleep(60)

def meets_others(prompts, responses, answers, metadata):
    # leaves a mark, then waits (at most 5 s) to see the marks of as many calls as the test runs:
    # 1.0 when they were all in flight together, 0.0 when it waited alone. The last number of
    # the prompt is this call's index, returned so the test can check the order.
    folder, total, index = prompts[0].split("|")
    open(os.path.join(folder, f"mark-{index}"), "w").close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if len([f for f in os.listdir(folder) if f.startswith("mark-")]) >= int(total):
            return [1.0 + int(index)] * len(responses)
        time.sleep(0.02)
    return [0.0] * len(responses)

def fails_on_odd(prompts, responses, answers, metadata):
    if int(prompts[0]) % 2:
        raise ValueError(f"odd {prompts[0]}")
    return [float(prompts[0])] * len(responses)

NOT_CALLABLE = 3
'''


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "my_rewards.py"
    path.write_text(USER_MODULE)
    return path


def _runner(path, fn, on_error="zero", timeout_s=2.0):
    return RewardFunctionRunner(resolve_spec(f"{path}:{fn}"), on_error, timeout_s)


def _call(runner, n=3, row=7):
    return runner.score(["p"] * n, ["abc", "xy 42", "z"][:n] + ["w"] * max(0, n - 3), ["42"] * n,
                        [{"bonus": i == 0} for i in range(n)], row=row)


# ---------------------------------------------------------------------------- targets
def test_parse_and_resolve(tmp_path, user_file, monkeypatch):
    assert parse_target("pkg.mod:fn") == ("pkg.mod", "fn")
    assert parse_target("a/b/c.py:fn") == ("a/b/c.py", "fn")
    for bad in ("nofn", "pkg.mod:", ":fn", "pkg mod:fn", "pkg.mod:not-a-name"):
        with pytest.raises(ValueError):
            parse_target(bad)
    monkeypatch.chdir(tmp_path)
    spec = resolve_spec("my_rewards.py:length_reward")  # relative to the working directory, made absolute
    assert spec["path"] == str(user_file) and spec["function"] == "length_reward"
    with pytest.raises(ValueError, match="not found"):
        resolve_spec("missing.py:f")


def test_config_validation_names_the_key(user_file):
    cfg = load_config(overrides=[f"reward.function={user_file}:length_reward", "reward.on_error=stop"])
    assert cfg.reward.on_error == "stop" and cfg.reward.success_threshold == 0.5
    assert cfg.reward.import_timeout_s == 120.0 and cfg.reward.memory_limit_mb == 4096.0
    edge = load_config(overrides=["reward.memory_limit_mb=0", "reward.import_timeout_s=0.5",
                                  "grpo.max_refill_rounds=100"])
    assert (edge.reward.memory_limit_mb, edge.reward.import_timeout_s, edge.grpo.max_refill_rounds) == (0, 0.5, 100)
    for override, pattern in ((f"reward.function={user_file.parent}/nope.py:f", r"^reward.function: file .* not found"),
                              ("reward.function=justaname", r"^reward.function: expected"),
                              ("reward.on_error=ignore", r"^reward.on_error: must be one of zero, stop"),
                              ("reward.success_threshold=nan", r"^reward.success_threshold: must be")):
        with pytest.raises(UserError, match=pattern):
            load_config(overrides=[override])


def test_driver_loads_the_function_at_start(user_file):
    from gdro_ray.service.user_extensions import reward_sampler_kwargs

    ok = reward_sampler_kwargs(load_config(overrides=[f"reward.function={user_file}:length_reward"]))
    assert ok["reward_function"]["path"] == str(user_file) and ok["reward_on_error"] == "zero"
    assert reward_sampler_kwargs(load_config()) == {"reward_chunk": 0}
    assert reward_sampler_kwargs(load_config(overrides=["sampler.reward_chunk=4"]))["reward_chunk"] == 4
    for fn, why in (("missing_fn", "has no attribute 'missing_fn'"), ("NOT_CALLABLE", "is not callable")):
        with pytest.raises(UserError, match=f"^reward.function: .*{why}"):
            reward_sampler_kwargs(load_config(overrides=[f"reward.function={user_file}:{fn}"]))
    with pytest.raises(UserError, match=r"^reward.function: cannot import no_such_pkg_xyz\.mod \(ModuleNotFoundError"):
        reward_sampler_kwargs(load_config(overrides=["reward.function=no_such_pkg_xyz.mod:fn"]))


# ---------------------------------------------------------------------------- the runner
def test_scores_metadata_async_numpy_and_module_form(user_file):
    r = _runner(user_file, "length_reward")
    assert _call(r) == pytest.approx([1.3, 0.5, 0.1])  # the first response's metadata has the bonus
    r.close()
    r = _runner(user_file, "async_reward")
    assert _call(r) == [0.0, 1.0, 0.0]
    r.close()
    r = _runner(user_file, "numpy_reward")
    assert _call(r, n=4) == [0.0, 1.0, 2.0, 3.0]
    r.close()
    r = RewardFunctionRunner(resolve_spec("gdro_ray.rewards.examples.format_and_correct:format_and_correct_reward"))
    assert r.score(["p"], ["so \\boxed{42}"], ["42"], [{}]) == pytest.approx([1.0])
    r.close()


def test_one_worker_serves_many_calls(user_file):
    r = _runner(user_file, "pid")
    first = _call(r)[0]
    assert all(_call(r)[0] == first for _ in range(5)) and r.stats["worker_starts"] == 1
    r.close()


@pytest.mark.parametrize("fn, problem", [("raises", "raised KeyError: 'no such column'"),
                                         ("short", "returned 2 scores for 3 responses"),
                                         ("not_a_list", "returned float, expected a list of 3 numbers"),
                                         ("nan_second", "non-finite or non-numeric score nan (response 1)"),
                                         ("huge", "returned a score 1e+308 beyond ±1e+06 (response 0)"),
                                         ("generator", "returned a generator, expected a list of 3 numbers"),
                                         ("exits", "the worker died (exit code 3")])
def test_failures_zero_or_stop(user_file, fn, problem):
    r = _runner(user_file, fn, "zero")
    scores = _call(r)
    if fn == "nan_second":
        assert scores == [1.0, 0.0, 0.5]  # only the bad value is zeroed
    elif fn == "huge":
        assert scores == [0.0, 0.0, 0.5] and r.stats["bad_values"] == 2
    else:
        assert scores == [0.0, 0.0, 0.0]
    assert r.stats["errors"] == 1
    assert _call(r) and r.stats["errors"] == 2  # the worker is still usable afterwards
    r.close()
    r = _runner(user_file, fn, "stop")
    with pytest.raises(RewardFunctionError) as err:
        _call(r, row=123)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"reward.function {user_file}:{fn}: row 123: ") and problem in msg
    r.close()


def _concurrent(path, fn, concurrency, on_error="zero", timeout_s=10.0):
    spec = dict(resolve_spec(f"{path}:{fn}"), concurrency=concurrency)
    return RewardFunctionRunner(spec, on_error, timeout_s)


def test_concurrency_keeps_calls_in_flight_together_in_order(user_file, tmp_path):
    calls = 3
    for concurrency, together in ((3, True), (1, False)):
        marks = tmp_path / f"marks-{concurrency}"
        marks.mkdir()
        r = _concurrent(user_file, "meets_others", concurrency)
        args = [([f"{marks}|{calls}|{i}"] * 2, ["a", "b"], ["1", "1"], [{}, {}], i) for i in range(calls)]
        scores = r.score_many(args)
        if together:  # each call saw the others' marks, and the scores are in the calls' order
            assert scores == [[1.0 + i] * 2 for i in range(calls)]
            assert r.stats["worker_starts"] == calls and r.stats["calls"] == calls
        else:  # one at a time: the first waited alone (and so did the second)
            assert scores[0] == [0.0, 0.0] and r.stats["worker_starts"] == 1
        r.close()


def test_concurrent_failures_are_counted_and_stop_names_the_first_in_order(user_file):
    args = [([str(i)], ["r"], ["a"], [{}], 100 + i) for i in range(6)]
    r = _concurrent(user_file, "fails_on_odd", 3)
    assert r.score_many(args) == [[0.0], [0.0], [2.0], [0.0], [4.0], [0.0]]
    assert r.stats["errors"] == 3 and r.stats["calls"] == 6 and r.stats["worker_starts"] <= 3
    r.close()
    r = _concurrent(user_file, "fails_on_odd", 3, on_error="stop")
    with pytest.raises(RewardFunctionError, match=r"row 101: raised ValueError: odd 1"):
        r.score_many(args)
    r.close()


def test_concurrency_is_validated():
    assert load_config(overrides=["reward.concurrency=8"]).reward.concurrency == 8
    for bad in ("0", "65", "1.5"):
        with pytest.raises(UserError, match=r"^reward.concurrency: "):
            load_config(overrides=[f"reward.concurrency={bad}"])


def test_hang_is_killed_at_the_limit_and_a_fresh_worker_follows(user_file):
    r = _runner(user_file, "hangs", "zero", timeout_s=0.2)
    t0 = time.monotonic()
    assert _call(r, n=2) == [0.0, 0.0]
    assert time.monotonic() - t0 < 3.0  # limit 0.2 s × 2 responses, then a kill
    assert r.stats["timeouts"] == 1 and r.stats["errors"] == 1
    assert _call(r, n=2) == [0.0, 0.0] and r.stats["worker_starts"] == 2
    r.close()
    r = _runner(user_file, "hangs", "stop", timeout_s=0.2)
    with pytest.raises(RewardFunctionError, match=r"row 7: did not return within 0.6 s"):
        _call(r)
    r.close()


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting for a reaper that is not ours counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_timed_out_call_takes_its_child_processes_with_it(user_file, tmp_path, monkeypatch):
    monkeypatch.setenv("GDRO_TEST_CHILD_PID", str(tmp_path / "child.pid"))
    r = _runner(user_file, "grandchild", "zero", timeout_s=0.5)
    assert _call(r, n=2) == [0.0, 0.0] and r.stats["timeouts"] == 1
    child = int((tmp_path / "child.pid").read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the reward's child process outlived the killed worker"
    r.close()


def test_memory_limit_turns_a_huge_allocation_into_a_reward_error(user_file):
    spec = dict(resolve_spec(f"{user_file}:greedy"), memory_limit_mb=512)
    r = RewardFunctionRunner(spec, "zero", 5.0)
    assert _call(r) == [0.0, 0.0, 0.0] and r.stats["errors"] == 1
    r.close()
    r = RewardFunctionRunner(spec, "stop", 5.0)
    with pytest.raises(RewardFunctionError, match=r"raised MemoryError.*reward.memory_limit_mb=512"):
        _call(r)
    r.close()
    limit = dict(resolve_spec(f"{user_file}:as_limit"))
    for mb, expect in ((None, 4096), (512, 512), (0, -1)):  # the default, one given, 0 = none
        r = RewardFunctionRunner(limit if mb is None else dict(limit, memory_limit_mb=mb), "stop", 5.0)
        assert _call(r, n=1) == [float(expect)]
        r.close()


SHADOW = """
import os
open(os.path.join({markers!r}, __name__ + "-" + str(os.getpid())), "w").close()
"""


def test_workers_never_import_modules_from_the_current_folder(user_file, tmp_path, monkeypatch):
    """A json.py (or struct.py, select.py) planted where the run starts is not what the workers import."""
    import importlib

    pool = importlib.import_module("gdro_ray.rewards._worker_pool")
    cwd, markers = tmp_path / "planted", tmp_path / "markers"
    cwd.mkdir(), markers.mkdir()
    for name in ("json", "struct", "select", "pickle"):
        (cwd / f"{name}.py").write_text(SHADOW.format(markers=str(markers)))
    monkeypatch.chdir(cwd)
    # an empty PYTHONPATH entry means the current folder to Python: the workers drop it
    monkeypatch.setenv("PYTHONPATH", os.pathsep + os.environ.get("PYTHONPATH", ""))
    from gdro_ray.rewards.custom import check_import

    check_import(resolve_spec(f"{user_file}:length_reward"))
    r = _runner(user_file, "length_reward")
    assert _call(r) == pytest.approx([1.3, 0.5, 0.1])
    r.close()
    pool.shutdown()  # a fresh math-verify worker, started from the planted folder
    try:
        assert pool.compare("x^2+2x+1", "(x+1)^2", 5.0) == "1"
    finally:
        pool.shutdown()
    assert sorted(p.name for p in markers.iterdir()) == []


IMPORT_FAILURES = {
    "import_hang": ("import time\ntime.sleep(60)\n", r"importing .*import_hang\.py did not finish within 1 s "
                                                    r"\(reward\.import_timeout_s\)$"),
    "import_exit": ("import sys\nsys.exit(0)\n", r"cannot import .*import_exit\.py \(SystemExit: 0 at import\)$"),
    "import_osexit": ("import os\nos._exit(0)\n", r"importing .*import_osexit\.py ended its process \(exit code 0\)"),
    "import_kbi": ("raise KeyboardInterrupt\n", r"cannot import .*import_kbi\.py \(KeyboardInterrupt at import\)$"),
}


@pytest.mark.parametrize("name", sorted(IMPORT_FAILURES))
def test_a_module_that_hangs_or_exits_at_import_stops_the_start_in_one_line(tmp_path, name):
    from gdro_ray.service.user_extensions import reward_sampler_kwargs

    body, pattern = IMPORT_FAILURES[name]
    (tmp_path / f"{name}.py").write_text(body + "def score(p, r, a, m):\n    return [0.0] * len(r)\n")
    cfg = load_config(overrides=[f"reward.function={tmp_path / name}.py:score", "reward.import_timeout_s=1"])
    t0 = time.monotonic()
    with pytest.raises(UserError) as err:
        reward_sampler_kwargs(cfg)
    assert time.monotonic() - t0 < 10
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("reward.function: ") and re.search(pattern, msg), msg


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10), st.text(max_size=2),
                          st.none(), st.sampled_from([1e6, -1e6, 1e6 + 1, -2e6, 1e308])), max_size=6),
       st.integers(0, 6))
def test_check_scores_property(values, n):
    scores, problem, bad = check_scores(values, n)
    assert len(scores) == n and all(math.isfinite(s) for s in scores)
    if len(values) != n:
        assert problem and bad == list(range(n))
    else:
        expect_bad = [i for i, v in enumerate(values)
                      if v is None or isinstance(v, str) or not math.isfinite(float(v)) or abs(float(v)) > 1e6]
        assert bad == expect_bad and (problem is None) == (not expect_bad)
        for i, v in enumerate(values):
            if i not in expect_bad:
                assert scores[i] == float(v)


# ---------------------------------------------------------------------------- the examples
def test_format_and_correct_example():
    good, wrong, unformatted = "2+3 is 5, so \\boxed{5}", "I think \\boxed{6}", "\\boxed{5}"
    assert is_well_formed(good) and is_well_formed(wrong) and not is_well_formed(unformatted)
    assert not is_well_formed("a \\boxed{5} then \\boxed{5}") and not is_well_formed("work \\boxed{5")
    scores = format_and_correct_reward(["p"] * 4, [good, wrong, unformatted, "no box"], ["5"] * 4, [{}] * 4)
    assert scores == pytest.approx([1.0, 0.1, 0.9, 0.0])
    cfg = load_config()
    assert [s >= cfg.reward.success_threshold for s in scores] == [True, False, True, False]


def test_any_of_answers_example():
    responses = ["\\boxed{252}", "\\boxed{C(10,5)}", "\\boxed{3}", "\\boxed{-2}"]
    scores = any_of_answers_reward(["p"] * 4, responses, ["252 || C(10,5)", "252||C(10,5)", "x", "x"],
                                   [{}, {}, {"answers": ["3", "-3"]}, {"answers": ["2", "3"]}])
    assert scores == [1.0, 1.0, 1.0, 0.0]


def test_a_stop_raised_in_a_sampler_reaches_the_user_as_its_own_line():
    import ray.exceptions

    from gdro_ray.service.user_extensions import reward_error_line

    cause = RewardFunctionError("reward.function f.py:g: row 3: raised ValueError: bad (reward.on_error=stop)")
    wrapped = ray.exceptions.RayTaskError("generate_shard", "Traceback (most recent call last):\n  ...", cause)
    assert reward_error_line(wrapped.as_instanceof_cause()) == str(cause)  # what ray.get raises
    assert reward_error_line(wrapped) == str(cause)
    other = ray.exceptions.RayTaskError("generate_shard", "Traceback", KeyError("x"))
    assert reward_error_line(other.as_instanceof_cause()) is None  # a sampler bug stays a traceback


SMALL_RUN = ["model.path=toy", "steps=2", "batch_size=4", "budget_mean=4", "data.max_prompts=32",
             "data.toy_eval_per_tier=2", "data.max_eval_prompts=6", "eval.k=2", "sampler.num_samplers=1",
             "learner.world_size=1"]


@pytest.mark.slow
def test_a_stop_is_one_line_and_no_worker_imports_the_current_folder_live(tmp_path):
    """`gdro-ray train` from a folder holding a json.py, with a reward that raises and on_error=stop:
    exit 2, one line (no remote tracebacks of the other sampler calls), the planted module never run."""
    import subprocess
    import sys

    cwd, markers = tmp_path / "planted", tmp_path / "markers"
    cwd.mkdir(), markers.mkdir()
    (cwd / "json.py").write_text(SHADOW.format(markers=str(markers)))
    (tmp_path / "raise.py").write_text("def score(p, r, a, m):\n    raise ValueError('boom')\n")
    # -P: the driver, like the workers, must not import from the folder it is started in
    p = subprocess.run([sys.executable, "-P", "-m", "gdro_ray.cli.main", "train", *SMALL_RUN,
                        f"reward.function={tmp_path / 'raise.py'}:score", "reward.on_error=stop",
                        f"out={tmp_path / 'run'}"], cwd=cwd, capture_output=True, text=True, timeout=600)
    err = [line for line in p.stderr.splitlines() if "Started a local Ray instance" not in line]
    assert p.returncode == 2, p.stderr[-3000:]
    # the user's line ends it, and no remote traceback follows or precedes it (a loaded machine may
    # add one of Ray's own timestamped log lines, which is not what this guards against)
    assert "Traceback" not in p.stderr and "Unhandled error" not in p.stderr, p.stderr[-3000:]
    assert err and re.fullmatch(r"gdro-ray train: error: the job stopped at step 1: reward\.function "
                                          r".*raise\.py:score: row \d+: raised ValueError: boom "
                                          r"\(reward\.on_error=stop\)", err[-1]), p.stderr[-3000:]
    assert sorted(m.name for m in markers.iterdir()) == []


# ---- a served judge (gdro_ray/rewards/examples/http_judge.py) against a stub server on loopback ----
class _Judge:
    """An HTTP judge on 127.0.0.1: 1.0 for a response holding the answer, else 0; `delay_s` per request."""

    def __init__(self, delay_s: float = 0.0):
        import http.server
        import threading

        judge = self
        self.requests: list[dict] = []
        self.delay_s = delay_s

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the stdlib's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                judge.requests.append(body)
                time.sleep(judge.delay_s)
                out = json.dumps({"scores": [float(body["answer"] in r) for r in body["responses"]]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/judge"

    def close(self):
        self.server.shutdown()


def test_a_served_judge_scores_each_prompts_responses_under_its_own_time_limit(monkeypatch):
    judge = _Judge()
    monkeypatch.setenv("GDRO_JUDGE_URL", judge.url)  # the worker subprocess inherits it
    spec = dict(resolve_spec("gdro_ray.rewards.examples.http_judge:judge_reward"), call_timeout_s=20.0)
    runner = RewardFunctionRunner(spec, "zero", 0.01)  # 0.01 s per response would fail any judge: its own limit rules
    try:
        scores = runner.score(["What is 6 × 7?"] * 3, ["so 42", "41", "\\boxed{42}"], ["42"] * 3, [{}] * 3, row=1)
        assert scores == [1.0, 0.0, 1.0] and runner.stats["errors"] == 0
        assert judge.requests == [{"prompt": "What is 6 × 7?", "answer": "42", "responses": ["so 42", "41", "\\boxed{42}"]}]
        judge.delay_s = 3.0  # slower than the call's limit: a reward error, zeros, and a fresh worker next
        slow = RewardFunctionRunner(dict(spec, call_timeout_s=1.0), "stop", 2.0)
        with pytest.raises(RewardFunctionError, match=r"row 2: did not return within 1 s \(reward.timeout_s\)"):
            slow.score(["q"], ["42"], ["42"], [{}], row=2)
        slow.close()
    finally:
        runner.close()
        judge.close()
