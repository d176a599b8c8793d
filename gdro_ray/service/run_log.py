"""metrics.jsonl: the run's record, one JSON object per line, and its one writer.

Step records (the driver's loop) and evaluation records (`ValidationLoop.emit`, marked
`"type": "eval"`) go through the same `RunLog`, in the order they happen; each line is flushed
as it is written, so a kill loses at most the line being written (readers skip a torn line).
A resumed run first drops the records of the steps it will redo (`trim`).
"""
from __future__ import annotations

import json
from pathlib import Path

from gdro_ray.utils.io import atomic_write_text

FILE_NAME = "metrics.jsonl"


class RunLog:
    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / FILE_NAME
        self._file = None

    def append(self, record: dict) -> None:
        if self._file is None:
            self._file = open(self.path, "a")  # held for the run: closed by close() or trim()
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def records(self) -> list[dict]:
        """Every intact record so far (a line torn by a kill mid-write is skipped)."""
        out = []
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict):
                    out.append(rec)
        return out

    def trim(self, step: int) -> None:
        """Keep the step records of steps before `step` and their evaluations (a resumed run
        appends the later ones again)."""
        self.close()
        if not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) < step:
                    kept.append(line + "\n")
            except (json.JSONDecodeError, AttributeError):  # a line torn by a kill mid-write
                pass
        atomic_write_text(self.path, "".join(kept))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
