"""Worker subprocesses that run math-verify for callers off the main thread.

Why: math-verify's time limits use SIGALRM, which only the main thread can receive, and a
thread cannot be stopped from outside. A subprocess can: it runs the comparison on its own main
thread under its own interval timer (`compare_with_alarm`), and the caller SIGKILLs it when it
does not answer in `timeout_s + WORKER_GRACE_S` (C code that ignores signals).

Protocol: the worker prints `ready` once warm, then for each JSON line
`{"pred", "gold", "timeout_s"}` on stdin answers one JSON line `{"r": "1"|"0"|"timeout"|"error"}`.
It exits when stdin closes, so a dead caller leaves no worker behind.

Pool: up to `MAX_WORKERS` idle-or-busy workers per process, created lazily; a caller borrows an
idle one (or waits) and returns it after the answer; a killed worker is dropped.
"""
from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import threading
import importlib
import time
from pathlib import Path

# The package re-exports the function `math_reward` under the submodule's name: fetch the module.
_mr = importlib.import_module("gdro_ray.rewards.math_reward")

MAX_WORKERS = max(1, min(4, os.cpu_count() or 1))
STARTUP_TIMEOUT_S = 60.0
# The command that starts a worker; tests swap it for a worker that hangs.
WORKER_CMD: list[str] = [sys.executable, "-m", "gdro_ray.rewards._worker_pool"]


class _WorkerDied(Exception):
    pass


def _read_line(proc: subprocess.Popen, buf: bytearray, deadline: float) -> bytes | None:
    """One line from the worker's stdout by `deadline` (None on timeout)."""
    fd = proc.stdout.fileno()
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            raise _WorkerDied("worker closed its output")
        buf.extend(chunk)
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return line


def stop_process(proc: subprocess.Popen) -> None:
    """Kill a worker subprocess (if still running), reap it and close its pipes."""
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    for stream in (proc.stdin, proc.stdout):
        try:
            stream.close()
        except OSError:
            pass


class _Worker:
    def __init__(self) -> None:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])  # works from a checkout, not installed
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "") if env.get("PYTHONPATH") else root
        self.proc = subprocess.Popen(WORKER_CMD, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=env, close_fds=True)
        self.buf = bytearray()
        _mr._count("worker_starts")
        if _read_line(self.proc, self.buf, time.monotonic() + STARTUP_TIMEOUT_S) != b"ready":
            self.kill()
            raise _WorkerDied("worker did not start")

    def ask(self, pred: str, gold: str, timeout_s: float) -> str:
        msg = json.dumps({"pred": pred, "gold": gold, "timeout_s": timeout_s}) + "\n"
        self.proc.stdin.write(msg.encode())
        self.proc.stdin.flush()
        line = _read_line(self.proc, self.buf, time.monotonic() + timeout_s + _mr.WORKER_GRACE_S)
        if line is None:
            self.kill()
            _mr._count("worker_kills")
            return "timeout"
        return json.loads(line)["r"]

    def kill(self) -> None:
        stop_process(self.proc)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


_idle: list[_Worker] = []
_n_workers = 0
_cond = threading.Condition()


def _borrow() -> _Worker:
    global _n_workers
    with _cond:
        while not _idle and _n_workers >= MAX_WORKERS:
            _cond.wait()
        if _idle:
            return _idle.pop()
        _n_workers += 1
    try:
        return _Worker()  # started outside the lock: start-up takes a second
    except BaseException:
        with _cond:
            _n_workers -= 1
            _cond.notify()
        raise


def _give_back(worker: _Worker) -> None:
    global _n_workers
    with _cond:
        if worker.alive:
            _idle.append(worker)
        else:
            _n_workers -= 1
        _cond.notify()


def compare(pred: str, gold: str, timeout_s: float) -> str:
    """"1", "0", "timeout" or "error" from a pooled worker."""
    try:
        worker = _borrow()
    except Exception:
        return "error"
    try:
        return worker.ask(pred, gold, timeout_s)
    except Exception:
        worker.kill()
        return "error"
    finally:
        _give_back(worker)


def prewarm() -> None:
    """Start one worker now (import + warm-up, ~1 s of CPU), so the first scored chunk does not wait."""
    try:
        _give_back(_borrow())
    except Exception:  # noqa: BLE001 - the first real call retries and counts its own failure
        pass


def shutdown() -> None:
    """Stop all idle workers (busy ones stop when their caller returns them and exits)."""
    global _n_workers
    with _cond:
        workers, _idle[:] = list(_idle), []
        _n_workers -= len(workers)
    for w in workers:
        w.kill()


atexit.register(shutdown)


def serve() -> None:
    """Worker main loop (runs in the subprocess)."""
    proto = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints from libraries must not corrupt the protocol
    _mr._ensure_math_verify()
    proto.write(b"ready\n")
    proto.flush()
    for line in sys.stdin.buffer:
        try:
            req = json.loads(line)
            outcome = _mr.compare_with_alarm(str(req["pred"]), str(req["gold"]), float(req["timeout_s"]))
        except Exception:
            outcome = "error"
        proto.write((json.dumps({"r": outcome}) + "\n").encode())
        proto.flush()


if __name__ == "__main__":
    serve()
