"""Run directories and atomic checkpoints.

Layout of `runs/<name>/`:
    config.yaml                 the resolved config (what `--resume` reloads)
    metrics.jsonl               one JSON record per step (fields: docs/metrics.md)
    eval_base.json, eval_final.json
    checkpoints/step_000010/    one complete checkpoint:
        learner/                HF-loadable model folder (safetensors + config + tokenizer) plus
                                optimizer.pt (loads with weights_only=True) and learner_state.json
        adversary.json          classifier, Prompt-GDRO, Rollout-GDRO state and data cursor
        driver.json             step, weights version, RNG state
    checkpoints/latest          name of the newest complete checkpoint

A checkpoint is staged in a hidden `.step_*.partial` folder and renamed into place, then
`latest` is rewritten atomically: a kill at any moment leaves the previous checkpoint intact.
Nothing a user loads is a pickle.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from gdro_ray.errors import CheckpointError
from gdro_ray.utils.io import atomic_dir, atomic_write_json, atomic_write_text


def checkpoint_root(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def write_checkpoint(run_dir: Path, step: int, write_learner, adversary_state: dict, driver_state: dict,
                     keep: int = 2) -> Path:
    """`write_learner(path)` writes the learner part into `path` (collective on all ranks)."""
    root = checkpoint_root(run_dir)
    name = f"step_{step:06d}"
    with atomic_dir(root / name) as stage:
        write_learner(str(stage / "learner"))
        atomic_write_json(stage / "adversary.json", adversary_state)
        atomic_write_json(stage / "driver.json", driver_state)
    atomic_write_text(root / "latest", name)
    complete = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in complete[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return root / name


def latest_checkpoint(run_dir: Path) -> Path:
    """The newest complete checkpoint, validated; raises CheckpointError naming what is wrong."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} does not exist")
    if not (run_dir / "config.yaml").is_file():
        raise CheckpointError(f"{run_dir} has no config.yaml: not a gdro_ray run directory")
    pointer = checkpoint_root(run_dir) / "latest"
    if not pointer.is_file():
        raise CheckpointError(f"{run_dir} has no complete checkpoint (missing {pointer})")
    ckpt = checkpoint_root(run_dir) / pointer.read_text().strip()
    for rel in ("adversary.json", "driver.json", "learner/config.json", "learner/model.safetensors"):
        if not (ckpt / rel).is_file():
            raise CheckpointError(f"checkpoint {ckpt} is incomplete or corrupt: missing {rel}")
    for rel in ("adversary.json", "driver.json"):
        try:
            json.loads((ckpt / rel).read_text())
        except json.JSONDecodeError as e:
            raise CheckpointError(f"checkpoint {ckpt}: {rel} is corrupt ({e.msg} at line {e.lineno})") from None
    return ckpt


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
