"""Config loading: presets, YAML files, dotted overrides, and one-line errors naming the key."""
import subprocess
import sys

import pytest

from gdro_ray.config import ConfigError, load_config
from gdro_ray.config.loader import describe_keys, dump_config, preset_names


def test_presets_resolve_and_validate():
    assert {"toy", "smollm2", "qwen3-1.7b-dapo"} <= set(preset_names())
    for name in preset_names():
        cfg = load_config(overrides=[f"preset={name}"])
        assert cfg.preset == name


def test_overrides_and_yaml_precedence(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("steps: 7\nprompt_gdro: {eta: 0.3}\n")
    cfg = load_config(f, ["prompt_gdro.eta=0.5", "classifier.edges=[0.2,0.5,0.8]", "algorithm=grpo"])
    assert cfg.steps == 7 and cfg.prompt_gdro.eta == 0.5
    assert cfg.classifier.edges == [0.2, 0.5, 0.8] and cfg.algorithm == "grpo"


@pytest.mark.parametrize("override,key", [
    ("prompt_gdro.etaa=1", "prompt_gdro.etaa"),
    ("steps=abc", "steps"),
    ("rollout_gdro.n_min=13", "rollout_gdro.n_min"),
    ("budget_mean=20", "budget_mean"),
    ("classifier.edges=[0.5,0.2]", "classifier.edges"),
    ("classifier.edges=[0.0,0.5]", "classifier.edges"),
    ("prompt_gdro.eta=0", "prompt_gdro.eta"),
    ("prompt_gdro.gamma=1.0", "prompt_gdro.gamma"),
    ("prompt_gdro.beta=0", "prompt_gdro.beta"),
    ("prompt_gdro.max_repeats=-1", "prompt_gdro.max_repeats"),
    ("grpo.mini_batches=0", "grpo.mini_batches"),
    ("grpo.epochs=0", "grpo.epochs"),
    ("grpo.max_refill_rounds=-1", "grpo.max_refill_rounds"),
    ("grpo.loss_agg=sum", "grpo.loss_agg"),
    ("rollout_gdro.proxy=entropy", "rollout_gdro.proxy"),
    ("data.max_eval_prompts=-2", "data.max_eval_prompts"),
    ("data.max_prompts=-1", "data.max_prompts"),
    ("learner.micro_batch_tokens=-1", "learner.micro_batch_tokens"),
    ("sampler.tensor_parallel_size=0", "sampler.tensor_parallel_size"),
    ("sampler.tensor_parallel_size=2", "sampler.tensor_parallel_size"),  # without sampler.num_gpus=2
    ("sampler.enforce_eager=sometimes", "sampler.enforce_eager"),
    ("reward.timeout_s=-1", "reward.timeout_s"),
    ("learner.gradient_checkpointing=maybe", "learner.gradient_checkpointing"),
    ("algorithm=ppo", "algorithm"),
    ("sampler=3", "sampler"),
    ("preset=nope", "preset"),
])
def test_bad_settings_name_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        load_config(overrides=[override])
    msg = str(e.value)
    assert msg.startswith(key) and "\n" not in msg


@pytest.mark.parametrize("overrides,key", [
    (["cluster.off_policy=true", "sampler.temperature=0.7"], "cluster.off_policy"),
    (["cluster.off_policy=true", "grpo.filter_all_equal=true"], "grpo.filter_all_equal"),
])
def test_settings_that_cannot_work_together_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as e:
        load_config(overrides=overrides)
    assert str(e.value).startswith(key) and "\n" not in str(e.value)
    load_config(overrides=overrides[:1])  # each alone is fine


@pytest.mark.parametrize("overrides,key", [
    (["learner.lora.rank=-1"], "learner.lora.rank"),
    (["learner.lora.rank=8", "learner.lora.alpha=0"], "learner.lora.alpha"),
    (["learner.lora.rank=8", "learner.lora.dropout=1.0"], "learner.lora.dropout"),
    (["learner.lora.rank=8", "learner.lora.dropout=-0.1"], "learner.lora.dropout"),
    (["learner.lora.rank=8", "learner.lora.target_modules="], "learner.lora.target_modules"),
    (["learner.lora.rank=8", "learner.lora.target_modules=[q_proj, ' ']"], "learner.lora.target_modules"),
    (["learner.lora.rank=8", "learner.lora.target_modules=all-linear,q_proj"], "learner.lora.target_modules"),
    (["learner.lora.rank=8", "learner.lora.ranks=4"], "learner.lora.ranks"),
    (["learner.lora=8"], "learner.lora"),
])
def test_bad_lora_settings_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as e:
        load_config(overrides=overrides)
    assert str(e.value).startswith(key) and "\n" not in str(e.value)


def test_lora_settings_resolve():
    assert load_config().learner.lora.rank == 0  # off unless asked for
    lora = load_config(overrides=["learner.lora.rank=8", "learner.lora.target_modules=q_proj,v_proj"]).learner.lora
    assert (lora.rank, lora.alpha, lora.dropout, lora.target_modules) == (8, 16.0, 0.0, ["q_proj", "v_proj"])
    # off: the other keys are not read, so they are not checked either
    assert load_config(overrides=["learner.lora.alpha=0"]).learner.lora.alpha == 0


def test_dump_roundtrip(tmp_path):
    cfg = load_config(overrides=["seed=3", "prompt_gdro.mode=reweight"])
    f = tmp_path / "r.yaml"
    f.write_text(dump_config(cfg))
    assert load_config(f) == cfg


def test_every_key_documented():
    for key, _, help in describe_keys():
        assert help, f"{key} has no documentation"


def test_cli_bad_key_exits_nonzero_with_one_line():
    p = subprocess.run([sys.executable, "-m", "gdro_ray.cli.main", "config", "learner.wrold_size=2"],
                       capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "learner.wrold_size" in p.stderr
    assert "did you mean 'learner.world_size'" in p.stderr


def test_cli_config_does_not_import_heavy_modules():
    code = ("import sys; from gdro_ray.cli.main import main; main(['config']); "
            "bad = [m for m in ('ray', 'torch', 'vllm') if m in sys.modules]; assert not bad, bad")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
