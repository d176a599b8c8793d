"""Difficulty classifier: windows, empirical-Bayes prior, hysteresis both ways, membership, state."""
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gdro_ray.algorithms import DifficultyClassifier, beta_pass_at_k, pass_at_k, to_jsonable


def realistic_pool(num_prompts=2000, visits=2, seed=0):
    """Per-rollout success rates mostly low or moderate (Beta(0.3, 1.5), mean 0.17), 4 rollouts per visit."""
    rng = np.random.default_rng(seed)
    rates = rng.beta(0.3, 1.5, num_prompts)
    clf = DifficultyClassifier(num_prompts + 2, k=8)
    for _ in range(visits):
        ids = rng.permutation(num_prompts)
        clf.observe(ids, np.full(num_prompts, 4), rng.binomial(4, rates[ids]))
        clf.end_step()
    return clf


def test_unseen_prompts_sit_in_their_own_group():
    clf = DifficultyClassifier(50)
    assert clf.num_groups == clf.num_bins + 1 == 11 and clf.unseen == 10
    assert clf.group_counts().tolist() == [0] * 10 + [50]
    assert (clf.groups(np.arange(50)) == clf.unseen).all()
    assert np.isnan(clf.estimates(np.arange(50))).all()
    clf.observe(np.array([3]), np.array([4]), np.array([2]))
    assert clf.groups(np.array([3]))[0] < clf.unseen
    assert clf.groups(np.array([4]))[0] == clf.unseen
    assert clf.group_counts()[clf.unseen] == 49


def test_pool_prior_puts_zero_of_four_in_a_hard_bin_and_four_of_four_in_an_easy_bin():
    clf = realistic_pool()
    alpha, beta = clf.prior
    assert 0.15 < alpha < 0.5 and 0.8 < beta < 2.5  # recovers roughly Beta(0.3, 1.5)
    new_hard, new_easy = 2000, 2001
    clf.observe(np.array([new_hard, new_easy]), np.array([4, 4]), np.array([0, 4]))
    hard_bin, easy_bin = clf.groups(np.array([new_hard, new_easy]))
    assert hard_bin <= 2, clf.estimates(np.array([new_hard]))
    assert easy_bin >= clf.num_bins - 2, clf.estimates(np.array([new_easy]))


def test_small_pool_fits_its_prior_once_half_of_it_is_seen():
    """A 20-prompt set (the DAPO fixture) never reaches the 30-prompt threshold: without the
    half-pool rule its hopeless prompts would sit in a middle bin for the whole run."""
    clf = DifficultyClassifier(20, k=8)
    assert clf.prior_min_prompts == 10
    clf.observe(np.arange(8), np.full(8, 4), np.zeros(8, int))  # 8 seen: still the flat prior
    clf.end_step()
    assert clf.prior == (0.5, 0.5) and clf.groups(np.array([0]))[0] >= 3
    clf.observe(np.arange(8, 12), np.full(4, 4), np.zeros(4, int))  # 12 seen: fitted, all failing
    clf.end_step()
    clf.observe(np.array([0]), np.array([4]), np.array([0]))
    assert clf.prior[0] < 0.1 and clf.groups(np.array([0, 9]))[1] == 0
    assert DifficultyClassifier(1000).prior_min_prompts == 30


def test_flat_prior_would_call_zero_of_four_easy():
    # The reason for the pool prior: under Beta(1, 1), 0 of 4 has pass@8 > 0.5.
    assert float(beta_pass_at_k(1.0, 1.0 + 4, 8)) > 0.5


def test_hysteresis_moves_up_and_down_only_past_the_margin():
    # k = 1 and window 1: the estimate is the posterior mean (c + ½)/(n + 1) of the last visit
    # (a one-prompt pool keeps the Jeffreys prior): 8/20 → 0.405, 11 → 0.548, 13 → 0.643, …
    clf = DifficultyClassifier(1, k=1, window=1, edges=(0.5,), hysteresis=0.1)
    one = np.array([0])

    def visit(correct, out_of=20):
        clf.observe(one, np.array([out_of]), np.array([correct]))
        return int(clf.groups(one)[0])

    assert visit(8) == 0   # 0.40, first observation: raw bin
    assert visit(11) == 0  # 0.55 crosses 0.5 but not 0.5 + δ
    assert visit(13) == 1  # 0.65 ≥ 0.6: moves up
    assert visit(9) == 1   # 0.45 is below 0.5 but above 0.5 − δ
    assert visit(7) == 0   # 0.35 ≤ 0.4: moves down


def test_multi_bin_jump_uses_the_edge_next_to_the_old_bin():
    clf = DifficultyClassifier(1, k=1, window=1, hysteresis=0.03)
    one = np.array([0])
    clf.observe(one, np.array([100]), np.array([25]))
    assert clf.groups(one)[0] == 2
    clf.observe(one, np.array([100]), np.array([55]))  # 0.55 ≥ 0.3 + δ: lands in the raw bin 5
    assert clf.groups(one)[0] == 5
    clf.observe(one, np.array([100]), np.array([15]))  # 0.15 ≤ 0.5 − δ: down to bin 1
    assert clf.groups(one)[0] == 1


@settings(deadline=None, max_examples=40)
@given(st.lists(st.integers(0, 20), min_size=1, max_size=40), st.floats(0.0, 0.2))
def test_group_stays_within_margin_of_estimate(corrects, delta):
    edges = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
    clf = DifficultyClassifier(1, k=1, window=1, edges=edges, hysteresis=delta)
    one = np.array([0])
    bounds = np.concatenate(([0.0], edges, [1.0]))
    previous = None
    for correct in corrects:
        clf.observe(one, np.array([20]), np.array([correct]))
        est, group = float(clf.estimates(one)[0]), int(clf.groups(one)[0])
        alpha, beta = clf.prior  # k = 1: the posterior mean of p, (α + c)/(α + β + n)
        assert est == pytest.approx((alpha + correct) / (alpha + beta + 20), abs=1e-12)
        raw = int(np.searchsorted(edges, est, side="right"))
        assert group in (raw, previous)  # either stays or lands in the raw bin
        assert bounds[group] - delta - 1e-12 <= est <= bounds[group + 1] + delta + 1e-12
        previous = group


def reference_estimate(visits, window, k, prior):
    kept = visits[-window:] if window else visits
    n = sum(v[0] for v in kept)
    c = sum(v[1] for v in kept)
    return float(beta_pass_at_k(prior[0] + c, prior[1] + n - c, k))


@st.composite
def visit_batches(draw):
    num_prompts = draw(st.integers(1, 12))
    batches = []
    for _ in range(draw(st.integers(1, 8))):
        size = draw(st.integers(0, 15))
        ids = draw(st.lists(st.integers(0, num_prompts - 1), min_size=size, max_size=size))
        n = draw(st.lists(st.integers(1, 6), min_size=size, max_size=size))
        c = [draw(st.integers(0, ni)) for ni in n]
        batches.append((ids, n, c))
    return num_prompts, batches


@settings(deadline=None, max_examples=40)
@given(visit_batches(), st.sampled_from([0, 1, 3]), st.sampled_from([1, 4, 8]))
def test_windowed_estimates_and_membership_match_a_reference(data, window, k):
    num_prompts, batches = data
    # A huge prior_min_prompts keeps the fixed fallback prior, so the reference is exact.
    clf = DifficultyClassifier(num_prompts, k=k, window=window, prior_min_prompts=10**6)
    history = {i: [] for i in range(num_prompts)}
    for ids, n, c in batches:
        clf.observe(np.array(ids, dtype=np.int64), np.array(n), np.array(c))
        for i, ni, ci in zip(ids, n, c):
            history[i].append((ni, ci))
    all_ids = np.arange(num_prompts)
    est, groups = clf.estimates(all_ids), clf.groups(all_ids)
    for i in range(num_prompts):
        if history[i]:
            assert est[i] == pytest.approx(reference_estimate(history[i], window, k, clf.prior), abs=1e-6)
        else:
            assert np.isnan(est[i]) and groups[i] == clf.unseen
    assert clf.group_counts().tolist() == np.bincount(groups, minlength=clf.num_groups).tolist()
    for g in range(clf.num_groups):
        assert sorted(clf.members(g).tolist()) == np.flatnonzero(groups == g).tolist()
    mean_est = clf.group_pass_at_k()
    for g in range(clf.num_bins):
        inside = groups == g
        if inside.any():
            assert mean_est[g] == pytest.approx(est[inside].mean(), abs=1e-6)
        else:
            assert np.isnan(mean_est[g])


def test_sample_stays_inside_the_group():
    clf = realistic_pool(num_prompts=500, visits=1)
    rng = np.random.default_rng(1)
    groups = clf.groups(np.arange(502))
    for g in range(clf.num_groups):
        size = clf.group_counts()[g]
        picked = clf.sample(g, 40, rng, replace=False)
        assert len(picked) == min(40, size) and len(set(picked.tolist())) == len(picked)
        assert (groups[picked] == g).all()
        with_repeats = clf.sample(g, 40, rng, replace=True)
        assert len(with_repeats) == (40 if size else 0) and (groups[with_repeats] == g).all()


def test_memory_per_prompt_is_small():
    clf = realistic_pool(num_prompts=20000, visits=1)
    assert clf.state_bytes_per_prompt() <= 200


def snapshot(clf):
    return {key: np.array(value, copy=True) for key, value in clf.state_dict().items() if key != "config"}


def same_state(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)


@pytest.mark.parametrize("ids, n, c, message", [
    ([0, 99], [4, 4], [1, 1], "prompt_ids must lie"),
    ([0, 1], [4, 0], [1, 0], "n must be >= 1"),
    ([0, 1], [4, 4], [1, 5], "0 <= c <= n"),
    ([0, 1], [4, 4], [1], "equal lengths"),
    ([0, 1], [4.0, np.nan], [1, 1], "NaN"),
    ([0, 1], [4, 300], [1, 1], "<= 255"),
    ([0.5, 1], [4, 4], [1, 1], "whole numbers"),
])
def test_bad_observation_raises_and_changes_nothing(ids, n, c, message):
    clf = realistic_pool(num_prompts=50, visits=1)
    before = snapshot(clf)
    with pytest.raises(ValueError, match=message):
        clf.observe(np.array(ids), np.array(n), np.array(c))
    assert same_state(before, snapshot(clf))


@pytest.mark.parametrize("kwargs, message", [
    ({"edges": (0.5, 0.3)}, "strictly increasing"),
    ({"edges": (0.0, 0.5)}, "inside \\(0, 1\\)"),
    ({"hysteresis": -0.1}, "hysteresis"),
    ({"window": -1}, "window"),
    ({"k": 0}, "k must be"),
])
def test_bad_configuration_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DifficultyClassifier(10, **kwargs)


@pytest.mark.parametrize("window", [0, 50])
def test_state_round_trip_through_json_gives_identical_decisions(window):
    rng = np.random.default_rng(3)
    rates = rng.beta(0.5, 1.0, 300)
    make = lambda: DifficultyClassifier(300, window=window, prior_min_prompts=20)  # noqa: E731
    original = make()
    for _ in range(3):
        ids = rng.integers(0, 300, 64)
        original.observe(ids, np.full(64, 4), rng.binomial(4, rates[ids]))
        original.end_step()
    restored = make()
    restored.load_state_dict(json.loads(json.dumps(to_jsonable(original.state_dict()))))
    for _ in range(3):
        ids = rng.integers(0, 300, 64)
        n = rng.integers(2, 9, 64)
        c = rng.binomial(n, rates[ids])
        for clf in (original, restored):
            clf.observe(ids, n, c)
            clf.end_step()
        assert np.array_equal(original.groups(np.arange(300)), restored.groups(np.arange(300)))
        for g in range(original.num_groups):
            assert np.array_equal(original.sample(g, 10, np.random.default_rng(g), False),
                                  restored.sample(g, 10, np.random.default_rng(g), False))
    assert same_state(snapshot(original), snapshot(restored))


def test_state_from_another_configuration_is_refused():
    with pytest.raises(ValueError, match="saved with"):
        DifficultyClassifier(10, window=5).load_state_dict(DifficultyClassifier(10).state_dict())


def test_inconsistent_membership_state_is_refused_and_nothing_changes():
    clf = realistic_pool(num_prompts=40, visits=1)
    state = clf.state_dict()
    state["members"] = state["members"][::-1].copy()  # same ids, wrong groups
    target = DifficultyClassifier(42)
    before = snapshot(target)
    with pytest.raises(ValueError, match="inconsistent"):
        target.load_state_dict(state)
    assert same_state(before, snapshot(target))


# ---------------------------------------------------------------- the estimate's three properties
# The posterior mean of pass@k is used for every N: monotone in every observation,
# continuous across N = k, shrunk toward the pool prior at small N and consistent at large N.

priors = st.tuples(st.floats(0.1, 20.0), st.floats(0.1, 20.0))


@settings(deadline=None, max_examples=200)
@given(priors, st.integers(0, 60), st.data(), st.sampled_from([1, 2, 4, 8, 16]))
def test_one_more_failure_never_raises_and_one_more_success_never_lowers(prior, n, data, k):
    c = data.draw(st.integers(0, n))
    clf = DifficultyClassifier(3, k=k, window=0, prior_min_prompts=10**6)
    clf._prior = prior  # the property must hold for any prior the fit can produce
    base, fail, win = np.array([0]), np.array([1]), np.array([2])
    if n:
        clf.observe(np.array([0, 1, 2]), np.full(3, n), np.full(3, c))
    clf.observe(np.array([1, 2]), np.array([1, 1]), np.array([0, 1]))  # one failure, one success
    before = float(beta_pass_at_k(prior[0], prior[1], k)) if n == 0 else float(clf.estimates(base)[0])
    assert float(clf.estimates(fail)[0]) <= before + 1e-12
    assert float(clf.estimates(win)[0]) >= before - 1e-12


@settings(deadline=None, max_examples=200)
@given(priors, st.integers(1, 40), st.sampled_from([2, 4, 8, 16]), st.data())
def test_estimate_is_continuous_in_n_including_across_n_equals_k(prior, n, k, data):
    """One rollout moves the estimate by at most k/(α+β+N+1): every factor of the product
    Π(β'+i)/(α'+β'+i) moves by at most 1/(α'+β'+1). The old switch to the unbiased estimator at
    N = k broke this (1 of 4 → 0.744, then 1 of 8 → 1.000)."""
    c = data.draw(st.integers(0, n - 1))
    a, b = prior
    for dn, dc in ((1, 0), (1, 1)):  # one more failure / success
        now = float(beta_pass_at_k(a + c, b + n - c, k))
        nxt = float(beta_pass_at_k(a + c + dc, b + n + dn - c - dc, k))
        assert abs(nxt - now) <= k / (a + b + n + 1) + 1e-12


def test_issue_example_more_failures_never_look_easier():
    clf = realistic_pool()  # fitted pool prior
    one = np.array([2000])
    clf.observe(one, np.array([4]), np.array([1]))
    after_one_visit = float(clf.estimates(one)[0])
    clf.observe(one, np.array([4]), np.array([0]))  # 1 of 8 now: harder, not easier
    assert float(clf.estimates(one)[0]) < after_one_visit < 1.0


@settings(deadline=None, max_examples=100)
@given(priors, st.floats(0.02, 0.98), st.sampled_from([1, 4, 8]))
def test_estimate_converges_to_the_unbiased_estimator(prior, rate, k):
    a, b = prior
    for n in (40, 400, 4000):
        c = int(round(rate * n))
        gap = abs(float(beta_pass_at_k(a + c, b + n - c, k)) - pass_at_k(n, c, k))
        assert gap <= k * (a + b + 1) / n  # the prior's pull is O(k(α+β)/N)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shrinkage_beats_the_raw_estimate_at_small_n(seed):
    """At 8 pooled rollouts the pool-prior posterior mean is closer to the true pass@8 than the
    unbiased estimator (which at N = k is 0 or 1): shrinkage toward the fitted prior pays."""
    rng = np.random.default_rng(seed)
    rates = rng.beta(0.3, 1.5, 3000)
    clf = DifficultyClassifier(3000, k=8)
    n_total = np.zeros(3000, int)
    c_total = np.zeros(3000, int)
    for _ in range(2):
        c = rng.binomial(4, rates)
        clf.observe(np.arange(3000), np.full(3000, 4), c)
        clf.end_step()
        n_total += 4
        c_total += c
    clf.observe(np.arange(3000), np.zeros(3000, int) + 1, np.zeros(3000, int))  # refresh after refit
    n_total += 1
    truth = 1 - (1 - rates) ** 8
    est = clf.estimates(np.arange(3000))
    raw = np.array([pass_at_k(n, c, 8) for n, c in zip(n_total, c_total)])
    assert np.mean((est - truth) ** 2) < np.mean((raw - truth) ** 2)


@pytest.mark.parametrize("visits, min_bins", [(2, 4), (3, 6)])
def test_a_pool_seen_a_few_times_spreads_over_the_bins(visits, min_bins):
    """5,000 prompts, 4 rollouts per visit. The old switch to the unbiased estimator at N ≥ k put
    every prompt in bin 0 or the top bin after two visits. Now the bins stay spread: N = 8
    pooled rollouts allow only 9 distinct estimates (C = 0..8), so 4 occupied bins after two
    visits (C = 0, 1, 2, ≥ 3 on this pool) and more after three; the two end bins hold a minority."""
    clf = realistic_pool(num_prompts=5000, visits=visits)
    counts = clf.group_counts()[: clf.num_bins]
    assert (counts > 0).sum() >= min_bins, counts
    ends = counts[0] + counts[-1]
    assert ends / counts.sum() < 0.4, counts


@settings(deadline=None, max_examples=200)
@given(priors, st.integers(4, 64), st.data())
def test_hard_but_solvable_prompts_keep_a_positive_passk_variance(prior, n, data):
    """Rollout-GDRO's `passk_variance` proxy is π(1−π) of this estimate. Under the old N ≥ k switch
    about 30% of prompts with some but at most 25% correct got π = 1, so a proxy of exactly 0."""
    c = data.draw(st.integers(1, max(1, n // 4)))
    pi = float(beta_pass_at_k(prior[0] + c, prior[1] + n - c, 8))
    assert 0.0 < pi < 1.0 and pi * (1.0 - pi) > 0.0
