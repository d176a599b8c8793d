"""Rollout-GDRO: exact budget and bounds, the Neyman law, KKT optimality, monotonicity, state."""
import json
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gdro_ray.algorithms import RolloutGDRO, to_jsonable


@st.composite
def setups(draw):
    num_groups = draw(st.integers(1, 12))
    n_min = draw(st.integers(1, 4))
    n_max = draw(st.integers(n_min, 16))
    budget = draw(st.integers(n_min, n_max))
    ctl = RolloutGDRO(num_groups, n_min=n_min, n_max=n_max, budget_mean=budget)
    ctl.variance = np.array(draw(st.lists(st.floats(0.01, 0.25), min_size=num_groups, max_size=num_groups)))
    size = draw(st.integers(1, 300))
    ids = np.array(draw(st.lists(st.integers(0, num_groups - 1), min_size=size, max_size=size)))
    return ctl, ids


@settings(deadline=None, max_examples=80)
@given(setups())
def test_exact_budget_bounds_and_rounding(setup):
    ctl, ids = setup
    alloc = ctl.allocate(ids)
    assert alloc.dtype == np.int64 and alloc.sum() == len(ids) * ctl.budget_mean
    assert alloc.min() >= ctl.n_min and alloc.max() <= ctl.n_max
    cont = ctl.continuous_allocation(np.bincount(ids, minlength=ctl.num_groups))[ids]
    assert np.all((alloc == np.floor(cont + 1e-9)) | (alloc == np.ceil(cont - 1e-9)))


@settings(deadline=None, max_examples=80)
@given(setups())
def test_continuous_allocation_is_the_constrained_optimum(setup):
    ctl, ids = setup
    shares = np.bincount(ids, minlength=ctl.num_groups) / len(ids)
    n = ctl.continuous_allocation(shares)
    assert shares @ n == pytest.approx(ctl.budget_mean, rel=1e-9)
    # KKT of min Σ s v/n + μ(Σ s n − n̄) with box bounds: v/n² = μ inside, ≤ μ at n_min, ≥ μ at n_max.
    mu, marginal, active = ctl.shadow_price, ctl.variance / n**2, shares > 0
    inside = active & (n > ctl.n_min + 1e-9) & (n < ctl.n_max - 1e-9)
    assert np.allclose(marginal[inside], mu, rtol=1e-7)
    if ctl.budget_mean > ctl.n_min:  # at n̄ = n_min any μ large enough is optimal
        assert np.all(marginal[active & (n <= ctl.n_min + 1e-9)] <= mu * (1 + 1e-7))
    if ctl.budget_mean < ctl.n_max:  # likewise at n̄ = n_max any small enough μ is
        assert np.all(marginal[active & (n >= ctl.n_max - 1e-9)] >= mu * (1 - 1e-7))
    assert mu >= 0


@settings(deadline=None, max_examples=60)
@given(st.lists(st.floats(0.05, 0.25), min_size=1, max_size=10), st.data())
def test_neyman_law_when_no_bound_binds(variance, data):
    B = len(variance)
    ctl = RolloutGDRO(B, n_min=1, n_max=40, budget_mean=8)
    ctl.variance = np.array(variance)
    shares = np.array(data.draw(st.lists(st.floats(0.01, 1), min_size=B, max_size=B)))
    shares /= shares.sum()
    neyman = 8 * np.sqrt(ctl.variance) / (shares @ np.sqrt(ctl.variance))
    assume(neyman.min() > 1 and neyman.max() < 40)
    assert np.allclose(ctl.continuous_allocation(shares), neyman, rtol=1e-10)


@settings(deadline=None, max_examples=60)
@given(setups(), st.data())
def test_more_variance_never_fewer_rollouts(setup, data):
    ctl, ids = setup
    alloc = ctl.allocate(ids)
    present = np.unique(ids)
    for a in present:
        for b in present:
            if ctl.variance[a] > ctl.variance[b]:
                assert alloc[ids == a].min() >= alloc[ids == b].min()
                assert alloc[ids == a].max() >= alloc[ids == b].max()
    # Raising one group's variance never lowers its own continuous allocation.
    shares = np.bincount(ids, minlength=ctl.num_groups) / len(ids)
    before = ctl.continuous_allocation(shares)
    g = data.draw(st.sampled_from(present.tolist()))
    ctl.variance[g] = min(0.25, ctl.variance[g] * data.draw(st.floats(1.0, 5.0)))
    assert ctl.continuous_allocation(shares)[g] >= before[g] - 1e-9


def test_warm_start_changes_iterations_not_the_answer():
    ctl = RolloutGDRO(4)
    ctl.variance = np.array([0.01, 0.05, 0.2, 0.25])
    shares = np.array([0.7, 0.1, 0.1, 0.1])
    cold = ctl.continuous_allocation(shares)
    assert ctl.last_iterations <= 10
    ctl.continuous_allocation(shares)
    assert ctl.last_iterations == 1  # warm: the stored μ already meets the budget
    warm_mu = ctl.shadow_price
    ctl.shadow_price = 1e6  # a terrible start still converges to the same optimum
    assert np.allclose(ctl.continuous_allocation(shares), cold, rtol=1e-10)
    assert ctl.shadow_price == pytest.approx(warm_mu, rel=1e-8)


def test_hopeless_groups_get_the_minimum_and_uniform_mode_is_flat():
    ctl = RolloutGDRO(3)
    ids = np.array([0] * 100 + [1] * 100 + [2] * 56)
    n = np.array([4] * 256)
    c = np.array([0] * 100 + [2] * 100 + [4] * 56)  # unsolved, half, solved
    for _ in range(20):
        ctl.observe(ids, n, c)
    assert ctl.variance == pytest.approx([0.01, 0.25, 0.01], rel=1e-3)
    alloc = ctl.allocate(ids)
    assert alloc.sum() == 1024 and alloc[:100].max() == 2 and alloc[100:200].min() >= 6
    uniform = RolloutGDRO(3, mode="uniform")
    uniform.observe(ids, n, c)
    assert (uniform.allocate(ids) == 4).all()


def test_observe_is_an_ema_from_the_maximum_with_a_floor():
    ctl = RolloutGDRO(3, variance_beta=0.5, v_min=0.02)
    ctl.observe(np.array([0, 0, 1]), np.array([4, 4, 4]), np.array([2, 0, 0]))
    assert ctl.variance.tolist() == pytest.approx([0.5 * 0.25 + 0.5 * 0.125, 0.5 * 0.25 + 0.5 * 0.02, 0.25])


def test_fractional_budget_rounds_the_total():
    ctl = RolloutGDRO(2, budget_mean=3.5)
    alloc = ctl.allocate(np.array([0, 1, 1]))
    assert alloc.sum() == round(3 * 3.5) and alloc.min() >= 2


@pytest.mark.parametrize("kwargs, message", [
    ({"n_min": 13}, "n_min=13 > n_max=12"), ({"budget_mean": 20}, "budget_mean=20"),
    ({"n_min": 0}, "n_min must be >= 1"), ({"v_min": 0.0}, "v_min"), ({"variance_beta": 2.0}, "variance_beta"),
    ({"mode": "dp"}, "mode"), ({"dual_lr": 0}, "dual_lr"),
])
def test_bad_configuration_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RolloutGDRO(4, **kwargs)


@pytest.mark.parametrize("ids, n, c, message", [
    ([0, 9], [4, 4], [1, 1], "group_ids must lie"),
    ([0, 1], [4, 4], [5, 1], "0 <= c <= n"),
    ([0, 1], [4, 4], [1], "equal lengths"),
    ([0, 1], [4, np.nan], [1, 1], "NaN"),
])
def test_bad_observation_raises_and_changes_nothing(ids, n, c, message):
    ctl = RolloutGDRO(3)
    ctl.observe(np.array([0, 1, 2]), np.array([4, 4, 4]), np.array([1, 2, 3]))
    before = {k: np.array(v, copy=True) for k, v in ctl.state_dict().items() if k != "config"}
    with pytest.raises(ValueError, match=message):
        ctl.observe(np.array(ids), np.array(n), np.array(c))
    after = ctl.state_dict()
    assert all(np.array_equal(before[k], after[k], equal_nan=True) for k in before)


def test_state_round_trip_through_json_gives_identical_decisions():
    rng = np.random.default_rng(2)
    original = RolloutGDRO(6)
    for _ in range(5):
        ids = rng.integers(0, 6, 64)
        n = original.allocate(ids)
        original.observe(ids, n, rng.binomial(n, 0.3))
    restored = RolloutGDRO(6)
    restored.load_state_dict(json.loads(json.dumps(to_jsonable(original.state_dict()))))
    for _ in range(5):
        ids = rng.integers(0, 6, 64)
        a, b = original.allocate(ids), restored.allocate(ids)
        assert np.array_equal(a, b)
        c = rng.binomial(a, 0.3)
        original.observe(ids, a, c)
        restored.observe(ids, b, c)
    assert original.shadow_price == restored.shadow_price and math.isfinite(original.shadow_price)
    assert json.dumps(original.metrics()) == json.dumps(restored.metrics())


def test_proxy_values_replace_the_visit_variance():
    ctl = RolloutGDRO(2, variance_beta=1.0, v_min=0.01)
    ids, n, c = np.array([0, 0, 1]), np.array([4, 4, 4]), np.array([0, 0, 2])
    ctl.observe(ids, n, c, proxy_values=[0.2, 0.1, 0.05])
    assert ctl.variance.tolist() == pytest.approx([0.15, 0.05])  # not p̂(1−p̂) = [0.01 floor, 0.25]
    before = ctl.state_dict()
    for bad in ([0.1, 0.1], [0.3, 0.1, 0.1], [float("nan"), 0.1, 0.1], [-0.1, 0.1, 0.1]):
        with pytest.raises(ValueError, match="proxy_values"):
            ctl.observe(ids, n, c, proxy_values=bad)
    assert ctl.variance.tolist() == before["variance"].tolist() and ctl.steps == before["steps"]
