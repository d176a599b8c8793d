"""metrics.jsonl: the run's record, one JSON object per line, and its one writer.

Step records (the driver's loop) and evaluation records (`ValidationLoop.emit`, marked
`"type": "eval"`) go through the same `RunLog`, in the order they happen (`JsonlLog`: flushed per
line, torn lines skipped, `trim` before a resume redoes steps). The step and evaluation records of
a step share its number, so `trim` keeps a step's evaluation with it.
"""
from __future__ import annotations

from pathlib import Path

from gdro_ray.utils.jsonl_log import JsonlLog

FILE_NAME = "metrics.jsonl"


class RunLog(JsonlLog):
    def __init__(self, run_dir: str | Path):
        super().__init__(Path(run_dir) / FILE_NAME)
