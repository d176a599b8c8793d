"""The knapsack rollout allocator: exact budget, bounds, optimality, symmetry, determinism, state."""
import itertools
import json

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gdro_ray.algorithms import RolloutGDRO, to_jsonable
from gdro_ray.algorithms.knapsack import gradient_probability, knapsack_allocate, marginal_value

rates = st.floats(0.0, 1.0, allow_nan=False)


@st.composite
def problems(draw, max_prompts=40):
    size = draw(st.integers(1, max_prompts))
    n_min = draw(st.integers(1, 6))
    n_max = draw(st.integers(n_min, 30))
    total = draw(st.integers(size * n_min, size * n_max))
    p = np.array(draw(st.lists(rates, min_size=size, max_size=size)))
    return p, n_min, n_max, total


@settings(deadline=None, max_examples=150)
@given(problems())
def test_exact_total_and_bounds(problem):
    p, n_min, n_max, total = problem
    n = knapsack_allocate(p, n_min, n_max, total)
    assert n.dtype == np.int64 and n.shape == p.shape
    assert n.sum() == total and n.min() >= n_min and n.max() <= n_max


def _brute_force_best(p, n_min, n_max, total) -> float:
    best = -1.0
    for n in itertools.product(range(n_min, n_max + 1), repeat=len(p)):
        if sum(n) == total:
            best = max(best, float(gradient_probability(np.array(n), p).sum()))
    return best


@settings(deadline=None, max_examples=120)
@given(problems(max_prompts=4))
def test_greedy_is_optimal_against_brute_force(problem):
    """V(n, p) is concave in n for fixed p, so handing out rollouts greedily is exact."""
    p, n_min, n_max, total = problem
    assume((n_max - n_min + 1) ** len(p) <= 20_000)
    n = knapsack_allocate(p, n_min, n_max, total)
    assert gradient_probability(n, p).sum() == pytest.approx(_brute_force_best(p, n_min, n_max, total), abs=1e-12)


@settings(deadline=None, max_examples=60)
@given(st.floats(0.0, 1.0), st.integers(1, 60))
def test_marginal_value_is_the_difference_and_falls_with_n(p, n):
    assert marginal_value(n, p) == pytest.approx(gradient_probability(n + 1, p) - gradient_probability(n, p),
                                                 abs=1e-12)
    assert marginal_value(n + 1, p) <= marginal_value(n, p) + 1e-15


@settings(deadline=None, max_examples=80)
@given(problems())
def test_symmetric_in_success_and_failure(problem):
    """V(n, p) = V(n, 1 − p): a prompt solved 90% of the time is as informative as one solved 10%."""
    p, n_min, n_max, total = problem
    p = np.round(p * 64) / 64  # exactly representable, so 1 − (1 − p) == p
    assert np.array_equal(knapsack_allocate(p, n_min, n_max, total), knapsack_allocate(1.0 - p, n_min, n_max, total))


@settings(deadline=None, max_examples=80)
@given(st.integers(1, 50), st.integers(2, 6), st.integers(0, 20), rates)
def test_equal_rates_give_every_prompt_the_mean(size, n_min, extra, p):
    n_max = n_min + extra + 3
    budget = n_min + extra
    n = knapsack_allocate(np.full(size, p), n_min, n_max, size * budget)
    assert np.all(n == budget)


@settings(deadline=None, max_examples=80)
@given(problems(), st.data())
def test_dominated_prompt_never_gets_more(problem, data):
    """If prompt i's next rollout is worth at least prompt j's at every count, i never gets fewer
    (earlier position wins exact ties). Hopeless and solved prompts are dominated by every prompt."""
    p, n_min, n_max, total = problem
    assume(len(p) >= 2)
    n = knapsack_allocate(p, n_min, n_max, total)
    counts = np.arange(n_min, n_max)
    for i, j in itertools.permutations(range(len(p)), 2):
        di, dj = marginal_value(counts, p[i]), marginal_value(counts, p[j])
        if np.all(di > dj) or (np.all(di >= dj) and i < j):
            assert n[i] >= n[j], (p[i], p[j], n[i], n[j])


@settings(deadline=None, max_examples=80)
@given(problems())
def test_more_budget_never_takes_a_rollout_away(problem):
    p, n_min, n_max, total = problem
    assume(total < len(p) * n_max)
    assert np.all(knapsack_allocate(p, n_min, n_max, total + 1) >= knapsack_allocate(p, n_min, n_max, total))


def test_hard_but_solvable_prompts_get_the_most_and_degenerate_ones_the_least():
    """At n̄ = 8 within 4 … 24: p = 0.5 saturates early, p = 0.05 or 0.9 keeps gaining, p ∈ {0, 1} gains nothing."""
    p = np.array([0.0, 0.05, 0.2, 0.5, 0.9, 1.0])
    n = knapsack_allocate(p, 4, 24, 8 * len(p))
    assert n.tolist() == [4, 12, 9, 6, 13, 4]
    assert n[0] == n[5] == 4 and n[3] < n[2] < min(n[1], n[4])
    assert gradient_probability(n, p).sum() > gradient_probability(np.full(6, 8), p).sum()


def test_infeasible_or_bad_input_is_refused():
    with pytest.raises(ValueError, match="cannot be split"):
        knapsack_allocate([0.5, 0.5], 4, 8, 20)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        knapsack_allocate([0.5, 1.5], 2, 8, 8)
    with pytest.raises(ValueError, match="NaN"):
        knapsack_allocate([0.5, np.nan], 2, 8, 8)


@settings(deadline=None, max_examples=60)
@given(st.integers(1, 12), st.integers(1, 200), st.integers(0, 10**6))
def test_rollout_gdro_knapsack_mode_keeps_the_budget_at_the_papers_range(groups, size, seed):
    """0.5×–3× the mean (4 … 24 at n̄ = 8): Σ n_i = B·n̄ exactly, in both allocators."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, groups, size)
    for mode in ("knapsack", "shadow_price"):
        ctl = RolloutGDRO(groups, n_min=4, n_max=24, budget_mean=8, mode=mode)
        ctl.variance = rng.uniform(0.01, 0.25, groups)
        n = ctl.allocate(ids, rng.uniform(0, 1, size) if mode == "knapsack" else None)
        assert n.sum() == 8 * size and n.min() >= 4 and n.max() <= 24


def test_rollout_gdro_knapsack_needs_the_success_rates_and_round_trips():
    ctl = RolloutGDRO(4, n_min=2, n_max=12, budget_mean=4, mode="knapsack")
    with pytest.raises(ValueError, match="success rate"):
        ctl.allocate(np.array([0, 1]))
    with pytest.raises(ValueError, match="success has"):
        ctl.allocate(np.array([0, 1]), np.array([0.5]))
    ids, p = np.array([0, 1, 2, 3, 3]), np.array([0.05, 0.5, 0.9, 0.0, 0.3])
    first = ctl.allocate(ids, p)
    ctl.observe(ids, first, np.minimum(first, 1))
    twin = RolloutGDRO(4, n_min=2, n_max=12, budget_mean=4, mode="knapsack")
    twin.load_state_dict(json.loads(json.dumps(to_jsonable(ctl.state_dict()))))
    assert np.array_equal(twin.allocate(ids, p), ctl.allocate(ids, p))
    assert np.array_equal(first, ctl.allocate(ids, p))  # a function of its inputs: no hidden state
