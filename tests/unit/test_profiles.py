"""Profiles: `project` changes nothing, `paper` and `learnability` set what they document, every
layer above the profile wins key by key, and the resolved config records what the profile set."""
import dataclasses

import pytest

from gdro_ray.config import ConfigError, load_config
from gdro_ray.config.loader import dump_config, load_preset, preset_names, to_dict
from gdro_ray.config.profiles import PROFILES, profile_bundle
from gdro_ray.config.schema import Config


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _get(cfg, key: str):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


@pytest.mark.parametrize("preset", preset_names())
def test_project_profile_changes_nothing(preset):
    """`project` is today's defaults: every preset resolves exactly as without a profile, and every key
    another profile touches keeps its schema (or preset) value."""
    plain = load_config(overrides=[f"preset={preset}"])
    project = load_config(overrides=[f"preset={preset}", "profile=project"])
    assert to_dict(plain) == to_dict(project) and project.profile_values == []
    assert profile_bundle("project", 8) == {}
    defaults, own = _flat(to_dict(Config())), _flat(load_preset(preset))
    for name in ("paper", "learnability"):
        for key in profile_bundle(name, plain.budget_mean):
            assert _get(plain, key) == own.get(key, defaults[key]), key


def test_toy_preset_keeps_the_settings_of_the_five_seed_four_way():
    cfg = load_config(overrides=["preset=toy"])
    assert (cfg.algorithm, cfg.profile, cfg.budget_mean, cfg.batch_size, cfg.steps) == ("rollout_gdro", "project", 8, 64, 40)
    p, r, c = cfg.prompt_gdro, cfg.rollout_gdro, cfg.classifier
    assert (p.mode, p.signal, p.resample_base, p.share_normalization, p.eta, p.gamma, p.score_clip, p.weights,
            p.informative_norm) == ("resample", "learnability", "uniform", "auto", 0.65, 0.01, 3.0, "exp", False)
    assert (r.mode, r.proxy, r.n_min, r.n_max) == ("shadow_price", "passk_variance", 2, 12)
    assert (c.binning, c.edges) == ("equal_width", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    assert cfg.grpo.loss_agg == "prompt_mean"


@pytest.mark.parametrize("budget,n_range", [(4, (2, 12)), (8, (4, 24)), (3, (2, 9))])
def test_paper_profile_is_the_papers_mode(budget, n_range):
    cfg = load_config(overrides=["preset=toy", "profile=paper", f"budget_mean={budget}"])
    p, r = cfg.prompt_gdro, cfg.rollout_gdro
    assert (p.mode, p.signal, p.share_normalization, p.share_floor, p.score_clip) == (
        "reweight", "surrogate", "batch_raw", 0.02, 0.0)
    assert (r.proxy, (r.n_min, r.n_max)) == ("reward_variance", n_range)
    assert cfg.grpo.loss_agg == "token_mean" and cfg.classifier.binning == "equal_width"
    assert len(cfg.classifier.edges) == 9


def test_learnability_profile_and_its_control_are_expressible():
    cfg = load_config(overrides=["preset=toy", "profile=learnability", "algorithm=prompt_gdro"])
    p = cfg.prompt_gdro
    assert (p.mode, p.resample_base, p.signal, p.weights) == ("resample", "pool", "progress", "linear")
    assert cfg.classifier.binning == "equal_count" and cfg.rollout_gdro.mode == "knapsack"
    control = load_config(overrides=["preset=toy", "profile=learnability", "algorithm=prompt_gdro",
                                     "prompt_gdro.signal=learnability", "prompt_gdro.worst_eta=0"])
    assert control.prompt_gdro.signal == "learnability" and control.prompt_gdro.worst_eta == 0.0
    assert "prompt_gdro.signal=progress" not in control.profile_values
    assert "prompt_gdro.weights=linear" in control.profile_values


def test_every_layer_above_the_profile_wins_and_is_not_recorded(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("grpo: {loss_agg: prompt_mean}\n")
    cfg = load_config(f, ["profile=paper", "prompt_gdro.eta=1.5"])
    assert cfg.grpo.loss_agg == "prompt_mean" and cfg.prompt_gdro.eta == 1.5
    assert not any(v.startswith(("grpo.loss_agg=", "prompt_gdro.eta=")) for v in cfg.profile_values)
    assert "prompt_gdro.mode=reweight" in cfg.profile_values
    # the qwen preset sets budget_mean 4: the paper's own 2 … 12
    qwen = load_config(overrides=["preset=qwen3-1.7b-dapo", "profile=paper"])
    assert (qwen.rollout_gdro.n_min, qwen.rollout_gdro.n_max) == (2, 12)


@pytest.mark.parametrize("profile", PROFILES)
def test_recorded_values_reproduce_the_config_without_the_profile_and_config_yaml_round_trips(profile, tmp_path):
    cfg = load_config(overrides=["preset=toy", f"profile={profile}"])
    again = load_config(overrides=["preset=toy", *cfg.profile_values])
    assert to_dict(dataclasses.replace(again, profile=profile, profile_values=cfg.profile_values)) == to_dict(cfg)
    saved = tmp_path / "config.yaml"  # what a run folder keeps and --resume reads
    saved.write_text(dump_config(cfg))
    assert to_dict(load_config(saved)) == to_dict(cfg)


@pytest.mark.parametrize("override,key", [
    ("profile=papers", "profile"),
    ("prompt_gdro.score_clip=-1", "prompt_gdro.score_clip"),
    ("prompt_gdro.worst_eta=-0.5", "prompt_gdro.worst_eta"),
    ("prompt_gdro.informative_norm=true", "prompt_gdro.informative_norm"),
    ("prompt_gdro.weights=softmax", "prompt_gdro.weights"),
    ("prompt_gdro.signal=progres", "prompt_gdro.signal"),
    ("prompt_gdro.share_normalization=raw", "prompt_gdro.share_normalization"),
    ("classifier.binning=quantile", "classifier.binning"),
    ("classifier.refresh_every=0", "classifier.refresh_every"),
    ("rollout_gdro.mode=greedy", "rollout_gdro.mode"),
    ("rollout_gdro.n_max=256", "rollout_gdro.n_max"),
])
def test_bad_values_are_refused_in_one_line_naming_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        load_config(overrides=["preset=toy", override])
    msg = str(e.value)
    assert msg.startswith(f"{key}:") and "\n" not in msg
