"""Helpers for the tests that watch a running training job from the outside (elastic, faults)."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path


def read_records(run_dir: str | Path, kind: str = "step") -> list[dict]:
    """The step records (kind="step") or evaluation records (kind="eval") written so far; a line
    still being written is skipped."""
    path = Path(run_dir) / "metrics.jsonl"
    out = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if (rec.get("type") == "eval") == (kind == "eval"):
            out.append(rec)
    return out


def wait_for(pred: Callable, timeout: float, what: str, alive: Callable[[], bool] = lambda: True):
    """Poll `pred` until it returns something truthy (returned); fail if the run ends or time runs out."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = pred()
        if got:
            return got
        if not alive():
            raise AssertionError(f"the run ended while waiting for {what}")
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def start_in_thread(trainer) -> tuple[threading.Thread, dict]:
    """Run `trainer.run()` in a daemon thread; its result or exception lands in the returned box."""
    box: dict = {}

    def target():
        try:
            box["result"] = trainer.run()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            box["error"] = e

    th = threading.Thread(target=target, daemon=True)
    th.start()
    return th, box
