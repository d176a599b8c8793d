"""A run's append-only JSON-lines file (metrics.jsonl, samples.jsonl): one writer per file.

Each line is flushed as it is written, so a kill loses at most the line being written, and
readers skip a torn line. A resumed run first drops the lines of the steps it will redo (`trim`).
"""
from __future__ import annotations

import json
from pathlib import Path

from gdro_ray.utils.io import atomic_write_text


class JsonlLog:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file = None

    def append(self, record: dict) -> None:
        self.extend([record])

    def extend(self, records: list[dict]) -> None:
        if self._file is None:
            self._file = open(self.path, "a")  # held for the run: closed by close() or trim()
        for record in records:
            self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def records(self) -> list[dict]:
        """Every intact record so far."""
        out = []
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:  # a line torn by a kill mid-write
                    continue
                if isinstance(rec, dict):
                    out.append(rec)
        return out

    def trim(self, step: int) -> None:
        """Keep the records of steps before `step` (a record without one counts as step 0)."""
        self.close()
        if self.path.is_file():
            kept = [json.dumps(r) + "\n" for r in self.records() if int(r.get("step", 0)) < step]
            atomic_write_text(self.path, "".join(kept))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
