"""benchmarks/gdro_vs_grpo.py bookkeeping: named arms, the committed (n, c) summaries, and the peak
picked on one half of the held-out prompts and scored on the other. No training: run folders are
written by hand."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _bench import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("gdro_vs_grpo")


def test_named_arms_resolve_and_validate(bench):
    from gdro_ray.config.loader import load_config

    for name in bench.NAMED_ARMS:
        alg, over = bench.parse_arm(name)
        cfg = load_config(overrides=["preset=toy", f"algorithm={alg}", *over])
        assert cfg.algorithm == alg
    assert bench.parse_arm("both+prompt_gdro.mode=reweight") == ("both", ["prompt_gdro.mode=reweight"])
    with pytest.raises(SystemExit):
        bench.parse_arm("nonsense")


def _eval(c: list[int], tiers: list[str]) -> dict:
    return {"per_prompt": [{"id": i, "tier": t, "n": 16, "c": ci} for i, (t, ci) in enumerate(zip(tiers, c))]}


def _run(folder: Path, evals: dict[str, list[int]], tiers: list[str], base: list[int] | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text(json.dumps({"rollouts": 64, "useful_rollout_fraction": 0.5,
                                                      "useful_prompt_fraction": 0.4, "q_ratio": 2.0}) + "\n")
    if base is not None:
        (folder / "eval_base.json").write_text(json.dumps(_eval(base, tiers)))
    for label, c in evals.items():
        path = folder / "eval_final.json" if label == "final" else folder / "evals" / f"{label}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(_eval(c, tiers)))
    return folder


def test_summaries_hold_every_evaluation_and_the_peak_is_picked_on_the_other_half(bench, tmp_path):
    tiers = ["0"] * 4 + ["1"] * 4  # positions within each tier: even = selection half, odd = report half
    base = [2] * 8
    # GRPO: step 10 is best on the selection half; the report half shows what that choice scores
    grpo = _run(tmp_path / "grpo-s0", {"step000010": [9, 1, 9, 1, 9, 1, 9, 1], "final": [5, 5, 5, 5, 5, 5, 5, 5]},
                tiers, base)
    arm = _run(tmp_path / "knapsack-s0", {"step000010": [3, 3, 3, 3, 3, 3, 3, 3], "final": [8, 8, 8, 8, 8, 8, 8, 8]},
               tiers)
    summary = bench.summaries({"grpo": [grpo], "knapsack": [arm]}, [0])
    json.dumps(summary)
    assert summary["prompts"]["tier"] == tiers and summary["base"]["0"] == {"n": 16, "c": base}
    seeds = summary["arms"]["knapsack"]["seeds"]["0"]
    assert set(seeds["evals"]) == {"step000010", "final"} and seeds["useful_group_fraction"] == 0.4
    assert summary["arms"]["knapsack"]["overrides"] == bench.parse_arm("knapsack")[1]
    peak = bench.peak_comparison(summary)
    assert peak["arms"]["grpo"]["peak_evals"] == ["step000010"]
    assert peak["arms"]["knapsack"]["peak_evals"] == ["final"]
    cell = peak["arms"]["knapsack"]["slices"]["pooled mean@8"]
    assert cell["peak"] == pytest.approx(8 / 16)
    # GRPO's peak scored on the report half: c = 1 of 16 there (its selection-half 9s do not count)
    assert cell["vs_grpo"]["estimate"] == pytest.approx(8 / 16 - 1 / 16)
    assert np.isfinite(peak["arms"]["knapsack"]["slices"]["pooled pass@8"]["vs_grpo"]["low"])
    # compute to target: GRPO's final pooled mean@8 (5/16) is reached by GRPO at step 10, by the
    # arm between its 3/16 at step 10 and 8/16 at the end (step 20): 10 + 2/5 of 10 = step 14
    (grpo / "config.yaml").write_text("steps: 20\n")
    reach = bench.compute_to_target(summary, grpo)
    assert reach["grpo"]["seeds"]["0"]["step"] == pytest.approx(10)
    assert reach["knapsack"]["seeds"]["0"]["step"] == pytest.approx(14)
    assert reach["knapsack"]["vs_grpo_median"] == pytest.approx(1.4)
