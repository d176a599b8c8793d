"""TensorBoard event files: step records and evaluations written, then read back from disk."""
from __future__ import annotations

import math

import pytest
from _tensorboard import read_scalars

from gdro_ray.metrics.tensorboard import TensorBoardWriter, eval_scalars, group_names, record_scalars


def _record(step: int) -> dict:
    return {"step": step, "algorithm": "both", "reward_mean": 0.1 * (step + 1), "shadow_price": 0.5,
            "bin_weights": [0.5, 0.3, 0.2], "bin_pass_at_k": [None, 0.4, float("nan")],
            "group_ids": [0, 1, 2, 2], "stage_time_s": {"sample": 1.5, "learn": 2.0}, "off_policy": False}


def test_record_scalars_flattens_groups_stages_and_skips_non_numbers():
    tags = record_scalars(_record(0))
    assert tags["reward_mean"] == pytest.approx(0.1) and tags["shadow_price"] == 0.5
    assert tags["bins/bin_weights/bin0"] == 0.5 and tags["bins/bin_weights/unseen"] == 0.2
    assert tags["bins/bin_pass_at_k/bin1"] == 0.4
    assert "bins/bin_pass_at_k/bin0" not in tags and "bins/bin_pass_at_k/unseen" not in tags  # None, NaN
    assert tags["stage_time_s/learn"] == 2.0
    assert not any(t.startswith(("algorithm", "group_ids", "off_policy", "step")) for t in tags)
    assert all(math.isfinite(v) for v in tags.values())


def test_group_names_end_with_unseen():
    assert group_names(3) == ["bin0", "bin1", "unseen"]


def test_eval_scalars_cover_pooled_worst_and_tiers():
    res = {"k": 8, "pooled": {"pass_at_k": 0.5, "mean_at_k": 0.25, "n_prompts": 10},
           "per_tier": {"1": {"pass_at_k": 0.9}, "6": {"pass_at_k": 0.1}},
           "worst_tier": {"tier": "6", "pass_at_k": 0.1}, "per_prompt": [{"x": 1}]}
    tags = eval_scalars(res)
    assert tags["eval/pooled/pass_at_k"] == 0.5 and tags["eval/tier6/pass_at_k"] == 0.1
    assert tags["eval/worst_tier/pass_at_k"] == 0.1 and "eval/k" not in tags


def test_writer_round_trip(tmp_path):
    w = TensorBoardWriter(tmp_path)
    w.write_eval({"pooled": {"pass_at_k": 0.3}}, 0)
    for step in range(3):
        w.write_record(_record(step))
    w.write_eval({"pooled": {"pass_at_k": 0.4}}, 3)
    w.close()
    tb = read_scalars(tmp_path / "tensorboard")
    assert tb["reward_mean"] == [(1, pytest.approx(0.1)), (2, pytest.approx(0.2)), (3, pytest.approx(0.3))]
    assert tb["eval/pooled/pass_at_k"] == [(0, pytest.approx(0.3)), (3, pytest.approx(0.4))]
    assert [s for s, _ in tb["bins/bin_weights/bin1"]] == [1, 2, 3]
