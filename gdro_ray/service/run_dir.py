"""Run folders: where a run writes, when a new run may start there, and what `--resume` accepts.

Everything here runs before Ray starts, so every refusal is one line and leaves the folder as it
was. A new run needs an empty (or absent) writable folder; `--overwrite` clears a folder that is
a previous gdro-ray run, never an arbitrary one. `--resume RUN_DIR` takes the run's own
`config.yaml` plus key=value overrides: only the keys of `CHANGEABLE_ON_RESUME` may differ from
it (the rest define the problem the checkpoint continues), and each override is tried against the
checkpoint's adversary state before anything starts: an override the state cannot take is refused naming the
key, and `config.yaml` is left untouched (the driver rewrites it only after a successful restore).
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from gdro_ray.config import Config, ConfigError, load_config
from gdro_ray.config.loader import MOVED_KEYS, parse_override
from gdro_ray.errors import UserError
from gdro_ray.service.run_lock import LOCK_NAME

# What `--resume` may change. A checkpoint continues one problem: its training set (the adversary's
# per-prompt state is indexed by it), model, reward and success threshold, and the held-out set and
# settings its base evaluation was made with (eval_base.json is read back and the final table
# compares against it; `validation.base_signature` lists what decides it). What may change is how
# long, where and how watched the run trains, and the controllers' and optimizer's settings, which
# are then tried on the checkpoint's adversary state. Every key not listed (a key added to the
# schema included) must stay as config.yaml has it; a name ending in '.' stands for its section.
# `out` may only name the run folder itself (a resumed run writes where it lives).
CHANGEABLE_ON_RESUME = (
    "steps", "name", "algorithm", "batch_size", "budget_mean",
    "classifier.", "prompt_gdro.", "rollout_gdro.", "grpo.", "sim.", "learner.", "weight_sync.",
    "checkpoint.", "metrics.", "cluster.", "eval.every", "eval.base_from", "reward.on_error",
    "sampler.num_samplers", "sampler.max_samplers", "sampler.max_restarts", "sampler.temperature",
    "sampler.top_p", "sampler.reward_timeout_s", "sampler.reward_chunk", "sampler.num_cpus", "sampler.num_gpus",
    "sampler.gpu_memory_utilization", "sampler.max_prompt_tokens", "sampler.shard_size", "sampler.ray_resource",
)


# Exceptions inside a changeable section: the LoRA settings shape the adapters and their optimizer
# state that the checkpoint holds, so a checkpoint continues only with the same ones.
FROZEN_ON_RESUME = ("learner.lora.",)


def changeable_on_resume(key: str) -> bool:
    def listed(names):
        return any(key == c or (c.endswith(".") and key.startswith(c)) for c in names)

    return listed(CHANGEABLE_ON_RESUME) and not listed(FROZEN_ON_RESUME)


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


def is_run_folder(run_dir: Path) -> bool:
    """A folder a gdro-ray run wrote: it holds our lock file, or (runs from before the lock file)
    a config.yaml of ours beside metrics.jsonl or checkpoints/."""
    if (run_dir / LOCK_NAME).is_file():
        return True
    cfg = run_dir / "config.yaml"
    if not cfg.is_file() or not ((run_dir / "metrics.jsonl").is_file() or (run_dir / "checkpoints").is_dir()):
        return False
    import yaml

    try:
        raw = yaml.safe_load(cfg.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(raw, dict) and {"algorithm", "sampler", "learner", "checkpoint"} <= set(raw)


def _named_files(cfg: Config | None, config_path: str | None) -> list[tuple[str, Path]]:
    """The local files a start reads: what `--overwrite` must never delete."""
    named = [("the config file", Path(config_path))] if config_path else []
    if cfg is not None:
        where, sep, _ = cfg.reward.function.rpartition(":")
        if sep and where.endswith(".py"):
            named.append(("reward.function", Path(where)))
        for key, value in (("data.train", cfg.data.train), ("data.eval", cfg.data.eval)):
            if value and Path(value).exists():
                named.append((key, Path(value)))
    return named


def _refuse_protected(run_dir: Path, cfg: Config | None, config_path: str | None) -> None:
    target = run_dir.resolve()
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        raise UserError(f"out: --overwrite would delete {run_dir}, which holds the current folder; "
                        "give the run folder itself as out=")
    if target in (Path("/"), Path.home().resolve()):
        raise UserError(f"out: --overwrite never clears {target}")
    for what, path in _named_files(cfg, config_path):
        p = path.resolve()
        if p == target or target in p.parents:
            raise UserError(f"out: --overwrite would delete {path} ({what} of this start), which is inside {run_dir}")


def check_new_run_dir(run_dir: Path, overwrite: bool = False, config_path: str | None = None,
                      cfg: Config | None = None) -> bool:
    """Refuse a folder a new run cannot own: a file, a link, unwritable, or holding anything already.

    Returns True when `--overwrite` is to clear an earlier run there: `clear_run_dir` does it once
    the run holds the folder's lock and its start checks have passed."""
    run_dir = Path(run_dir)
    for part in run_dir.parts:
        if len(os.fsencode(part)) > 255:
            raise UserError(f"out: the folder name {part[:40]}… is {len(os.fsencode(part))} bytes; names stop at 255")
    if run_dir.is_symlink():
        raise UserError(f"out: {run_dir} is a symbolic link; give the folder it points to ({os.path.realpath(run_dir)})")
    _check_writable(run_dir, "out")
    if not run_dir.is_dir() or not [p for p in run_dir.iterdir() if p.name != LOCK_NAME]:
        return False
    is_run = is_run_folder(run_dir)
    if not overwrite:
        hint = f"--resume {run_dir} to continue it, --overwrite to start over, or" if is_run else "use"
        raise UserError(f"out: {run_dir} is not empty; {hint} another out=")
    if not is_run:
        raise UserError(f"out: {run_dir} is not empty and not a gdro-ray run folder; --overwrite clears only run folders")
    _refuse_protected(run_dir, cfg, config_path)
    return True


def clear_run_dir(run_dir: Path) -> None:
    """Empty an earlier run's folder for `--overwrite`, keeping the lock this run holds."""
    for child in Path(run_dir).iterdir():
        if child.name == LOCK_NAME:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


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
    for was, now in MOVED_KEYS.items():  # a config.yaml written before a key moved
        if was in old and now not in old:
            old[now] = old.pop(was)
    if new.get("out") != old.get("out") and Path(new["out"]).resolve() != run_dir.resolve():
        raise ConfigError(f"out: a resumed run writes where it lives ({run_dir}), got out={new['out']!r}; "
                          "drop out= or start a new run")
    for key, value in new.items():  # schema order: the first frozen key that differs is named
        if key != "out" and key in old and old[key] != value and not changeable_on_resume(key):
            raise ConfigError(f"{key}: cannot change on resume ({old[key]!r} in {run_dir / 'config.yaml'}, "
                              f"{value!r} now); start a new run instead")
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
    if any(parse_override(item)[0] == "reward.function" for item in overrides):
        from gdro_ray.service.start_checks import record_reward_path

        cfg = record_reward_path(cfg)  # a relative file compares as the absolute one config.yaml records
    _check_overrides(run_dir, cfg, list(overrides), ckpt)
    return cfg, run_dir, ckpt
