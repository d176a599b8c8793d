"""Evaluation: aggregation against brute force, result structure on a tiny model, CLI, bad input."""
from __future__ import annotations

import itertools
import json
import logging
from argparse import Namespace
from math import comb

import pytest
from _tiny import save_tiny
from hypothesis import given, settings
from hypothesis import strategies as st

from gdro_ray.errors import DataError, UserError
from gdro_ray.eval.evaluate import aggregate, evaluate, format_table

EXAMPLES = [
    {"id": 10, "prompt": "Say a.", "answer": "a", "tier": 0, "source": "hand"},
    {"id": 11, "prompt": "Say e.", "answer": "e", "tier": 0, "source": "hand"},
    {"id": 12, "prompt": "Say x.", "answer": "x", "tier": 1, "source": "hand"},
    {"id": 13, "prompt": "Say 7.", "answer": "7", "tier": 1, "source": "hand"},
]


def contains_answer(response: str, answer: str) -> float:
    """A lenient stand-in verifier: a random model hits it sometimes, so rates are not all 0."""
    return 1.0 if answer in response else 0.0


def brute_pass_at_k(outcomes: list[bool], k: int) -> float:
    """Fraction of k-subsets of the rollouts that contain a correct one."""
    subsets = list(itertools.combinations(range(len(outcomes)), k))
    return sum(any(outcomes[i] for i in s) for s in subsets) / len(subsets)


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(1, 4),
    prompts=st.lists(
        st.tuples(st.sampled_from(["A", "B"]), st.sampled_from([0, 1, 2, None]), st.lists(st.booleans(), min_size=4, max_size=8)),
        min_size=1, max_size=12,
    ),
)
def test_aggregate_matches_brute_force(k, prompts):
    examples = [{"id": i, "prompt": "p", "answer": "a", "source": s, "tier": t} for i, (s, t, _) in enumerate(prompts)]
    correct = [o for _, _, o in prompts]
    res = aggregate(examples, correct, k)

    def group(indices):
        return (
            sum(brute_pass_at_k(correct[i], k) for i in indices) / len(indices),
            sum(sum(correct[i]) / len(correct[i]) for i in indices) / len(indices),
        )

    want_pass, want_mean = group(range(len(prompts)))
    assert res["pooled"]["pass_at_k"] == pytest.approx(want_pass)
    assert res["pooled"]["mean_at_k"] == pytest.approx(want_mean)
    assert res["pooled"]["n_rollouts"] == sum(len(o) for o in correct)
    sources = {s for s, _, _ in prompts}
    tiered = sorted({s for s, t, _ in prompts if t is not None})
    assert set(res["per_dataset"]) == sources
    for s in sources:
        idx = [i for i, p in enumerate(prompts) if p[0] == s]
        assert res["per_dataset"][s]["pass_at_k"] == pytest.approx(group(idx)[0])
        for t in {prompts[i][1] for i in idx if prompts[i][1] is not None}:
            tidx = [i for i in idx if prompts[i][1] == t]
            name = str(t) if len(tiered) == 1 else f"{s}/{t}"
            assert res["per_tier"][name]["pass_at_k"] == pytest.approx(group(tidx)[0])
            assert res["per_tier"][name]["mean_at_k"] == pytest.approx(group(tidx)[1])
            assert res["per_dataset"][s]["per_tier"][str(t)]["n_prompts"] == len(tidx)
    if res["per_tier"]:
        assert res["worst_tier"]["pass_at_k"] == min(v["pass_at_k"] for v in res["per_tier"].values())
    else:
        assert res["worst_tier"] is None
    # pass@k is never below mean@k (the estimator is >= the per-rollout rate), both in [0, 1]
    for stats in [res["pooled"], *res["per_tier"].values()]:
        assert 0.0 <= stats["mean_at_k"] <= stats["pass_at_k"] + 1e-12 <= 1.0 + 1e-12


def test_aggregate_known_values():
    ex = [{"id": 0, "prompt": "p", "answer": "a", "source": "s", "tier": 0}]
    res = aggregate(ex, [[True, False, False, False, False, False]], k=2)
    assert res["pooled"]["pass_at_k"] == pytest.approx(1 - comb(5, 2) / comb(6, 2))
    assert res["pooled"]["mean_at_k"] == pytest.approx(1 / 6)
    with pytest.raises(ValueError, match="at least k"):
        aggregate(ex, [[True]], k=2)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("m") / "tiny", seed=4)


def test_evaluate_tiny_model_structure(tiny_dir, capsys):
    res = evaluate(str(tiny_dir), EXAMPLES, k=4, engine="hf", max_new_tokens=12, temperature=1.0, top_p=1.0,
                   seed=3, reward_fn=contains_answer)
    json.dumps(res)  # JSON-ready
    assert res["k"] == 4
    assert set(res["per_tier"]) == {"0", "1"} and set(res["per_dataset"]) == {"hand"}
    assert res["pooled"]["n_prompts"] == 4 and res["pooled"]["n_rollouts"] == 16
    assert [p["id"] for p in res["per_prompt"]] == [10, 11, 12, 13]
    assert all(p["n"] == 4 and 0 <= p["c"] <= 4 for p in res["per_prompt"])
    for stats in [res["pooled"], *res["per_tier"].values()]:
        assert 0.0 <= stats["mean_at_k"] <= stats["pass_at_k"] <= 1.0
    assert res["worst_tier"]["tier"] in {"0", "1"}
    assert res["meta"]["tokens"] > 0 and res["meta"]["max_new_tokens"] == 12
    # the same seed repeats exactly
    again = evaluate(str(tiny_dir), EXAMPLES, k=4, engine="hf", max_new_tokens=12, temperature=1.0, top_p=1.0,
                     seed=3, reward_fn=contains_answer, progress=False)
    assert again["per_prompt"] == res["per_prompt"]
    assert "eval: 4/4 prompts" in capsys.readouterr().err
    assert "worst tier" in format_table(res)


def test_vllm_request_falls_back_to_transformers(tiny_dir, monkeypatch, caplog):
    from gdro_ray.engines import vllm_engine

    def no_vllm(self, *a, **kw):
        raise ImportError("vLLM cannot be imported: simulated")

    monkeypatch.setattr(vllm_engine.VLLMEngine, "__init__", no_vllm)
    with caplog.at_level(logging.WARNING):
        res = evaluate(str(tiny_dir), EXAMPLES[:2], k=2, engine="vllm", max_new_tokens=4, reward_fn=contains_answer,
                       progress=False)
    assert res["meta"]["engine"] == "HFEngine"
    assert "falling back to the transformers engine" in caplog.text


def test_cli_writes_json_and_table(tiny_dir, tmp_path, monkeypatch, capsys):
    import gdro_ray.eval.evaluate as ev
    from gdro_ray.cli import eval as eval_cmd

    monkeypatch.setattr(ev, "load_examples", lambda data: list(EXAMPLES))
    out = tmp_path / "res" / "eval.json"
    args = Namespace(model_dir=str(tiny_dir), data="hand", k=2, engine="hf", limit=3, max_new_tokens=6, out=str(out), seed=0)
    assert eval_cmd.run(args) == 0
    res = json.loads(out.read_text())
    assert res["pooled"]["n_prompts"] == 3 and res["meta"]["limit"] == 3
    assert "pass@2" in capsys.readouterr().out
    assert [p.name for p in out.parent.iterdir()] == ["eval.json"]  # no temp file left behind


def test_cli_formats_the_prompt_as_training_does(tiny_dir, tmp_path, monkeypatch):
    """`gdro-ray eval` takes prompt.* from a training config and key=value overrides, and only those;
    the engine renders with that format (the system turn reaches the model's input) and the result
    records it."""
    import gdro_ray.eval.evaluate as ev
    from gdro_ray.cli import eval as eval_cmd
    from gdro_ray.cli.main import main

    rendered = []
    real = ev.evaluate_engine

    def spy(engine, examples, **kw):
        rendered.append(engine.tokenizer.decode(engine.prompt_token_ids([ev.example_input(examples[0])])[0]))
        return real(engine, examples, **kw)

    monkeypatch.setattr(ev, "evaluate_engine", spy)
    monkeypatch.setattr(ev, "load_examples", lambda data: [dict(e, problem=e["prompt"]) for e in EXAMPLES])
    cfg = tmp_path / "config.yaml"
    cfg.write_text("prompt:\n  template: raw\n  system: From the run.\n")
    out = tmp_path / "eval.json"
    args = Namespace(model_dir=str(tiny_dir), data="hand", k=1, engine="hf", limit=1, max_new_tokens=2, out=str(out),
                     seed=0, config=str(cfg), overrides=["prompt.instruction=Answer briefly."])
    assert eval_cmd.run(args) == 0
    assert rendered[-1] == "From the run.\n\nSay a.\n\nAnswer briefly."
    meta = json.loads(out.read_text())["meta"]
    assert meta["prompt_format"]["system"] == "From the run." and meta["instruction"] == "Answer briefly."
    assert eval_cmd.prompt_settings(None, ["prompt.system=S"]).system == "S"
    with pytest.raises(UserError, match=r"^gdro-ray eval takes only prompt\.\* settings .*'k=3'"):
        eval_cmd.prompt_settings(None, ["k=3"])
    with pytest.raises(UserError, match=r"^prompt.template: "):
        eval_cmd.prompt_settings(None, ["prompt.template=fancy"])
    # through the command line: the flags and the overrides mix
    assert main(["eval", str(tiny_dir), "--data", "toy", "--engine", "hf", "--k", "1", "--limit", "1",
                 "--max-new-tokens", "2", "--out", str(tmp_path / "cli.json"), "prompt.system=Via the CLI."]) == 0
    assert rendered[-1].startswith("<|im_start|>system\nVia the CLI.<|im_end|>")


def test_bad_input(tiny_dir):
    with pytest.raises(UserError, match="no examples"):
        evaluate(str(tiny_dir), [], k=2, engine="hf")
    with pytest.raises(DataError, match="row 1 .*'answer'"):
        evaluate(str(tiny_dir), [EXAMPLES[0], {**EXAMPLES[1], "answer": ""}], k=2, engine="hf")
    with pytest.raises(UserError, match="missing"):
        evaluate(str(tiny_dir / "missing"), EXAMPLES, k=2, engine="hf")


@pytest.mark.slow
def test_vllm_and_transformers_agree_on_greedy_evaluation(tiny_dir):
    """fp32 greedy decoding is identical in both engines, so the per-prompt counts must be too."""
    kw = {"k": 2, "max_new_tokens": 12, "temperature": 0.0, "top_p": 1.0, "reward_fn": contains_answer, "progress": False}
    via_hf = evaluate(str(tiny_dir), EXAMPLES, engine="hf", **kw)
    via_vllm = evaluate(str(tiny_dir), EXAMPLES, engine="vllm", **kw)
    assert via_vllm["meta"]["engine"] == "VLLMEngine"
    assert via_vllm["per_prompt"] == via_hf["per_prompt"]
    assert via_vllm["pooled"] == via_hf["pooled"]
