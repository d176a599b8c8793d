"""Checks of a `gdro-ray train` start that go beyond the config's own values: the machine, the
files that keys name, the held-out set's tiers, the experiment loggers.

`check_start` runs in the driver after the config (or `--resume`) is resolved and before Ray
starts or a run folder is touched, so a refusal is one line and leaves nothing behind; `--dry-run`
runs it too, without the checks that need the network. What needs the loaded data (the tiers of
a custom held-out set) is checked again in the driver's set-up as soon as the set is loaded,
still before any actor starts. `record_reward_path` fixes a relative reward file once, at a new
run's start, so config.yaml names the file that was used.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from gdro_ray.config import Config, ConfigError


def record_reward_path(cfg: Config) -> Config:
    """`cfg` with a relative `reward.function` file made absolute (against the current folder).

    config.yaml keeps what the run used: a resume from another folder imports the same file, not
    whatever file of that name the other folder holds. A module target (`pkg.mod:fn`) is kept."""
    target = cfg.reward.function.strip()
    where, sep, fn = target.rpartition(":")
    if not sep or not where.endswith(".py"):
        return cfg
    path = Path(where).expanduser()
    if path.is_absolute() and where == str(path):
        return cfg
    absolute = f"{(Path.cwd() / path).resolve()}:{fn}"
    return dataclasses.replace(cfg, reward=dataclasses.replace(cfg.reward, function=absolute))


def check_learner_fits(cfg: Config) -> None:
    """A local Ray is given as many logical CPUs as the run asks for, so it never refuses a learner
    group larger than the machine: the group's placement waits forever. One process per CPU rank is
    the most a machine runs; a larger group needs a cluster (where the wait has a time limit)."""
    if cfg.cluster.address or os.environ.get("RAY_ADDRESS") or cfg.learner.num_gpus > 0:
        return
    cpus = cfg.cluster.num_cpus or os.cpu_count() or 1
    if cfg.learner.world_size > cpus:
        raise ConfigError(f"learner.world_size: {cfg.learner.world_size} CPU ranks on a local run with {cpus} CPUs "
                          f"(one process per rank): use at most {cpus}, or join a cluster with cluster.address")


def toy_eval_set(cfg: Config) -> list[dict] | None:
    """The held-out set as the driver builds it, when it is the embedded toy one (pure, fast)."""
    if cfg.data.eval != "toy":
        return None
    from gdro_ray.data import toy_task
    from gdro_ray.data.eval_sets import spread_subset

    return spread_subset(toy_task.make_eval_split(cfg.data.toy_eval_per_tier), cfg.data.max_eval_prompts)


def check_start(cfg: Config, run_dir: Path, resume: bool, network: bool = True) -> None:
    """Every start check that needs no Ray; `network=False` (`--dry-run`) leaves out connecting."""
    from gdro_ray.metrics.loggers import check_logger_settings
    from gdro_ray.service.validation import check_keep_best_on, read_base_from

    check_learner_fits(cfg)
    check_logger_settings(cfg.metrics, network=network)
    # a resumed run reads its own eval_base.json (as the driver does), so its source may be gone
    if cfg.eval.base_from and not (resume and (Path(run_dir) / "eval_base.json").is_file()):
        read_base_from(cfg.eval.base_from)
    if cfg.checkpoint.keep_best:
        toy = toy_eval_set(cfg)
        if toy is not None:
            check_keep_best_on(cfg.checkpoint.keep_best, cfg.eval.k, toy)
