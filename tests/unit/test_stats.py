"""Paired bootstrap CIs (gdro_ray.eval.stats)."""
import numpy as np
import pytest

from gdro_ray.eval.stats import paired_bootstrap


def test_clear_gain_excludes_zero_and_estimate_is_the_plain_ratio():
    rng = np.random.default_rng(1)
    a = rng.uniform(0.2, 0.4, size=(3, 300))
    b = a + 0.1 + rng.normal(0, 0.02, size=a.shape)
    ci = paired_bootstrap(a, b, kind="relative", reps=1000)
    assert ci.estimate == pytest.approx(b.mean() / a.mean() - 1)
    assert ci.low <= ci.estimate <= ci.high
    assert ci.excludes_zero() and ci.low > 0.2


def test_no_change_interval_contains_zero():
    rng = np.random.default_rng(2)
    a = rng.binomial(1, 0.4, size=(3, 400)).astype(float)
    b = rng.permutation(a.T).T  # same distribution, no systematic change
    ci = paired_bootstrap(a, b, kind="difference", reps=1000)
    assert ci.low < 0 < ci.high and not ci.excludes_zero()


def test_pairing_narrows_the_interval():
    """A small constant shift on noisy prompts: paired resampling sees it, the width stays small."""
    rng = np.random.default_rng(3)
    prompt_effect = rng.uniform(0, 1, size=500)
    a = np.stack([prompt_effect] * 2)
    b = a + 0.01
    ci = paired_bootstrap(a, b, kind="difference", reps=500)
    assert ci.low == pytest.approx(0.01) and ci.high == pytest.approx(0.01)


def test_strata_keep_their_sizes_and_seed_spread_widens_the_interval():
    rng = np.random.default_rng(4)
    a = rng.uniform(0.3, 0.5, size=(4, 120))
    tiers = np.repeat(np.arange(6), 20)
    same_seeds = a + 0.05
    spread = a + 0.05 + np.array([-0.04, 0.04, -0.03, 0.03])[:, None]
    tight = paired_bootstrap(a, same_seeds, kind="difference", strata=tiers, reps=800)
    wide = paired_bootstrap(a, spread, kind="difference", strata=tiers, reps=800)
    assert tight.estimate == pytest.approx(wide.estimate)
    assert (wide.high - wide.low) > 5 * (tight.high - tight.low)


def test_deterministic_and_validates_shapes():
    a, b = np.full(10, 0.5), np.full(10, 0.6)
    assert paired_bootstrap(a, b, seed=7) == paired_bootstrap(a, b, seed=7)
    with pytest.raises(ValueError):
        paired_bootstrap(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError):
        paired_bootstrap(a, b, kind="ratio")
    with pytest.raises(ValueError):
        paired_bootstrap(a, b, strata=np.zeros(3))
