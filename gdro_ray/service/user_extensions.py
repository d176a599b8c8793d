"""The driver's side of the user extensions: dataset columns, a custom reward, the loggers.

Kept out of driver.py so the step loop stays readable; each helper is called from one place there.
"""
from __future__ import annotations

from gdro_ray.config import Config, ConfigError


def data_columns(cfg: Config):
    """(train columns, eval columns) for `gdro_ray.data.table` from the data.* keys."""
    from gdro_ray.data.table import Columns

    d = cfg.data
    return (Columns(d.prompt_key, d.answer_key, d.tier_key, d.id_key, d.split, d.hub_config),
            Columns(d.eval_prompt_key, d.eval_answer_key, d.eval_tier_key, d.eval_id_key, d.eval_split,
                    d.eval_hub_config))


def reward_sampler_kwargs(cfg: Config) -> dict:
    """Sampler constructor arguments for scoring: `sampler.reward_chunk`, and `reward.function`.

    The function is imported once here, in a worker process like the samplers' (never in the
    driver itself, whose sys.exit or hang would be the run's), so a module that does not import,
    hangs past `reward.import_timeout_s`, exits or is interrupted while importing, or lacks the
    name stops the run at start with one line instead of in every sampler."""
    if not cfg.reward.function:
        return {"reward_chunk": cfg.sampler.reward_chunk}
    from gdro_ray.rewards.custom import check_import, resolve_spec

    try:
        spec = resolve_spec(cfg.reward.function)
        spec.update(import_timeout_s=cfg.reward.import_timeout_s, memory_limit_mb=cfg.reward.memory_limit_mb,
                    call_timeout_s=cfg.reward.timeout_s, concurrency=cfg.reward.concurrency)
        check_import(spec)
    except ValueError as e:
        raise ConfigError(f"reward.function: {e}") from None
    return {"reward_function": spec, "reward_on_error": cfg.reward.on_error, "reward_chunk": cfg.sampler.reward_chunk}


def shard_extras(cfg: Config, examples: list[dict]) -> dict:
    """What a custom reward needs per prompt of a shard: the row id named in errors, the row's
    other columns (`metadata`; for sets without one, their id/tier/source)."""
    if not cfg.reward.function:
        return {}
    return {"rows": [ex.get("id") for ex in examples],
            "metadata": [ex.get("metadata") if ex.get("metadata") is not None else
                         {k: ex.get(k) for k in ("id", "tier", "source")} for ex in examples]}


def success_indicators(cfg: Config, rewards: list):
    """Per prompt its rollouts' success in [0,1] for the adversary (pass@k, bins).

    math-verify: the reward itself ({0,1}, or {−1,+1} mapped). A custom reward can take any
    finite value, so success is reward ≥ reward.success_threshold."""
    if cfg.reward.function:
        return [(r >= cfg.reward.success_threshold).astype(float) for r in rewards]
    return [(r + 1) / 2 if cfg.grpo.reward_scale == "pm1" else r for r in rewards]


def reward_error_line(exc: BaseException) -> str | None:
    """The one-line message of a `reward.on_error=stop` failure raised inside a sampler, else None."""
    from gdro_ray.rewards.custom import RewardFunctionError

    cause = getattr(exc, "cause", None)
    for e in (cause, exc):  # the cause first: the dual-class RayTaskError carries the traceback in its args
        if isinstance(e, RewardFunctionError):
            return str(e.args[0]) if e.args else str(e)
    return None


def open_run_loggers(cfg: Config, run_dir, config_dict: dict):
    """The run's experiment loggers (gdro_ray/metrics/loggers.py) with the config logged, or None."""
    from gdro_ray.metrics.loggers import open_loggers

    run = open_loggers(cfg.metrics, run_dir)
    if run is not None:
        run.log_config(config_dict)
        print(f"loggers: {run.describe()}", flush=True)
    return run


def check_logger_packages(cfg: Config) -> None:
    """Fail at start, before any actor, when a logger's package is absent (one line naming the extra)."""
    from gdro_ray.metrics.loggers import EXTRAS, _require, logger_names

    for name in logger_names(cfg.metrics):
        if name in EXTRAS:
            _require(name)
