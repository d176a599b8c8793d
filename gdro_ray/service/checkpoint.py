"""Run directories and atomic checkpoints.

Layout of `runs/<name>/`:
    config.yaml                 the resolved config (what `--resume` reloads)
    metrics.jsonl               one JSON record per step, and one per evaluation (`"type": "eval"`;
                                fields: docs/metrics.md)
    eval_base.json, eval_final.json
    checkpoints/step_000010/    one complete checkpoint:
        learner/                HF-loadable model folder (safetensors + config + tokenizer) plus
                                optimizer.pt (loads with weights_only=True) and learner_state.json;
                                with `learner.lora` the folder's weights are the merged ones and
                                learner/adapter/ holds the adapter in peft's format
        adversary.json          classifier, Prompt-GDRO, Rollout-GDRO state and data cursor
        driver.json             step, weights version, RNG state
    checkpoints/latest          name of the newest complete checkpoint
    checkpoints/best.json       with `checkpoint.keep_best`: the checkpoint with the best held-out
                                value so far ({name, step, metric, value}); rotation spares it

A checkpoint is staged in a hidden `.step_*.partial` folder, closed by `manifest.json` (sizes and
SHA-256 of every file, written last), renamed into place, then `latest` is rewritten atomically:
a kill at any moment leaves the previous checkpoint intact, and the next write removes the stale
staging folder. `--resume` verifies the manifest before anything starts (checkpoint_verify.py).
Nothing a user loads is a pickle.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from gdro_ray.errors import CheckpointError
from gdro_ray.service.checkpoint_verify import newest_intact, remove_partials, write_manifest
from gdro_ray.utils.io import atomic_dir, atomic_write_json, atomic_write_text


def checkpoint_root(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def write_checkpoint(run_dir: Path, step: int, write_learner, adversary_state: dict, driver_state: dict,
                     keep: int = 2) -> Path:
    """`write_learner(path)` writes the learner part into `path` (collective on all ranks)."""
    root = checkpoint_root(run_dir)
    name = checkpoint_name(step)
    remove_partials(root)  # staging copies left by a crash during an earlier write
    with atomic_dir(root / name) as stage:
        write_learner(str(stage / "learner"))
        atomic_write_json(stage / "adversary.json", adversary_state)
        atomic_write_json(stage / "driver.json", driver_state)
        write_manifest(stage)  # last: its presence means every file above was complete
    atomic_write_text(root / "latest", name)
    prune_checkpoints(run_dir, keep)
    return root / name


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Remove all but the newest `keep` complete checkpoints (0 = keep all); the one `best.json`
    names (`checkpoint.keep_best`) is never removed."""
    root = checkpoint_root(run_dir)
    best = (read_best(run_dir) or {}).get("name")
    complete = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in complete[:-keep] if keep > 0 else []:
        if old.name != best:
            shutil.rmtree(old, ignore_errors=True)


def checkpoint_name(step: int) -> str:
    return f"step_{step:06d}"


def read_best(run_dir: Path) -> dict | None:
    """`checkpoints/best.json`: {name, step, metric, value} of the best checkpoint so far, or None."""
    path = checkpoint_root(run_dir) / "best.json"
    if not path.is_file():
        return None
    try:
        best = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # written atomically, so only a hand edit gets here; the next best rewrites it
    return best if isinstance(best, dict) and "name" in best else None


def mark_best(run_dir: Path, step: int, metric: str, value: float, keep: int) -> Path:
    """Pin the (complete) checkpoint of `step` as the best by `metric`; the previous best, no longer
    pinned, goes the way `keep` says."""
    ckpt = checkpoint_root(run_dir) / checkpoint_name(step)
    if not ckpt.is_dir():
        raise CheckpointError(f"best checkpoint {ckpt} does not exist")
    atomic_write_json(checkpoint_root(run_dir) / "best.json",
                      {"name": ckpt.name, "step": int(step), "metric": metric, "value": float(value)})
    prune_checkpoints(run_dir, keep)
    return ckpt


def latest_checkpoint(run_dir: Path, say=None) -> Path:
    """The newest intact checkpoint, verified against its manifest (checkpoint_verify.py); a damaged
    newest one falls back to the newest intact earlier one, said through `say` (stderr by default).
    Raises CheckpointError naming what is wrong."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} does not exist")
    if not (run_dir / "config.yaml").is_file():
        raise CheckpointError(f"{run_dir} has no config.yaml: not a gdro_ray run directory")
    return newest_intact(run_dir, say or (lambda msg: print(f"gdro-ray: {msg}", file=sys.stderr, flush=True)))


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
