"""Checks of the user-extension keys: `reward.*`, the column keys of `data.*`, `metrics.loggers`.

Called from `validate` (loader.py) after the service checks; every failure is one `ConfigError`
line naming the key. Nothing is imported from the user's reward module here (`--dry-run` must not
run user code); the driver loads it once at start (`gdro_ray.rewards.custom`).
"""
from __future__ import annotations

import math

from gdro_ray.config.schema import Config

LOGGERS = ("tensorboard", "wandb", "mlflow")


def check_extensions(cfg: Config, need) -> None:
    from gdro_ray.rewards.custom import parse_target, resolve_spec

    r = cfg.reward
    if r.function:
        try:
            parse_target(r.function)
            resolve_spec(r.function)  # a .py file must exist
        except ValueError as e:
            need(False, "reward.function", str(e))
    need(math.isfinite(r.success_threshold), "reward.success_threshold", f"must be finite, got {r.success_threshold}")
    d = cfg.data
    for key in ("prompt_key", "answer_key", "tier_key", "id_key", "eval_prompt_key", "eval_answer_key",
                "eval_tier_key", "eval_id_key"):
        value = getattr(d, key)
        need(value == value.strip() and not value.startswith(".") and not value.endswith(".") and ".." not in value,
             f"data.{key}", f"must be a column name (dots reach into struct columns), got {value!r}")
    need(bool(d.split.strip()), "data.split", "must not be empty")
    need(bool(d.eval_split.strip()), "data.eval_split", "must not be empty")
    seen = set()
    for i, name in enumerate(cfg.metrics.loggers):
        need(name in LOGGERS, f"metrics.loggers[{i}]", f"must be one of {', '.join(LOGGERS)}, got {name!r}")
        need(name not in seen, f"metrics.loggers[{i}]", f"{name!r} is listed twice")
        seen.add(name)
