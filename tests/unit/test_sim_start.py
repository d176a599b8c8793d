"""`sim.start_from` and friends: the simulator started from a measured base evaluation."""
from __future__ import annotations

import json

import numpy as np
import pytest

from gdro_ray.cli.main import main
from gdro_ray.config.loader import ConfigError
from gdro_ray.config.schema import SimConfig
from gdro_ray.sim.learner import SyntheticLearner
from gdro_ray.sim.start import read_start, tier_priors

RATES = (0.6, 0.3, 0.05)  # true per-tier success of the fake base model


def _eval_file(path, seed=0, per_tier=150, n=16, tiers=(0, 1, 2)):
    rng = np.random.default_rng(seed)
    rows = []
    for t in tiers:
        p = rng.beta(4 * RATES[t] / (1 - RATES[t]) + 0.1, 4, size=per_tier)  # spread around the tier's rate
        p = np.clip(p * RATES[t] / p.mean(), 0, 1)
        for j in range(per_tier):
            rows.append({"id": t * per_tier + j, "tier": t, "n": n, "c": int(rng.binomial(n, p[j])), "source": "toy"})
    path.write_text(json.dumps({"k": n, "per_prompt": rows}))
    return path


def _sim(start, **kw):
    return SimConfig(num_prompts=kw.pop("num_prompts", 3000), start_from=str(start), **kw)


def test_measured_start_reproduces_the_tiers_base_success(tmp_path):
    f = _eval_file(tmp_path / "eval_base.json")
    learner = SyntheticLearner(_sim(f, tier_shares=[0.7, 0.2, 0.1]), seed=0)
    assert learner.num_cells == 3 and learner.tier_names == ["0", "1", "2"]
    ev = learner.evaluate(8)
    rows = json.loads(f.read_text())["per_prompt"]
    for t in range(3):
        measured = np.mean([r["c"] / r["n"] for r in rows if r["tier"] == t])
        assert abs(ev["tier_mean_at_k"][t] - measured) < 0.03, (t, ev["tier_mean_at_k"][t], measured)
    counts = np.bincount(learner.cell_train, minlength=3)
    assert counts.tolist() == [2100, 600, 300]  # largest-remainder shares of the pool
    # the held-out set is the file's prompts, the pool's bases are draws of the same tiers
    assert learner.base_eval.size == len(rows)
    for t in range(3):
        assert abs(np.median(learner.base_train[learner.cell_train == t])
                   - np.median(learner.base_eval[learner.cell_eval == t])) < 0.5


def test_files_merge_by_id_and_a_tier_conflict_is_an_error(tmp_path):
    a = _eval_file(tmp_path / "a.json", seed=1)
    b = _eval_file(tmp_path / "b.json", seed=2)
    tiers, c, n, names = read_start(f"{a},{b}")
    assert tiers.size == 450 and np.all(n == 32) and names == ["0", "1", "2"]
    rows = json.loads(b.read_text())["per_prompt"]
    rows[0]["tier"] = 2
    b.write_text(json.dumps({"per_prompt": rows}))
    with pytest.raises(ConfigError, match="sim.start_from"):
        read_start(f"{a},{b}")


def test_tier_prior_removes_binomial_noise():
    rng = np.random.default_rng(0)
    p = rng.beta(2, 8, size=4000)  # true spread: var 0.0145
    c = rng.binomial(16, p).astype(float)
    a, b = tier_priors(np.zeros(4000, dtype=np.int64), c, np.full(4000, 16.0), 1)[0]
    assert abs(a / (a + b) - 0.2) < 0.01
    assert abs(a * b / ((a + b) ** 2 * (a + b + 1)) - 0.0145) < 0.003  # not the noisier var of c/n


def test_choice_rate_keeps_the_start_and_caps_what_training_reaches(tmp_path):
    f = _eval_file(tmp_path / "eval_base.json")
    plain = SyntheticLearner(_sim(f), seed=3)
    split = SyntheticLearner(_sim(f, tier_choice_rate=[0.7, 0.4, 0.1]), seed=3)
    np.testing.assert_allclose(plain.p_eval(), split.p_eval(), rtol=1e-6, atol=1e-9)  # same start point
    for learner in (plain, split):
        learner.theta[:] = 30.0  # far more training than any run
    assert plain.p_eval().min() > 0.99  # without a split every prompt can be learned
    np.testing.assert_allclose(split.p_eval(), split.ceil_eval, atol=1e-6)  # trained to the ceiling
    assert split.ceil_eval.min() < 0.5
    assert split.evaluate(8)["tier_mean_at_k"][2] < 0.6  # the hard tier lacks the skill, RL cannot supply it


def test_start_shift_moves_every_base_logit(tmp_path):
    f = _eval_file(tmp_path / "eval_base.json")
    a = SyntheticLearner(_sim(f), seed=4)
    b = SyntheticLearner(_sim(f, start_shift=1.0), seed=4)
    np.testing.assert_allclose(b.base_eval - a.base_eval, 1.0)
    np.testing.assert_allclose(b.base_train - a.base_train, 1.0)


def test_simulate_from_a_measured_start_reports_its_tiers(tmp_path, capsys):
    f = _eval_file(tmp_path / "eval_base.json")
    out = tmp_path / "run"
    rc = main(["simulate", "steps=6", "batch_size=32", "budget_mean=8", f"sim.start_from={f}", "sim.num_prompts=400",
               "sim.tier_shares=[0.5,0.3,0.2]", "sim.eval_every=3", f"out={out}", "--algorithms", "grpo,both"])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())["algorithms"]["both"]
    assert s["tier_names"] == ["0", "1", "2"] and len(s["final_tier_mean_at_k"]) == 3
    assert [p["step"] for p in s["eval_curve"]] == [0, 3, 6] and len(s["train_reward_curve"]) == 6
    assert s["base_tier_mean_at_k"][0] > s["base_tier_mean_at_k"][2]


@pytest.mark.parametrize("override, key", [
    ("sim.start_from=/no/such/eval_base.json", "sim.start_from"),
    ("sim.tier_choice_rate=[0.5,1.5,0.1]", "sim.tier_choice_rate"),
    ("sim.tier_shares=[-1,2,1]", "sim.tier_shares"),
])
def test_bad_start_options_name_the_key(tmp_path, capsys, override, key):
    f = _eval_file(tmp_path / "eval_base.json")
    args = ["simulate", "steps=2", "batch_size=8", f"sim.start_from={f}", "sim.num_prompts=100", override,
            f"out={tmp_path / 'x'}"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and key in err


def test_shares_or_rates_of_the_wrong_length_name_the_key(tmp_path):
    f = _eval_file(tmp_path / "eval_base.json")
    with pytest.raises(ConfigError, match="sim.tier_shares"):
        SyntheticLearner(_sim(f, tier_shares=[1.0, 1.0]), seed=0)
    with pytest.raises(ConfigError, match="sim.tier_choice_rate"):
        SyntheticLearner(_sim(f, tier_choice_rate=[0.5]), seed=0)


def test_ceiling_lr_lets_training_raise_the_ceiling(tmp_path):
    f = _eval_file(tmp_path / "eval_base.json")
    rates = [0.7, 0.4, 0.1]
    fixed = SyntheticLearner(_sim(f, tier_choice_rate=rates), seed=5)
    moving = SyntheticLearner(_sim(f, tier_choice_rate=rates, ceiling_lr=0.5), seed=5)
    np.testing.assert_allclose(fixed.p_eval(), moving.p_eval(), atol=1e-6)  # same start
    ids = np.flatnonzero(fixed.cell_train == 2)[:64]
    for learner in (fixed, moving):
        for _ in range(200):
            learner.learn(ids, np.full(ids.size, 8), np.full(ids.size, 4), np.ones(ids.size))
    hard = fixed.cell_eval == 2
    assert fixed.p_eval()[hard].max() <= fixed.ceil_eval[hard].max() + 1e-9  # capped
    assert moving.p_eval()[hard].mean() > fixed.p_eval()[hard].mean() + 0.03  # the ceiling itself rose


def test_tier_positions_set_who_learns_from_whom(tmp_path):
    f = _eval_file(tmp_path / "eval_base.json")
    ordered = SyntheticLearner(_sim(f, transfer_width=0.2), seed=6)
    apart = SyntheticLearner(_sim(f, transfer_width=0.2, tier_positions=[0.0, 5.0, 0.1]), seed=6)
    ids = np.flatnonzero(ordered.cell_train == 0)[:64]
    for learner in (ordered, apart):
        learner.learn(ids, np.full(ids.size, 8), np.full(ids.size, 4), np.ones(ids.size))
    assert ordered.theta[1] > ordered.theta[2] > 0  # tier order: the neighbour learns more
    assert apart.theta[2] > 100 * apart.theta[1]  # tier 2 placed next to tier 0, tier 1 far away
    with pytest.raises(ConfigError, match="sim.tier_positions"):
        SyntheticLearner(_sim(f, tier_positions=[0.0, 1.0]), seed=0)


def test_interference_costs_the_cells_that_are_not_trained(tmp_path):
    f = _eval_file(tmp_path / "eval_base.json")
    base = SyntheticLearner(_sim(f, transfer_width=0.05), seed=7)
    costly = SyntheticLearner(_sim(f, transfer_width=0.05, interference=0.5), seed=7)
    ids = np.flatnonzero(base.cell_train == 0)[:64]
    for learner in (base, costly):
        learner.learn(ids, np.full(ids.size, 8), np.full(ids.size, 4), np.ones(ids.size))
    assert base.theta[2] >= 0 and costly.theta[2] < 0  # an untrained tier loses ground
    assert 0 < costly.theta[0] < base.theta[0]  # the trained tier still gains, less
