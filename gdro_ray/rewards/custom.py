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
``sampler.reward_timeout_s`` per response (the math-verify limit, summed over the call); a
worker that does not answer in time is killed and a fresh one starts on the next call.

A call fails when the function raises, passes its limit, returns something of the wrong length
or a value that is not a finite number. ``reward.on_error=zero`` scores the call's rollouts 0
(only the bad values when the length was right) and counts it; ``stop`` raises
`RewardFunctionError`, one line naming the function and the row.
"""
from __future__ import annotations

import importlib
import importlib.util
import math
import os
import pickle
import select
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from gdro_ray.errors import UserError
from gdro_ray.rewards._worker_pool import stop_process

STARTUP_TIMEOUT_S = 120.0  # importing the user's module (torch, a judge model...) is not timed as a call
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


def check_scores(value: Any, n: int) -> tuple[list[float], str | None, list[int]]:
    """(scores, problem, bad positions): scores has n floats (0.0 where a value is bad).

    problem is None when everything is fine; a wrong length or type zeroes the whole call."""
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
        try:
            f = float(v) if not isinstance(v, (str, bytes)) else math.nan
        except (TypeError, ValueError):
            f = math.nan
        if not math.isfinite(f):
            bad.append(i)
            f = 0.0
        scores.append(f)
    if bad:
        return scores, f"returned a non-finite or non-numeric score {values[bad[0]]!r} (response {bad[0]})", bad
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


class _FunctionWorker:
    """One subprocess serving one reward function."""

    def __init__(self, spec: dict):
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])  # a checkout that is not pip-installed
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen([sys.executable, "-m", "gdro_ray.rewards._reward_fn_worker"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True)
        self.buf = bytearray()
        _write_frame(self.proc.stdin, spec)
        hello = self._read(time.monotonic() + STARTUP_TIMEOUT_S)
        if hello is None:
            self.kill()
            raise RuntimeError(f"did not load within {STARTUP_TIMEOUT_S:.0f} s")
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
        """("ok", value) | ("error", reason) | None on timeout (the worker is then killed)."""
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


class RewardFunctionRunner:
    """Calls one user reward function for a sampler; see the module docstring for the rules."""

    def __init__(self, spec: dict, on_error: str = "zero", timeout_s: float = 2.0):
        if on_error not in ("zero", "stop"):
            raise ValueError(f"on_error must be 'zero' or 'stop', got {on_error!r}")
        self.spec, self.on_error, self.timeout_s = spec, on_error, float(timeout_s)
        self.name = spec.get("target") or spec["function"]
        self._worker: _FunctionWorker | None = None
        self.stats = {"calls": 0, "errors": 0, "timeouts": 0, "bad_values": 0, "worker_starts": 0}

    def _ensure_worker(self) -> _FunctionWorker:
        if self._worker is None or not self._worker.alive:
            self.stats["worker_starts"] += 1
            try:
                self._worker = _FunctionWorker(self.spec)
            except (RuntimeError, OSError, EOFError) as e:
                # Loading is not a per-row failure: no point scoring zeros for the rest of the run.
                raise RewardFunctionError(f"reward.function {self.name}: {e}") from None
        return self._worker

    def score(self, prompts: list[str], responses: list[str], answers: list[str], metadata: list[dict],
              row: Any = None) -> list[float]:
        """Scores of one call (n = len(responses)); `row` names the dataset row in errors."""
        n = len(responses)
        self.stats["calls"] += 1
        limit = self.timeout_s * max(n, 1)
        worker = self._ensure_worker()
        try:
            reply = worker.call((list(prompts), list(responses), list(answers), list(metadata)), limit)
        except (EOFError, BrokenPipeError, pickle.PickleError, OSError) as e:
            worker.kill()
            reply = ("error", f"the worker died ({type(e).__name__}: {e})")
        if reply is None:
            self.stats["timeouts"] += 1
            return self._fail(f"did not return within {limit:g} s (sampler.reward_timeout_s × {n} responses)",
                              row, [0.0] * n)
        if reply[0] != "ok":
            return self._fail(f"raised {reply[1]}", row, [0.0] * n)
        scores, problem, bad = check_scores(reply[1], n)
        if problem is not None:
            self.stats["bad_values"] += len(bad)
            return self._fail(problem, row, scores)
        return scores

    def _fail(self, problem: str, row: Any, scores: list[float]) -> list[float]:
        self.stats["errors"] += 1
        if self.on_error == "stop":
            where = f"row {row}" if row is not None else "a row"
            raise RewardFunctionError(f"reward.function {self.name}: {where}: {problem} (reward.on_error=stop)")
        return scores

    def close(self) -> None:
        if self._worker is not None:
            self._worker.kill()
            self._worker = None
