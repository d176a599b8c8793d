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
        where, _, fn = r.function.strip().rpartition(":")
        need(not (where and not fn.strip()), "reward.function",
             f"the function name after ':' is missing in {r.function!r} (write {where}:<function>)")
        try:
            parse_target(r.function)
            resolve_spec(r.function)  # a .py file must exist
        except ValueError as e:
            need(False, "reward.function", str(e))
    need(isinstance(r.concurrency, int) and 1 <= r.concurrency <= 64, "reward.concurrency",
         f"must be an integer in [1, 64] (calls in flight per sampler), got {r.concurrency!r}")
    need(math.isfinite(r.success_threshold), "reward.success_threshold", f"must be finite, got {r.success_threshold}")
    need(math.isfinite(r.import_timeout_s) and r.import_timeout_s > 0, "reward.import_timeout_s",
         f"must be a finite number of seconds > 0, got {r.import_timeout_s}")
    # below ~128 MiB the interpreter and its standard library do not start; 0 = no limit
    need(math.isfinite(r.memory_limit_mb) and (r.memory_limit_mb == 0 or r.memory_limit_mb >= 128),
         "reward.memory_limit_mb", f"must be 0 (no limit) or ≥ 128 MiB, got {r.memory_limit_mb}")
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
