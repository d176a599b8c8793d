"""User reward functions (`reward.function`): load, run under a time limit, check what they return.

Target forms: ``"package.module:function"`` (imported) or ``"path/to/file.py:function"`` (loaded
from that file; a relative path is taken from the driver's working directory and made absolute
before it reaches the samplers). The function is called positionally as
``fn(prompts, responses, answers, metadata) -> list[float]`` with four lists of equal length:
the prompts (the user message, before the chat template), the decoded responses, the reference
answers (str), and per response one dict of the row's other columns. An ``async def`` is awaited.

Where it runs: the sampler calls it once per prompt with that prompt's n rollouts, inside a
worker subprocess (`_reward_fn_worker`) that imports the function once and serves calls over a
pipe. Why a subprocess: a function that hangs in C code or swallows every exception cannot be
stopped inside the caller's process, a subprocess can be killed. The limit of one call is
``reward.timeout_s`` (for a function that waits on a served judge), or by default
``sampler.reward_timeout_s`` per response (the math-verify limit, summed over the call); a
worker that does not answer in time is killed with every process it started (it leads its own
session) and a fresh one starts on the next call. The worker is started without the current
folder on its path (`_worker_pool.worker_command`); the driver's folder is appended to it, after
the standard library and the installed packages, so a module target there is found but cannot
shadow them. It runs under an address-space limit of ``reward.memory_limit_mb``. Importing the
module has its own limit, ``reward.import_timeout_s``; the driver checks the import once at start
in such a worker (`check_import`), so a module that hangs, exits or is interrupted while it
imports stops the run with one line.

A call fails when the function raises, passes its limit, returns something of the wrong length
or a value that is not a finite number of magnitude at most ``MAX_ABS_REWARD`` (larger values
overflow the advantage arithmetic). ``reward.on_error=zero`` scores the call's rollouts 0 (only
the bad values when the length was right) and counts it; ``stop`` raises `RewardFunctionError`,
one line naming the function and the row.
"""
from __future__ import annotations

import importlib
import importlib.util
import math
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from gdro_ray.errors import UserError
from gdro_ray.rewards._worker_pool import start_worker, stop_process, worker_command

WORKER_START_S = 120.0  # the worker's interpreter and our imports, before the user's module
STARTUP_TIMEOUT_S = 120.0  # default of reward.import_timeout_s: importing torch or a judge model takes a while
MEMORY_LIMIT_MB = 4096  # default of reward.memory_limit_mb
MAX_ABS_REWARD = 1e6  # a larger score is a bad value: squares of 1e154 and up overflow float64
_HEADER = struct.Struct(">Q")


class RewardFunctionError(UserError):
    """A user reward function failed with `reward.on_error=stop` (the message is one line)."""


def parse_target(target: str) -> tuple[str, str]:
    """`"where:function"` → (where, function); raises ValueError with the reason."""
    where, sep, fn = str(target).strip().rpartition(":")
    if not sep or not where or not fn:
        raise ValueError(f"expected 'package.module:function' or 'path/to/file.py:function', got {target!r}")
    if not fn.isidentifier():
        raise ValueError(f"{fn!r} is not a Python function name")
    if not where.endswith(".py") and not all(part.isidentifier() for part in where.split(".")):
        raise ValueError(f"{where!r} is neither a module name nor a .py file")
    return where, fn


def resolve_spec(target: str, base_dir: str | Path | None = None) -> dict:
    """The picklable description a sampler needs to load the function anywhere.

    {"target": as given, "path": absolute .py file or None, "module": name or None,
    "function": name, "sys_path": [the driver's working directory]}."""
    where, fn = parse_target(target)
    base = Path(base_dir or os.getcwd()).resolve()
    spec = {"target": str(target), "path": None, "module": None, "function": fn, "sys_path": [str(base)]}
    if where.endswith(".py"):
        path = Path(where).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise ValueError(f"file {path} not found")
        spec["path"] = str(path)
    else:
        spec["module"] = where
    return spec


def load_function(spec: dict) -> Callable:
    """Import the function a spec names; raises ValueError with a one-line reason."""
    for entry in spec.get("sys_path") or ():
        if entry not in sys.path:
            sys.path.append(entry)
    try:
        if spec.get("path"):
            path = Path(spec["path"])
            name = f"gdro_user_reward_{abs(hash(str(path)))}"
            module_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module  # dataclasses and pickling look the module up by name
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(spec["module"])
    except Exception as e:  # the user's module failed to import: say why in one line
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ValueError(f"cannot import {spec.get('path') or spec.get('module')} ({type(e).__name__}: {msg})") from None
    fn = getattr(module, spec["function"], None)
    if fn is None:
        raise ValueError(f"{spec.get('path') or spec.get('module')} has no attribute {spec['function']!r}")
    if not callable(fn):
        raise ValueError(f"{spec['function']!r} is not callable")
    return fn


def _as_float(v: Any) -> float:
    try:
        return float(v) if not isinstance(v, (str, bytes)) else math.nan
    except (TypeError, ValueError):
        return math.nan


def check_scores(value: Any, n: int, max_abs: float = MAX_ABS_REWARD) -> tuple[list[float], str | None, list[int]]:
    """(scores, problem, bad positions): scores has n floats (0.0 where a value is bad).

    A value is bad when it is not a finite number or its magnitude exceeds `max_abs`. problem is
    None when everything is fine; a wrong length or type zeroes the whole call."""
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__len__"):
        return [0.0] * n, f"returned {type(value).__name__}, expected a list of {n} numbers", list(range(n))
    try:
        values = list(value)
    except TypeError:
        return [0.0] * n, f"returned {type(value).__name__}, expected a list of {n} numbers", list(range(n))
    if len(values) != n:
        return [0.0] * n, f"returned {len(values)} scores for {n} responses", list(range(n))
    scores, bad = [], []
    for i, v in enumerate(values):
        f = _as_float(v)
        if not math.isfinite(f) or abs(f) > max_abs:
            bad.append(i)
            f = 0.0
        scores.append(f)
    if bad:
        v = values[bad[0]]
        what = (f"score {v!r} beyond ±{max_abs:g}" if math.isfinite(_as_float(v))
                else f"non-finite or non-numeric score {v!r}")
        return scores, f"returned a {what} (response {bad[0]})", bad
    return scores, None, []


# ---------------------------------------------------------------------------- the worker pipe
def _write_frame(stream, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read_exact(fd: int, n: int, buf: bytearray, deadline: float) -> bytes | None:
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, max(65536, n - len(buf)))
        if not chunk:
            raise EOFError("reward worker closed its output")
        buf.extend(chunk)
    out = bytes(buf[:n])
    del buf[:n]
    return out


def _how_it_ended(proc: subprocess.Popen) -> str:
    """'exit code 0' / 'killed by SIGKILL' for a worker that is gone (waits a moment for it)."""
    try:
        code = proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        return "output closed"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class _FunctionWorker:
    """One subprocess serving one reward function; raises RuntimeError (one line) when it does not load."""

    def __init__(self, spec: dict):
        self.proc = start_worker(worker_command("gdro_ray.rewards._reward_fn_worker"))
        self.buf = bytearray()
        limit = float(spec.get("import_timeout_s") or STARTUP_TIMEOUT_S)
        what = spec.get("path") or spec.get("module")
        try:
            _write_frame(self.proc.stdin, spec)
            # the interpreter's own start-up (slow on a busy machine) is not the user's import
            started = self._read(time.monotonic() + WORKER_START_S)
            if started is None:
                self.kill()
                raise RuntimeError(f"the reward worker did not start within {WORKER_START_S:g} s (the machine is busy?)")
            hello = self._read(time.monotonic() + limit)
        except (EOFError, OSError, pickle.PickleError):  # os._exit, a crash or a kill while importing
            how = _how_it_ended(self.proc)
            self.kill()
            raise RuntimeError(f"importing {what} ended its process ({how}) before the function was loaded") from None
        except BaseException:  # Ctrl-C in the caller: leave no worker behind
            self.kill()
            raise
        if hello is None:
            self.kill()
            raise RuntimeError(f"importing {what} did not finish within {limit:g} s (reward.import_timeout_s)")
        if hello[0] != "ready":
            self.kill()
            raise RuntimeError(hello[1])

    def _read(self, deadline: float):
        fd = self.proc.stdout.fileno()
        head = _read_exact(fd, _HEADER.size, self.buf, deadline)
        if head is None:
            return None
        body = _read_exact(fd, _HEADER.unpack(head)[0], self.buf, deadline + 5.0)  # the frame is already coming
        return None if body is None else pickle.loads(body)

    def call(self, args: tuple, timeout_s: float):
        """("ok", value) | ("error", reason) | ("returned", description), or None on timeout (the
        worker is then killed)."""
        _write_frame(self.proc.stdin, args)
        reply = self._read(time.monotonic() + timeout_s)
        if reply is None:
            self.kill()
        return reply

    def kill(self) -> None:
        stop_process(self.proc)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


def check_import(spec: dict) -> None:
    """Load the function once in a worker, as a sampler will, and stop it; ValueError with a one-line
    reason when the module does not import, hangs or exits while importing, or lacks the name."""
    try:
        worker = _FunctionWorker(spec)
    except (RuntimeError, OSError) as e:
        raise ValueError(str(e)) from None
    worker.kill()


class RewardFunctionRunner:
    """Calls one user reward function for a sampler; see the module docstring for the rules."""

    def __init__(self, spec: dict, on_error: str = "zero", timeout_s: float = 2.0):
        if on_error not in ("zero", "stop"):
            raise ValueError(f"on_error must be 'zero' or 'stop', got {on_error!r}")
        self.spec, self.on_error, self.timeout_s = spec, on_error, float(timeout_s)
        self.name = spec.get("target") or spec["function"]
        self._memory_mb = float(spec.get("memory_limit_mb", MEMORY_LIMIT_MB))
        self._call_timeout_s = float(spec.get("call_timeout_s") or 0.0)  # reward.timeout_s; 0 = per response
        self.concurrency = max(1, int(spec.get("concurrency") or 1))  # reward.concurrency
        # Idle workers; a call takes one (or starts one) and gives it back unless it was killed, so
        # at most `concurrency` exist, each serving one call at a time.
        self._idle: list[_FunctionWorker] = []
        self._lock = threading.Lock()
        self._calls: ThreadPoolExecutor | None = None
        self.stats = {"calls": 0, "errors": 0, "timeouts": 0, "bad_values": 0, "worker_starts": 0}

    def _count(self, key: str, by: int = 1) -> None:
        with self._lock:
            self.stats[key] += by

    def _take_worker(self) -> _FunctionWorker:
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.alive:
                    return worker
        self._count("worker_starts")
        try:
            return _FunctionWorker(self.spec)
        except (RuntimeError, OSError, EOFError) as e:
            # Loading is not a per-row failure: no point scoring zeros for the rest of the run.
            raise RewardFunctionError(f"reward.function {self.name}: {e}") from None

    def _give_back(self, worker: _FunctionWorker) -> None:
        if worker.alive:
            with self._lock:
                self._idle.append(worker)

    def score_many(self, calls: list[tuple]) -> list[list[float]]:
        """The scores of several calls (`score`'s argument tuples), in their order, with up to
        `concurrency` in flight at once (each in its own worker). With `on_error=stop` the first
        failing call in order raises, after the calls already in flight have returned."""
        if self.concurrency == 1 or len(calls) <= 1:
            return [self.score(*args) for args in calls]
        if self._calls is None:
            self._calls = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="reward-call")
        return list(self._calls.map(lambda args: self.score(*args), calls))

    def score(self, prompts: list[str], responses: list[str], answers: list[str], metadata: list[dict],
              row: Any = None) -> list[float]:
        """Scores of one call (n = len(responses)); `row` names the dataset row in errors."""
        n = len(responses)
        self._count("calls")
        limit = self._call_timeout_s or self.timeout_s * max(n, 1)
        worker = self._take_worker()
        try:
            reply = worker.call((list(prompts), list(responses), list(answers), list(metadata)), limit)
        except (EOFError, BrokenPipeError, pickle.PickleError, OSError) as e:
            how = _how_it_ended(worker.proc)
            worker.kill()
            died = f"the worker died ({how}; {type(e).__name__}: {e})"
            if how.startswith("killed"):  # an allocation C code could not report, or the kernel's OOM killer
                died += f"; its memory limit is reward.memory_limit_mb={self._memory_mb:g}"
            return self._fail(died, row, [0.0] * n)
        self._give_back(worker)  # a timed-out worker was killed in `call` and is dropped here
        if reply is None:
            self._count("timeouts")
            why = ("reward.timeout_s" if self._call_timeout_s else f"sampler.reward_timeout_s × {n} responses")
            return self._fail(f"did not return within {limit:g} s ({why})", row, [0.0] * n)
        if reply[0] == "returned":  # a value that cannot cross the pipe (a generator...): the function returned it
            return self._fail(f"returned {reply[1]}, expected a list of {n} numbers", row, [0.0] * n)
        if reply[0] != "ok":
            return self._fail(f"raised {reply[1]}", row, [0.0] * n)
        scores, problem, bad = check_scores(reply[1], n)
        if problem is not None:
            self._count("bad_values", len(bad))
            return self._fail(problem, row, scores)
        return scores

    def _fail(self, problem: str, row: Any, scores: list[float]) -> list[float]:
        self._count("errors")
        if self.on_error == "stop":
            where = f"row {row}" if row is not None else "a row"
            raise RewardFunctionError(f"reward.function {self.name}: {where}: {problem} (reward.on_error=stop)")
        return scores

    def close(self) -> None:
        if self._calls is not None:
            self._calls.shutdown(wait=True)
            self._calls = None
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.kill()
