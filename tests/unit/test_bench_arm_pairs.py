"""benchmarks/arm_pairs.py: the paired difference of two arms, on summaries written by hand, so every
number asserted here follows from the (n, c) put in."""
from __future__ import annotations

import json

import pytest
from _bench import load_benchmark

TIERS = ["0", "0", "0", "4", "4", "4"]


@pytest.fixture(scope="module")
def pairs():
    return load_benchmark("arm_pairs")


def _summary(arms: dict[str, dict[str, list[int]]]) -> dict:
    """arms: {arm: {seed: successes of the six prompts out of 10 samples, final evaluation}}"""
    return {"prompts": {"id": list(range(6)), "tier": TIERS}, "k": 8, "base": {},
            "arms": {arm: {"seeds": {seed: {"evals": {"final": {"n": 10, "c": c}}} for seed, c in seeds.items()}}
                     for arm, seeds in arms.items()}}


def test_difference_is_b_minus_a_per_slice(pairs):
    s = _summary({
        "a": {"0": [5, 5, 5, 1, 1, 1], "1": [6, 6, 6, 2, 2, 2]},
        # b gains 3 successes in 10 on every tier-4 prompt and nothing on tier 0
        "b": {"0": [5, 5, 5, 4, 4, 4], "1": [6, 6, 6, 5, 5, 5]},
    })
    r = pairs.compare(s, "a", "b")
    assert r["seeds"] == ["0", "1"]
    t4 = r["slices"]["tier 4 (carry_out) mean@8"]
    assert t4["a"] == pytest.approx(0.15) and t4["b"] == pytest.approx(0.45)
    # the same change on every prompt and seed: every resample gives it, so the CI is a point
    assert t4["difference"]["estimate"] == pytest.approx(0.3)
    assert t4["difference"]["low"] == pytest.approx(0.3) and t4["difference"]["high"] == pytest.approx(0.3)
    assert t4["relative"]["estimate"] == pytest.approx(2.0)
    assert r["slices"]["tier 0 (add3) pass@8"]["difference"]["estimate"] == pytest.approx(0.0)
    assert r["slices"]["pooled mean@8"]["difference"]["estimate"] == pytest.approx(0.15)


def test_only_shared_seeds_are_paired(pairs):
    s = _summary({"a": {"0": [5] * 6, "1": [5] * 6}, "b": {"1": [7] * 6, "2": [9] * 6}})
    r = pairs.compare(s, "a", "b")
    assert r["seeds"] == ["1"]
    assert r["slices"]["pooled mean@8"]["difference"]["estimate"] == pytest.approx(0.2)


def test_bad_requests_name_the_problem(pairs, tmp_path):
    s = _summary({"a": {"0": [5] * 6}, "b": {"1": [5] * 6}})
    with pytest.raises(SystemExit, match="no arm 'c'"):
        pairs.compare(s, "a", "c")
    with pytest.raises(SystemExit, match="share no seed"):
        pairs.compare(s, "a", "b")
    s = _summary({"a": {"0": [5] * 6}, "b": {"0": [5] * 6}})
    with pytest.raises(SystemExit, match="no evaluation 'step000010'"):
        pairs.compare(s, "a", "b", "step000010")
    with pytest.raises(SystemExit, match="no such results file"):
        pairs.main([str(tmp_path / "missing.json"), "--b", "b"])


def test_main_prints_and_writes(pairs, tmp_path, capsys):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_summary({"a": {"0": [5] * 6}, "b": {"0": [6] * 6}})))
    out = tmp_path / "pair.json"
    assert pairs.main([str(path), "--a", "a", "--b", "b", "--out", str(out)]) == 0
    assert "b vs a at final" in capsys.readouterr().out
    assert json.loads(out.read_text())["slices"]["pooled mean@8"]["difference"]["estimate"] == pytest.approx(0.1)
