"""`prepare`: masking of the SFT loss, caching, atomicity, determinism, and the base model's skill."""
import dataclasses
import itertools
import json
import types

import pytest
import torch
from safetensors.torch import load_file

from gdro_ray.data import toy_task as T
from gdro_ray.models import prepare as P
from gdro_ray.models import sft as S
from gdro_ray.models import tiny


def test_encode_sft_masks_everything_but_the_response():
    tok = tiny.build_tokenizer()
    examples = T.make_sft_set([1] * T.NUM_TIERS, seed=0)
    ids, mask, labels = S.encode_sft(tok, examples)
    for row, ex in enumerate(examples):
        target = T.format_target(ex) + tok.eos_token
        kept = labels[row][labels[row] != -100].tolist()
        assert tok.decode(kept) == target
        n = int(mask[row].sum())
        assert mask[row, :n].all() and not mask[row, n:].any()  # right padding
        assert tok.decode(ids[row, :n].tolist()).endswith("<|im_start|>assistant\n" + target)


def test_encode_bare_labels_only_the_result():
    tok = tiny.build_tokenizer()
    examples = T.make_sft_set([1] * T.NUM_TIERS, seed=0, stream="bare")
    ids, mask, labels = S.encode_sft(tok, examples, bare=True)
    for row, ex in enumerate(examples):
        target = T.format_target(ex)
        n = int(mask[row].sum())
        assert tok.decode(ids[row, :n].tolist()) == target + tok.eos_token
        kept = labels[row][labels[row] != -100].tolist()
        assert tok.decode(kept) == target[target.index("=") + 1 :] + tok.eos_token


def test_stale_cache_is_not_reused(tmp_path):
    d = tmp_path / "toy-model-v2-s0"
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"x")
    (d / "prepare.json").write_text(json.dumps({"recipe": {"steps": 1}}))
    assert P.is_prepared(d) and not P.is_prepared(d, P.DEFAULT_SFT)
    (d / "prepare.json").write_text(json.dumps({"recipe": dataclasses.asdict(P.DEFAULT_SFT)}))
    assert P.is_prepared(d, P.DEFAULT_SFT)


def test_lr_schedule_warms_up_then_decays():
    r = P.SFTRecipe(steps=100, warmup=10, lr=1.0)
    lrs = [S._lr_at(s, r) for s in range(100)]
    assert lrs[0] < lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:])) and lrs[-1] > 0


def _weights(path):
    return load_file(str(path / "model.safetensors"))


@pytest.mark.slow
def test_prepare_deterministic_cached_and_atomic(tmp_path):
    # the default architecture and recipe, with a 3-step budget
    a = P.prepare_toy_model(tmp_path / "a", seed=0, sft_steps=3)
    b = P.prepare_toy_model(tmp_path / "b", seed=0, sft_steps=3)
    assert a.name.startswith("toy-model-v2-s0-custom")  # never shadows the default recipe's cache
    wa, wb = _weights(a), _weights(b)
    assert set(wa) == set(wb) and "lm_head.weight" in wa
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    init = tiny.build_model(P.DEFAULT_SFT.size, seed=0).state_dict()
    assert any(not torch.equal(init[k], wa[k]) for k in wa)  # training changed the weights
    meta = json.loads((a / "prepare.json").read_text())
    assert meta["recipe"]["steps"] == 3 and meta["seed"] == 0
    # cached: a second call returns at once and leaves the files alone
    stamp = (a / "model.safetensors").stat().st_mtime_ns
    assert P.prepare_toy_model(tmp_path / "a", seed=0, sft_steps=3) == a
    assert (a / "model.safetensors").stat().st_mtime_ns == stamp
    c = P.prepare_toy_model(tmp_path / "a", seed=1, sft_steps=3)
    assert not torch.equal(_weights(c)["lm_head.weight"], wa["lm_head.weight"])
    leftovers = [p.name for p in (tmp_path / "a").iterdir() if p.name.startswith(".") and not p.name.endswith(".lock")]
    assert not leftovers  # no staging folder left over


@pytest.mark.slow
def test_sft_steps_parameter_and_crash_leaves_nothing(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(tiny, "save", boom)
    with pytest.raises(RuntimeError):
        P.prepare_toy_model(tmp_path, seed=0, recipe=P.SFTRecipe(size="nano", batch_size=4), sft_steps=2)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


@pytest.mark.slow
def test_concurrent_prepares_build_once(tmp_path, monkeypatch):
    import threading

    builds = []
    real_build = P._build

    def counting_build(*args, **kwargs):
        builds.append(1)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(P, "_build", counting_build)
    recipe = P.SFTRecipe(size="nano", steps=2, batch_size=4, bare_batch=4)
    paths = []
    threads = [threading.Thread(target=lambda: paths.append(P.prepare_toy_model(tmp_path, recipe=recipe))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(paths) == 3 and len(set(paths)) == 1 and len(builds) == 1


@pytest.mark.slow
def test_cli_prints_per_tier_table(tmp_path, capsys, monkeypatch):
    recipe = P.SFTRecipe(size="nano", steps=2, batch_size=4)
    monkeypatch.setattr(P, "DEFAULT_SFT", recipe)  # keep the CLI fast: a 2-step warm start
    args = types.SimpleNamespace(config=None, overrides=[f"model.cache_dir={tmp_path}", "data.toy_eval_per_tier=2"],
                                 force=False, seed=0)
    from gdro_ray.cli import prepare as prepare_cmd

    assert prepare_cmd.run(args) == 0
    out = capsys.readouterr().out
    assert "pass@8" in out and "pooled" in out and "4 carry_out" in out and "5 sub_neg" in out
    saved = json.loads((P.model_dir(tmp_path, 0) / "base_eval.json").read_text())
    assert saved["tiers"]["0"]["n"] == 2 and 0.0 <= saved["tiers"]["pooled"]["pass@k"] <= 1.0


@pytest.mark.slow
def test_base_model_skill_is_ordered():
    """On the real cached default model (built here if missing: minutes): easy tiers beat hard ones."""
    path = P.prepare_toy_model()
    saved = path / "base_eval.json"
    result = json.loads(saved.read_text()) if saved.is_file() else P.evaluate_base(path)
    tiers = result["tiers"]
    easy = (tiers["0"]["pass@k"] + tiers["1"]["pass@k"]) / 2
    hard = (tiers["4"]["pass@k"] + tiers["5"]["pass@k"]) / 2
    assert easy > hard + 0.3
    assert tiers["0"]["pass@1"] > tiers["5"]["pass@1"]
    assert 0.25 <= tiers["pooled"]["pass@k"] <= 0.7  # headroom (findings §1)
    assert sum(tiers[str(t)]["pass@k"] > 0 for t in range(T.NUM_TIERS)) == T.NUM_TIERS  # no hopeless tier
    # the hard tail: the right answer is rare, not absent (RL has something to raise)
    assert all(0 < tiers[t]["pass@1"] < 0.15 and tiers[t]["pass@k"] < 0.6 for t in ("4", "5"))
