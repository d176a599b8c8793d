"""benchmarks/gdro_curves.py: GRPO's learning check and compute to target, on summaries written by
hand, so every number asserted here follows from the (n, c) put in."""
from __future__ import annotations

import json

import pytest
from _bench import load_benchmark

TIERS = ["0", "0", "1", "1"]


@pytest.fixture(scope="module")
def curves():
    return load_benchmark("gdro_curves")


def _nc(mean8: float) -> dict:
    """Four prompts of 10 samples whose pooled mean@8 is `mean8` (a multiple of 0.025)."""
    total = round(mean8 * 40)
    c = [total // 4 + (1 if i < total % 4 else 0) for i in range(4)]
    return {"n": 10, "c": c}


def _summary(arms: dict[str, dict[str, list[float]]], base: float = 0.2, steps: int = 40) -> dict:
    """arms: {arm: {seed: [mean@8 at steps 10, 20, 30, final]}}"""
    out = {"prompts": {"id": list(range(4)), "tier": TIERS}, "k": 8, "overrides": [f"steps={steps}", "eval.every=10"],
           "base": {}, "arms": {}}
    for arm, seeds in arms.items():
        entry = {"seeds": {}}
        for seed, values in seeds.items():
            out["base"][seed] = _nc(base)
            labels = [f"step{s:06d}" for s in (10, 20, 30)] + ["final"]
            entry["seeds"][seed] = {"evals": {lb: _nc(v) for lb, v in zip(labels, values)}, "rollouts": 512 * steps}
        out["arms"][arm] = entry
    return out


def test_first_reach_interpolates_and_says_never(curves):
    points = [(0, 0.2), (10, 0.3), (20, 0.5)]
    assert curves.first_reach(points, 0.4) == pytest.approx(15.0)
    assert curves.first_reach(points, 0.2) == 0.0
    assert curves.first_reach(points, 0.6) is None


def test_compute_to_target_pairs_seeds_and_counts_misses(curves):
    s = _summary({
        "grpo": {"0": [0.3, 0.4, 0.45, 0.5], "1": [0.25, 0.3, 0.35, 0.4]},
        # seed 0 reaches GRPO's 0.5 halfway between steps 10 and 20; seed 1 never reaches its 0.4
        "fast": {"0": [0.4, 0.6, 0.6, 0.6], "1": [0.25, 0.3, 0.35, 0.375]},
    })
    reach = curves.compute_to_target(s, 40)
    assert reach["grpo"]["seeds"]["0"]["rollouts"] == pytest.approx(40 * 512)
    assert reach["fast"]["seeds"]["0"]["step"] == pytest.approx(15.0)
    assert reach["fast"]["seeds"]["0"]["vs_grpo"] == pytest.approx(15 / 40)
    assert reach["fast"]["seeds"]["1"]["rollouts"] is None
    assert reach["fast"]["reached"] == "1/2"
    # the median over two seeds with one miss counts the miss as infinite: not reached
    assert reach["fast"]["vs_grpo_median"] is None
    assert reach["grpo"]["vs_grpo_median"] == pytest.approx(1.0)


def test_learning_check_gain_and_share_by_step(curves):
    s = _summary({"grpo": {"0": [0.3, 0.35, 0.4, 0.4], "1": [0.3, 0.35, 0.4, 0.4]}})
    check = curves.learning_check(s, 40)
    assert check["base"] == pytest.approx(0.2) and check["final"] == pytest.approx(0.4)
    assert check["relative_gain"]["estimate"] == pytest.approx(1.0)
    assert check["share_of_gain"][10] == pytest.approx(0.5)
    assert check["share_of_gain"][30] == pytest.approx(1.0)


def test_cli_reads_steps_from_the_file_and_refuses_runs_without_curves(curves, tmp_path, capsys):
    s = _summary({"grpo": {"0": [0.3, 0.35, 0.4, 0.4]}})
    f = tmp_path / "r.json"
    f.write_text(json.dumps(s))
    out = tmp_path / "curves.json"
    assert curves.main([str(f), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["steps"] == 40
    assert "GRPO pooled mean@8 0.200 -> 0.400" in capsys.readouterr().out
    for seed in s["arms"]["grpo"]["seeds"].values():
        seed["evals"] = {"final": seed["evals"]["final"]}
    f.write_text(json.dumps(s))
    with pytest.raises(SystemExit, match="no evaluations along the way"):
        curves.main([str(f)])
    with pytest.raises(SystemExit, match="no such results file"):
        curves.main([str(tmp_path / "missing.json")])
