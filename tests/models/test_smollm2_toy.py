"""smollm2-toy: the format-SFT recipe, its cache, the preset and the model-name resolution."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from gdro_ray.config.loader import load_config
from gdro_ray.data import toy_task
from gdro_ray.models import registry, smollm2_toy
from gdro_ray.models.sft import is_prepared


def test_recipe_is_tier_balanced_all_right_and_chat_only():
    r = smollm2_toy.SMOLLM2_TOY_SFT
    assert r.bare_batch == 0 and r.right_rate == (1.0,) * toy_task.NUM_TIERS
    counts = toy_task.tier_counts(r.steps * r.batch_size, r.tier_mix)
    assert sum(counts) == r.steps * r.batch_size and max(counts) - min(counts) <= 1
    examples = toy_task.make_sft_set(counts, seed=0, stream="chat", right_rate=r.right_rate)
    assert all(e["shown"] == e["answer"] for e in examples)  # every demonstration right
    assert all(toy_task.split_of(e["prompt"]) == "sft" for e in examples)  # never a pool or eval question


def test_longest_target_fits_the_presets_token_budget():
    # SmolLM2's tokenizer splits digits one per token; the longest toy target is a 4-digit (or
    # negative 3-digit) result: expression (7) + '=' + result (4) + '\\boxed{' (4) + result (4) + '}' + end
    cfg = load_config(preset="smollm2-toy")
    worst = toy_task.format_target({"prompt": toy_task.format_prompt("999+999"), "answer": "1998"})
    assert len(worst) == 24
    assert 7 + 1 + 4 + 4 + 4 + 1 + 1 <= cfg.sampler.max_new_tokens


def test_preset_trains_smollm2_toy_on_the_toy_world():
    cfg = load_config(preset="smollm2-toy")
    assert cfg.model.path == "smollm2-toy" and cfg.data.train == "toy" and cfg.data.eval == "toy"
    assert cfg.steps >= 20 and cfg.eval.temperature == cfg.sampler.temperature == 1.0
    over = load_config(preset="smollm2-toy", overrides=["steps=3"])
    assert over.steps == 3 and over.model.path == "smollm2-toy"


def test_resolve_builds_through_prepare(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(smollm2_toy, "prepare_smollm2_toy", lambda: calls.append(1) or tmp_path)
    assert registry.resolve_model_path("smollm2-toy") == tmp_path and calls == [1]


def _fake_build(final: Path, recipe, seed, verbose):
    final.mkdir(parents=True, exist_ok=True)
    (final / "model.safetensors").write_bytes(b"x")
    (final / "prepare.json").write_text(json.dumps({"recipe": json.loads(json.dumps(smollm2_toy.asdict(recipe)))}))
    _fake_build.count += 1
    return final


def test_cache_is_reused_and_a_changed_recipe_is_not(monkeypatch, tmp_path):
    _fake_build.count = 0
    monkeypatch.setattr(smollm2_toy, "_build", _fake_build)
    first = smollm2_toy.prepare_smollm2_toy(tmp_path)
    assert first == tmp_path / "smollm2-toy-v1-s0" and is_prepared(first, smollm2_toy.SMOLLM2_TOY_SFT)
    assert smollm2_toy.prepare_smollm2_toy(tmp_path) == first and _fake_build.count == 1
    other = replace(smollm2_toy.SMOLLM2_TOY_SFT, steps=3)
    custom = smollm2_toy.prepare_smollm2_toy(tmp_path, recipe=other)
    assert custom != first and custom.name.startswith("smollm2-toy-v1-s0-custom") and _fake_build.count == 2
    # a folder left by an older recipe under the default name is rebuilt, not reused
    (first / "prepare.json").write_text(json.dumps({"recipe": {"steps": 1}}))
    smollm2_toy.prepare_smollm2_toy(tmp_path)
    assert _fake_build.count == 3
    with pytest.raises(ValueError, match="bare_batch"):
        smollm2_toy.prepare_smollm2_toy(tmp_path, recipe=replace(other, bare_batch=4))


@pytest.mark.slow
def test_two_step_build_saves_a_loadable_model(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    recipe = replace(smollm2_toy.SMOLLM2_TOY_SFT, steps=2, batch_size=2, warmup=1)
    path = smollm2_toy.prepare_smollm2_toy(tmp_path, recipe=recipe)
    meta = json.loads((path / "prepare.json").read_text())
    assert meta["recipe"]["steps"] == 2 and len(meta["losses"]) == 2
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(path)
    assert tok.eos_token == "<|im_end|>" and model.config.tie_word_embeddings is False
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert smollm2_toy.prepare_smollm2_toy(tmp_path, recipe=recipe) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp
