"""Equal-count bins: quantile edges, the classifier's equal_count mode, its refresh and its state."""
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gdro_ray.algorithms import DifficultyClassifier, to_jsonable
from gdro_ray.algorithms.binning import assign_bins, quantile_edges


@settings(deadline=None, max_examples=150)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=300), st.integers(1, 20))
def test_edges_are_monotone_and_bins_partition_the_values(values, num_bins):
    edges = quantile_edges(values, num_bins)
    assert edges.shape == (num_bins - 1,) and np.all(np.diff(edges) >= 0)
    bins = assign_bins(values, edges)
    assert bins.min() >= 0 and bins.max() < num_bins
    order = np.argsort(values, kind="stable")
    assert np.all(np.diff(bins[order]) >= 0)  # intervals: a larger value never sits in a lower bin
    v = np.asarray(values)
    for x in np.unique(v):  # tied values share a bin
        assert np.unique(bins[v == x]).size == 1


@settings(deadline=None, max_examples=150)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=300, unique=True), st.integers(1, 20))
def test_distinct_values_fill_bins_within_one_of_each_other(values, num_bins):
    counts = np.bincount(assign_bins(values, quantile_edges(values, num_bins)), minlength=num_bins)
    assert counts.sum() == len(values) and counts.max() - counts.min() <= 1


def pool(binning="equal_count", num_prompts=400, refresh_every=3, seed=0, steps=6, window=50):
    rng = np.random.default_rng(seed)
    rates = rng.beta(0.6, 1.2, num_prompts)
    clf = DifficultyClassifier(num_prompts, binning=binning, refresh_every=refresh_every, window=window)
    for _ in range(steps):
        ids = rng.choice(num_prompts, 64, replace=False)
        n = rng.integers(2, 13, 64)
        clf.observe(ids, n, rng.binomial(n, rates[ids]))
        clf.end_step()
    return clf, rng, rates


@settings(deadline=None, max_examples=20)
@given(st.integers(0, 1000), st.integers(1, 6), st.integers(1, 8))
def test_refresh_regroups_every_seen_prompt_by_its_success_rate(seed, refresh_every, steps):
    clf, _, _ = pool(seed=seed, refresh_every=refresh_every, steps=steps)
    sizes = clf.group_counts()
    assert sizes.sum() == clf.num_prompts  # a partition of the pool
    seen = np.flatnonzero(clf.groups(np.arange(clf.num_prompts)) != clf.unseen)
    assert sizes[clf.unseen] == clf.num_prompts - seen.size
    if steps % refresh_every == 0 or steps == 1:  # just refreshed: every seen prompt in its quantile bin
        rates = clf.success_rates(seen)
        assert np.array_equal(clf.groups(seen), assign_bins(rates, clf.live_edges()))
        assert np.array_equal(clf.live_edges(), quantile_edges(rates, clf.num_bins))
    # the bookkeeping behind bin_pass_at_k follows the regrouping
    est, groups = clf.estimates(seen), clf.groups(seen)
    for g in range(clf.num_bins):
        if (groups == g).any():
            assert clf.group_pass_at_k()[g] == pytest.approx(est[groups == g].mean())


def test_equal_count_spreads_a_pool_that_equal_width_piles_into_one_bin():
    """A pool whose prompts mostly succeed now and then sits in the top pass@8 bin(s)."""
    wide, _, _ = pool("equal_width", steps=8)
    count, _, _ = pool("equal_count", steps=8, refresh_every=1)
    seen_w = wide.group_counts()[: wide.num_bins]
    seen_c = count.group_counts()[: count.num_bins]
    assert seen_w.max() / seen_w.sum() > 0.3
    assert seen_c.max() / seen_c.sum() < 0.2


def test_success_rates_are_the_posterior_mean_and_the_prior_mean_when_unseen():
    clf, _, _ = pool()
    a, b = clf.prior
    ids = np.arange(clf.num_prompts)
    n = clf.state_dict()["pooled_n"].astype(float)
    c = clf.state_dict()["pooled_c"].astype(float)
    assert np.allclose(clf.success_rates(ids), (a + c) / (a + b + n))
    unseen = ids[n == 0]
    assert np.allclose(clf.success_rates(unseen), a / (a + b))
    g = clf.group_success_rates()
    assert g[clf.unseen] == pytest.approx(a / (a + b))


@pytest.mark.parametrize("window", [0, 50])
def test_state_round_trip_keeps_the_live_edges_and_the_next_decisions(window):
    clf, rng, rates = pool(window=window, steps=4, refresh_every=3)
    twin = DifficultyClassifier(clf.num_prompts, binning="equal_count", refresh_every=3, window=window)
    twin.load_state_dict(json.loads(json.dumps(to_jsonable(clf.state_dict()))))
    assert np.array_equal(twin.live_edges(), clf.live_edges())
    for _ in range(4):
        ids = rng.choice(clf.num_prompts, 64, replace=False)
        n = rng.integers(2, 13, 64)
        c = rng.binomial(n, rates[ids])
        for x in (clf, twin):
            x.observe(ids, n, c)
            x.end_step()
        assert np.array_equal(clf.groups(np.arange(clf.num_prompts)), twin.groups(np.arange(twin.num_prompts)))


def test_old_states_load_into_equal_width_and_are_refused_by_equal_count():
    old = DifficultyClassifier(50)
    old.observe(np.arange(10), np.full(10, 4), np.arange(10) % 5)
    state = old.state_dict()
    state["config"] = {k: v for k, v in state["config"].items() if k != "binning"}  # saved before the key
    del state["count_edges"], state["refreshed"]
    same = DifficultyClassifier(50)
    same.load_state_dict(state)
    assert np.array_equal(same.groups(np.arange(50)), old.groups(np.arange(50)))
    with pytest.raises(ValueError, match="saved with"):
        DifficultyClassifier(50, binning="equal_count").load_state_dict(state)


def test_bad_binning_settings_are_refused():
    with pytest.raises(ValueError, match="binning"):
        DifficultyClassifier(10, binning="quantile")
    with pytest.raises(ValueError, match="refresh_every"):
        DifficultyClassifier(10, binning="equal_count", refresh_every=0)
