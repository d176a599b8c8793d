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

Start-up (shared with the custom-reward worker, `custom.py`): `python -P -c` with the package's
folder appended to sys.path, so neither the current folder nor a file planted there (a `json.py`)
is importable in a worker, and the installed standard library and packages come first. Each
worker leads its own session, so a kill takes whatever it started too; each runs under an
address-space limit (`set_memory_limit`), so an allocation past it fails inside the worker instead
of taking the machine's memory.
"""
from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from gdro_ray.rewards.verify import compare_with_alarm, count, ensure_math_verify

MAX_WORKERS = max(1, min(4, os.cpu_count() or 1))
STARTUP_TIMEOUT_S = 60.0
WORKER_GRACE_S = 1.0  # extra wait for a worker's answer before it is killed
# Address-space limit of a math-verify worker: sympy on a capped box needs well under 200 MiB.
MEMORY_LIMIT_MB = 2048
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # a checkout that is not pip-installed


def worker_command(module: str) -> list[str]:
    """`python` running `module`'s serve() with no current folder on sys.path (see the module doc).

    -P drops the folder `-m`/`-c` would put first; the package root goes last, behind the
    standard library and the installed packages, so nothing in it can shadow them."""
    boot = f"import sys; sys.path.append(sys.argv[1]); from {module} import serve; serve()"
    return [sys.executable, "-P", "-c", boot, _PACKAGE_ROOT]


def worker_env() -> dict:
    """The caller's environment, less PYTHONPATH's empty entries (Python reads them as the current folder)."""
    env = dict(os.environ)
    if "PYTHONPATH" in env:
        kept = [p for p in env["PYTHONPATH"].split(os.pathsep) if p]
        if kept:
            env["PYTHONPATH"] = os.pathsep.join(kept)
        else:
            del env["PYTHONPATH"]
    return env


def start_worker(cmd: list[str], stderr=None) -> subprocess.Popen:
    """Start a worker in its own session (`stop_process` kills the whole group)."""
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, env=worker_env(),
                            close_fds=True, start_new_session=True)


def set_memory_limit(mb: float) -> None:
    """Cap this process's address space at `mb` MiB (0 = leave it); a later allocation past it
    raises MemoryError (or kills the process in C code that cannot report it)."""
    if not mb or mb <= 0:
        return
    import resource

    limit = int(mb * 2**20)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


# The command that starts a worker; tests swap it for a worker that hangs.
WORKER_CMD: list[str] = worker_command("gdro_ray.rewards._worker_pool")


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
    """Kill a worker subprocess and every process of its session, reap it and close its pipes.

    The group is killed before the worker is reaped: until then its pid, which is the group's id,
    cannot be reused by an unrelated process. After a reap the group may outlive its leader
    (children left behind); its id stays reserved while any member lives, so killing it is safe."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
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
        self.proc = start_worker(WORKER_CMD, stderr=subprocess.DEVNULL)
        self.buf = bytearray()
        count("worker_starts")
        if _read_line(self.proc, self.buf, time.monotonic() + STARTUP_TIMEOUT_S) != b"ready":
            self.kill()
            raise _WorkerDied("worker did not start")

    def ask(self, pred: str, gold: str, timeout_s: float) -> str:
        msg = json.dumps({"pred": pred, "gold": gold, "timeout_s": timeout_s}) + "\n"
        self.proc.stdin.write(msg.encode())
        self.proc.stdin.flush()
        line = _read_line(self.proc, self.buf, time.monotonic() + timeout_s + WORKER_GRACE_S)
        if line is None:
            self.kill()
            count("worker_kills")
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
    set_memory_limit(MEMORY_LIMIT_MB)  # a comparison that outgrows it is an "error", not a dead machine
    ensure_math_verify()
    proto.write(b"ready\n")
    proto.flush()
    for line in sys.stdin.buffer:
        try:
            req = json.loads(line)
            outcome = compare_with_alarm(str(req["pred"]), str(req["gold"]), float(req["timeout_s"]))
        except Exception:
            outcome = "error"
        proto.write((json.dumps({"r": outcome}) + "\n").encode())
        proto.flush()

