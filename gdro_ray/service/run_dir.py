"""Run folders: where a run writes, when a new run may start there, and what `--resume` accepts.

Everything here runs before Ray starts, so every refusal is one line and leaves the folder as it
was. A new run needs an empty (or absent) writable folder; `--overwrite` clears a folder that is
a previous gdro-ray run, never an arbitrary one. `--resume RUN_DIR` takes the run's own
`config.yaml` plus key=value overrides, and each override is tried against the checkpoint's
adversary state before anything starts: an override the state cannot take is refused naming the
key, and `config.yaml` is left untouched (the driver rewrites it only after a successful restore).
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from gdro_ray.config import Config, ConfigError, load_config
from gdro_ray.config.loader import parse_override
from gdro_ray.errors import UserError

# Files that mark a folder as a gdro-ray run (what `--overwrite` may clear).
RUN_MARKERS = ("config.yaml", "metrics.jsonl", "checkpoints")
# Keys whose change makes the checkpoint describe another run: the adversary's per-prompt state is
# indexed by the training set, the learner's weights and optimizer by the model.
FROZEN_ON_RESUME = ("data.train", "data.max_prompts", "data.toy_pool_size", "model.path")


def resolve_run_dir(cfg: Config) -> Path:
    if cfg.out:
        return Path(cfg.out)
    name = cfg.name or f"{cfg.preset}-{cfg.algorithm}-s{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Path("runs") / name


def _check_writable(run_dir: Path, key: str) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{key}: {run_dir} is a file, not a folder")
    probe = run_dir
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{key}: {probe} (on the way to {run_dir}) is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{key}: cannot write in {probe} (permission denied)")


def check_new_run_dir(run_dir: Path, overwrite: bool = False) -> None:
    """Refuse a folder a new run cannot own: a file, unwritable, or holding anything already."""
    run_dir = Path(run_dir)
    _check_writable(run_dir, "out")
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return
    is_run = any((run_dir / m).exists() for m in RUN_MARKERS)
    if not overwrite:
        hint = f"--resume {run_dir} to continue it, --overwrite to start over, or" if is_run else "use"
        raise UserError(f"out: {run_dir} is not empty; {hint} another out=")
    if not is_run:
        raise UserError(f"out: {run_dir} is not empty and not a gdro-ray run folder; --overwrite clears only run folders")
    shutil.rmtree(run_dir)


def _adversary_takes(cfg: Config, state: dict) -> str | None:
    """Why the checkpoint's adversary state cannot be loaded under `cfg`, or None (pure, no Ray)."""
    from gdro_ray.algorithms.adversary import Adversary

    saved = state.get("adversary", state)
    try:
        num_prompts = int(saved["config"]["num_prompts"])
        adv = Adversary.from_config(cfg, num_prompts)
        adv.load_state_dict(saved)
    except (ValueError, KeyError, TypeError, IndexError) as e:
        return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return None


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _saved_values(run_dir: Path) -> dict:
    """The run's config.yaml as flat key → value, read as data (it may predate today's checks)."""
    import yaml

    try:
        raw = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{run_dir / 'config.yaml'}: unreadable ({type(e).__name__})") from None
    return _flat(raw) if isinstance(raw, dict) else {}


def _check_overrides(run_dir: Path, cfg: Config, overrides: list[str], ckpt: Path) -> None:
    from gdro_ray.config.loader import to_dict
    from gdro_ray.service.checkpoint import read_json

    old, new = _saved_values(run_dir), _flat(to_dict(cfg))
    for key in FROZEN_ON_RESUME:
        if key in old and old[key] != new.get(key):
            raise ConfigError(f"{key}: cannot change on resume ({old.get(key)!r} in {run_dir / 'config.yaml'}); "
                              "start a new run instead")
    drv = read_json(ckpt / "driver.json")
    if cfg.steps < int(drv["step"]):
        raise ConfigError(f"steps: {cfg.steps} is before the checkpoint's step {drv['step']} ({ckpt.name})")
    state = read_json(ckpt / "adversary.json")
    why = _adversary_takes(cfg, state)
    if why is None:
        return
    # Name the override responsible: the first one that fails on its own.
    for item in overrides:
        key = parse_override(item)[0]
        try:
            alone = load_config(run_dir / "config.yaml", [item])
        except ConfigError:  # the saved config needs another override too (it predates a check)
            continue
        if _adversary_takes(alone, state) is not None:
            raise ConfigError(f"{key}: cannot change on resume, the checkpoint {ckpt.name} does not fit it ({why})")
    raise ConfigError(f"config: the checkpoint {ckpt.name} does not fit the overrides {' '.join(overrides)} ({why})")


def prepare_resume(resume: str, config_path: str | None, overrides: list[str]) -> tuple[Config, Path, Path]:
    """(config, run folder, verified checkpoint) for `--resume`; one-line UserError otherwise."""
    from gdro_ray.service.checkpoint import latest_checkpoint

    if not resume or not resume.strip():
        raise UserError("--resume: needs a run folder (got an empty path)")
    if config_path:
        raise UserError(f"--resume: a run continues with its own config.yaml; give changes as key=value "
                        f"overrides, not the file {config_path}")
    run_dir = Path(resume)
    ckpt = latest_checkpoint(run_dir)  # verified against its manifest; falls back with a message
    _check_writable(run_dir, "--resume")
    try:  # a value the saved config holds but today's checks refuse can be fixed by an override
        cfg = load_config(run_dir / "config.yaml", overrides)
    except ConfigError as e:
        raise ConfigError(f"{e} (resuming {run_dir / 'config.yaml'}; an override key=value replaces a saved value)") from None
    _check_overrides(run_dir, cfg, list(overrides), ckpt)
    return cfg, run_dir, ckpt
