"""One writer per run folder, and the mark that says a folder is a gdro-ray run.

A run (new or resumed) holds an exclusive `flock` on `<run>/gdro-ray.lock` for as long as its
process lives: a second `gdro-ray train` with the same `out=` (or `--resume` of a run that is
still going) is refused in one line naming the holder, instead of both appending to one
metrics.jsonl and mixing checkpoints. The kernel drops the lock when the process dies, however
it dies, so a crashed run never leaves a stale lock. The file stays after the run and tells
`--overwrite` that the folder is ours to clear.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from gdro_ray.errors import UserError

LOCK_NAME = "gdro-ray.lock"


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return "another gdro-ray train"
    if not isinstance(info, dict):
        return "another gdro-ray train"
    return (f"gdro-ray train pid {info.get('pid', '?')} on {info.get('host', '?')}, "
            f"started {info.get('started', '?')}")


class RunLock:
    """The exclusive lock of one run folder, held until `release()` or the process ends."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.created_dir = False
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        if not self.run_dir.exists():
            try:
                self.run_dir.mkdir(parents=True)
            except FileExistsError:
                pass
            except OSError as e:
                raise UserError(f"out: cannot create {self.run_dir} ({e.strerror})") from None
            else:
                self.created_dir = True
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise UserError(f"out: cannot open {self.path} ({e.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(f"out: {self.run_dir} is in use by {_holder(self.path)}; wait for it to end "
                            "or use another out=") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv[1:]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd
        return self

    def only_lock_left(self) -> bool:
        """The folder holds nothing but the lock (a start that was refused before writing)."""
        try:
            return [p.name for p in self.run_dir.iterdir()] == [LOCK_NAME]
        except OSError:
            return False

    def release(self, remove_if_unused: bool = False) -> None:
        """Drop the lock; with `remove_if_unused`, a start that wrote nothing leaves the folder as it
        found it (no lock file; no folder if this start made it)."""
        if self._fd is None:
            return
        if remove_if_unused and self.only_lock_left():
            try:
                self.path.unlink()
                if self.created_dir:
                    self.run_dir.rmdir()
            except OSError:
                pass
        os.close(self._fd)
        self._fd = None
