"""pass@k estimators against brute force and closed forms; the package imports neither ray nor torch."""
import itertools
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gdro_ray.algorithms import beta_pass_at_k, mean_at_k, pass_at_k, pass_at_k_array


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """Fraction of k-subsets of n rollouts (the first c correct) that contain a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in subset) for subset in subsets) / len(subsets)


@st.composite
def counts(draw, max_n=10):
    n = draw(st.integers(1, max_n))
    return n, draw(st.integers(0, n)), draw(st.integers(1, n))


@settings(deadline=None, max_examples=60)
@given(counts())
def test_pass_at_k_equals_subset_enumeration(nck):
    n, c, k = nck
    assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12)


@settings(deadline=None, max_examples=40)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), min_size=1, max_size=30), st.integers(1, 12))
def test_array_version_matches_scalar_and_marks_too_few(pairs, k):
    n = np.array([max(a, b) for a, b in pairs])
    c = np.array([min(a, b) for a, b in pairs])
    out = pass_at_k_array(n, c, k)
    for ni, ci, oi in zip(n, c, out):
        if ni < k:
            assert math.isnan(oi)
        else:
            assert oi == pytest.approx(pass_at_k(int(ni), int(ci), k), abs=1e-12)


def test_large_n_is_stable_and_exact():
    # C(n−1, k)/C(n, k) = (n−k)/n, so one correct rollout out of n gives pass@k = k/n.
    n = np.array([10**6, 10**7])
    assert np.allclose(pass_at_k_array(n, np.ones(2), 8), 8 / n, rtol=1e-9)
    assert pass_at_k(10**6, 0, 8) == 0.0
    assert pass_at_k(10**6, 10**6 - 7, 8) == 1.0


def test_invalid_counts_raise():
    with pytest.raises(ValueError, match="n >= k"):
        pass_at_k(4, 1, 8)
    with pytest.raises(ValueError, match="0 <= c <= n"):
        pass_at_k(4, 5, 2)
    with pytest.raises(ValueError, match="k must be"):
        pass_at_k_array(np.array([4]), np.array([1]), 0)


@settings(deadline=None, max_examples=40)
@given(st.floats(0.05, 30), st.floats(0.05, 30), st.integers(1, 16))
def test_beta_posterior_mean_matches_lgamma_closed_form(alpha, beta, k):
    # 1 − B(α, β+k)/B(α, β), written with log-gamma independently of the product form.
    expected = 1 - math.exp(math.lgamma(alpha + beta) + math.lgamma(beta + k)
                            - math.lgamma(beta) - math.lgamma(alpha + beta + k))
    assert float(beta_pass_at_k(alpha, beta, k)) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_beta_uniform_prior_gives_k_over_k_plus_one():
    assert float(beta_pass_at_k(1.0, 1.0, 8)) == pytest.approx(8 / 9)


def test_mean_at_k():
    assert np.allclose(mean_at_k(np.array([4, 8]), np.array([1, 8])), [0.25, 1.0])
    assert math.isnan(mean_at_k(np.array([0]), np.array([0]))[0])


def test_importing_algorithms_does_not_import_ray_or_torch():
    code = ("import sys, gdro_ray.algorithms; "
            "bad = [m for m in ('ray', 'torch') if m in sys.modules]; "
            "assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
