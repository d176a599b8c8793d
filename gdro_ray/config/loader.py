"""Build a validated `Config` from a preset, a YAML file and dotted `key=value` overrides.

Order of precedence (later wins): schema defaults < preset < YAML file < overrides.
Every problem is reported as one `ConfigError` line that names the offending key.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from gdro_ray.config.checks import check_service
from gdro_ray.config.checks_extensions import check_extensions
from gdro_ray.config.gpu_checks import check_gpu_keys
from gdro_ray.config.profiles import apply_profile, deep_merge, recorded_values
from gdro_ray.config.schema import MAX_REFILL_ROUNDS, Config
from gdro_ray.errors import UserError


class ConfigError(UserError, ValueError):
    """A configuration problem; the message names the key."""


def preset_names() -> list[str]:
    root = resources.files("gdro_ray.config") / "presets"
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML silently keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in seen:
                raise ConfigError(f"{key}: given twice in one mapping (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(text: str, source: str) -> dict:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping of keys, got {type(data).__name__}")
    return data


def load_preset(name: str) -> dict:
    # Only a name from presets/: a path here would load any YAML as a trusted preset; a user's own
    # file goes as the config file argument, where it is read as the user's layer.
    if name not in preset_names():
        raise ConfigError(f"preset: unknown preset {name!r} (known: {', '.join(preset_names())}); "
                          "a config file of your own goes as the first argument, not as preset=")
    path = resources.files("gdro_ray.config") / "presets" / f"{name}.yaml"
    return _read_yaml(path.read_text(), f"preset {name}")


def parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override '{item}': expected key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{item}': empty key")
    if any(not part.strip() for part in key.split(".")):
        raise ConfigError(f"{key}: not a config key (an empty name before or after a '.'; keys are section.key)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, dict) and not raw.lstrip().startswith("{"):
        # `path.py:` or `a: b` reads as a YAML mapping; on the command line it is the text typed
        # (a mapping is written {k: v}), so the key's own check can say what is wrong with it
        value = raw
    return key, value


def check_unique_overrides(overrides) -> None:
    """Refuse a key given twice among command-line overrides (the last would silently win)."""
    seen: dict[str, str] = {}
    for item in overrides:
        key = parse_override(item)[0]
        if key in seen:
            raise ConfigError(f"{key}: given twice on the command line ({seen[key]!r} and {item!r}); keep one")
        seen[key] = item


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for p in parts[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{key}: '{p}' is a value, not a section")
        node = child
    node[parts[-1]] = value


# Keys that moved to another section; the old spelling is still read (files and run directories
# written before the move), one layer at a time so the precedence of layers is unchanged.
MOVED_KEYS = {"sampler.eval_k": "eval.k", "sampler.eval_temperature": "eval.temperature",
              "sampler.eval_top_p": "eval.top_p"}


def _move_legacy_keys(tree: dict, source: str) -> dict:
    for old, new in MOVED_KEYS.items():
        (sec, key), (new_sec, new_key) = old.split("."), new.split(".")
        section = tree.get(sec)
        if isinstance(section, dict) and key in section:
            target = tree.setdefault(new_sec, {})
            if not isinstance(target, dict):
                raise ConfigError(f"{new_sec}: is a section; set its keys as {new_sec}.<key>=...")
            if new_key in target:
                raise ConfigError(f"{old}: set together with its new name {new} ({source}); keep only {new}")
            tree = dict(tree, **{sec: {k: v for k, v in section.items() if k != key}})
            tree[new_sec] = dict(target, **{new_key: section[key]})
    return tree


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = get_origin(tp)
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}: must be one of {', '.join(map(str, choices))}, got {value!r}")
        return value
    if origin is list:
        (inner,) = get_args(tp)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: must be a list, got {value!r}")
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{key}: must be a mapping of names to values, e.g. {{enable_thinking: false}}; "
                              f"got {value!r}")
        bad = next((k for k, v in value.items() if isinstance(v, (dict, list))), None)
        if bad is not None:
            raise ConfigError(f"{key}.{bad}: must be a plain value (number, text, true/false), got {value[bad]!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: must be a number, got {value!r}")
        if not math.isfinite(value):  # nan passes every `x > 0` check by being incomparable
            raise ConfigError(f"{key}: must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: must be a string, got {value!r}")
        return "" if value is None else str(value)
    raise ConfigError(f"{key}: unsupported type {tp}")  # pragma: no cover - schema bug


def _build(cls: type, data: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in fields:
            near = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean '{prefix}{near[0]}'?)" if near else ""
            raise ConfigError(f"{full}: unknown config key{hint}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{full}: is a section; set its keys as {full}.<key>=...")
            kwargs[key] = _build(tp, value, f"{full}.")
        else:
            kwargs[key] = _coerce(value, tp, full)
    return cls(**kwargs)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def validate(cfg: Config) -> Config:
    """Semantic checks that types alone cannot express. Raises ConfigError naming the key."""

    def need(ok: bool, key: str, msg: str):
        if not ok:
            raise ConfigError(f"{key}: {msg}")

    c, p, r, g = cfg.classifier, cfg.prompt_gdro, cfg.rollout_gdro, cfg.grpo
    need(cfg.steps >= 1, "steps", f"must be ≥ 1, got {cfg.steps}")
    need(cfg.batch_size >= 1, "batch_size", f"must be ≥ 1, got {cfg.batch_size}")
    need(cfg.budget_mean >= 1, "budget_mean", f"must be ≥ 1, got {cfg.budget_mean}")
    need(c.k >= 1, "classifier.k", f"must be ≥ 1, got {c.k}")
    need(c.window >= 0, "classifier.window", f"must be ≥ 0, got {c.window}")
    need(len(c.edges) >= 1, "classifier.edges", "needs at least one edge")
    need(all(0.0 < e < 1.0 for e in c.edges), "classifier.edges", f"must lie in (0,1), got {c.edges}")
    need(all(a < b for a, b in zip(c.edges, c.edges[1:])), "classifier.edges", f"must be strictly increasing, got {c.edges}")
    need(0.0 <= c.hysteresis < 0.5, "classifier.hysteresis", f"must be in [0,0.5), got {c.hysteresis}")
    need(p.eta > 0, "prompt_gdro.eta", f"must be > 0, got {p.eta}")
    need(0.0 <= p.gamma < 1.0, "prompt_gdro.gamma", f"must be in [0,1), got {p.gamma}")
    need(0.0 < p.beta <= 1.0, "prompt_gdro.beta", f"must be in (0,1], got {p.beta}")
    need(0.0 < p.share_floor <= 1.0, "prompt_gdro.share_floor", f"must be in (0,1], got {p.share_floor}")
    need(p.max_repeats >= 0, "prompt_gdro.max_repeats", f"must be ≥ 0 (0 = no limit), got {p.max_repeats}")
    need(p.score_clip >= 0, "prompt_gdro.score_clip", f"must be ≥ 0 (0 = no clip), got {p.score_clip}")
    need(p.worst_eta >= 0, "prompt_gdro.worst_eta", f"must be ≥ 0 (0 = no worst-group weight), got {p.worst_eta}")
    need(not p.informative_norm or p.mode == "reweight", "prompt_gdro.informative_norm",
         f"normalises reweight mode's advantage weights; it does nothing with prompt_gdro.mode={p.mode}")
    need(c.refresh_every >= 1, "classifier.refresh_every", f"must be ≥ 1, got {c.refresh_every}")
    need(p.omega_max >= 1.0, "prompt_gdro.omega_max", f"must be ≥ 1, got {p.omega_max}")
    need(r.n_min >= 2, "rollout_gdro.n_min", f"must be ≥ 2 (a group of one has no baseline), got {r.n_min}")
    need(r.n_min <= r.n_max, "rollout_gdro.n_min", f"n_min={r.n_min} > n_max={r.n_max}")
    need(r.n_min <= cfg.budget_mean <= r.n_max, "budget_mean",
         f"n̄={cfg.budget_mean} outside [rollout_gdro.n_min, rollout_gdro.n_max]=[{r.n_min}, {r.n_max}]")
    need(c.window == 0 or r.n_max <= 255, "rollout_gdro.n_max",
         f"must be ≤ 255 with classifier.window > 0 (a visit's rollouts are stored as one byte), got {r.n_max}")
    need(r.dual_lr > 0, "rollout_gdro.dual_lr", f"must be > 0, got {r.dual_lr}")
    need(r.v_min > 0, "rollout_gdro.v_min", f"must be > 0, got {r.v_min}")
    need(0.0 < r.variance_beta <= 1.0, "rollout_gdro.variance_beta", f"must be in (0,1], got {r.variance_beta}")
    need(0.0 <= g.clip_low < 1.0, "grpo.clip_low", f"must be in [0,1), got {g.clip_low}")
    need(g.clip_high >= 0.0, "grpo.clip_high", f"must be ≥ 0, got {g.clip_high}")
    need(g.kl_coef >= 0.0, "grpo.kl_coef", f"must be ≥ 0, got {g.kl_coef}")
    need(g.adv_clip > 0.0, "grpo.adv_clip", f"must be > 0, got {g.adv_clip}")
    need(g.mini_batches >= 1, "grpo.mini_batches", f"must be ≥ 1, got {g.mini_batches}")
    need(g.epochs >= 1, "grpo.epochs", f"must be ≥ 1, got {g.epochs}")
    need(0 <= g.max_refill_rounds <= MAX_REFILL_ROUNDS, "grpo.max_refill_rounds",
         f"must be in [0, {MAX_REFILL_ROUNDS}] (each round is another sampling pass of the step), "
         f"got {g.max_refill_rounds}")
    off = cfg.cluster.off_policy
    need(not off or (cfg.sampler.temperature == 1.0 and cfg.sampler.top_p == 1.0), "cluster.off_policy",
         f"the importance ratio uses the samplers' raw (T=1, full-vocabulary) log-probs: needs sampler.temperature=1 "
         f"and sampler.top_p=1, got {cfg.sampler.temperature:g} and {cfg.sampler.top_p:g}")
    need(not (off and g.filter_all_equal), "grpo.filter_all_equal",
         "dynamic sampling refills a step synchronously; it cannot be combined with cluster.off_policy")
    need(cfg.sim.num_prompts >= 2, "sim.num_prompts", f"must be ≥ 2, got {cfg.sim.num_prompts}")
    need(cfg.sampler.num_samplers >= 1, "sampler.num_samplers", f"must be ≥ 1, got {cfg.sampler.num_samplers}")
    need(cfg.sampler.num_samplers <= cfg.sampler.max_samplers, "sampler.num_samplers",
         f"{cfg.sampler.num_samplers} > sampler.max_samplers={cfg.sampler.max_samplers}")
    need(cfg.sampler.reward_timeout_s > 0, "sampler.reward_timeout_s", "must be > 0")
    need(cfg.learner.world_size >= 1, "learner.world_size", f"must be ≥ 1, got {cfg.learner.world_size}")
    ws = cfg.weight_sync
    need(ws.backend != "nccl" or (cfg.learner.num_gpus > 0 and cfg.sampler.num_gpus > 0), "weight_sync.backend",
         f"nccl needs learner.num_gpus > 0 and sampler.num_gpus > 0 (got {cfg.learner.num_gpus:g} and "
         f"{cfg.sampler.num_gpus:g}); use gloo or auto")
    need(ws.timeout_s > 0, "weight_sync.timeout_s", f"must be > 0, got {ws.timeout_s}")
    check_gpu_keys(cfg, need)  # learner/sampler GPU placement (gpu_checks.py)
    need(ws.bucket_mb >= 1, "weight_sync.bucket_mb", f"must be ≥ 1, got {ws.bucket_mb}")
    need(cfg.cluster.max_staleness >= 0, "cluster.max_staleness", "must be ≥ 0")
    need(cfg.data.max_prompts >= 0, "data.max_prompts", f"must be ≥ 0 (0 = all), got {cfg.data.max_prompts}")
    need(cfg.data.max_eval_prompts >= 0, "data.max_eval_prompts",
         f"must be ≥ 0 (0 = all), got {cfg.data.max_eval_prompts}")
    need(0 <= cfg.metrics.port < 65536, "metrics.port", f"must be in [0,65535], got {cfg.metrics.port}")
    ev = cfg.eval
    need(ev.every >= 0, "eval.every", f"must be ≥ 0 (0 = only before and after training), got {ev.every}")
    need(ev.k >= 1, "eval.k", f"must be ≥ 1, got {ev.k}")
    need(ev.temperature >= 0, "eval.temperature", f"must be ≥ 0, got {ev.temperature}")
    need(0 < ev.top_p <= 1, "eval.top_p", f"must be in (0,1], got {ev.top_p}")
    if cfg.checkpoint.keep_best:
        from gdro_ray.metrics.eval_names import parse_eval_metric

        try:
            parse_eval_metric(cfg.checkpoint.keep_best, ev.k)
        except ValueError as e:
            raise ConfigError(f"checkpoint.keep_best: {e}") from None
        need(ev.every >= 1, "checkpoint.keep_best", "needs periodic evaluation: set eval.every ≥ 1")
    check_service(cfg, need)  # sampler, learner, data, checkpoint, metrics, run name (checks.py)
    check_extensions(cfg, need)  # reward.*, data column keys, metrics.loggers (checks_extensions.py)
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                preset: str | None = None) -> Config:
    """Resolve preset + file + overrides into a validated Config."""
    user: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p}: not found")
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"config file {p}: not UTF-8 text (byte {e.start})") from None
        except OSError as e:
            raise ConfigError(f"config file {p}: cannot be read ({e.strerror})") from None
        user = _read_yaml(text, str(p))
    over: dict = {}
    for item in overrides:
        k, v = parse_override(item)
        _set_dotted(over, k, v)
    name = over.get("preset") or user.get("preset") or preset or "toy"
    if not isinstance(name, str):
        raise ConfigError(f"preset: must be a string, got {name!r}")
    layers = [_move_legacy_keys(load_preset(name), f"preset {name}"), _move_legacy_keys(user, str(path)),
              _move_legacy_keys(over, "the overrides")]
    merged = deep_merge(deep_merge(layers[0], layers[1]), layers[2])
    merged["preset"] = name
    # the profile goes under every layer above (profiles.py); what it set is recorded in the config

    def _fail(msg: str):
        raise ConfigError(msg)

    merged, bundle = apply_profile(merged, _fail)
    cfg = _build(Config, merged)
    cfg.profile_values = recorded_values(cfg, bundle)
    return validate(cfg)


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True)


def describe_keys(cls: type = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, help) for every leaf key: the reference users read."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows += describe_keys(tp, f"{prefix}{f.name}.")
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            rows.append((f"{prefix}{f.name}", repr(default), f.metadata.get("help", "")))
    return rows
