"""Learning progress: measurements only between visits at different steps, the per-step ratio
estimator per group, its EMA, and the state round trip."""
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gdro_ray.algorithms import to_jsonable
from gdro_ray.algorithms.progress import ProgressTracker


def test_first_visit_and_same_step_repeat_measure_nothing():
    t = ProgressTracker(5, 3)
    delta, gap = t.observe(0, [0, 1], [0, 1], [4, 4], [1, 2])
    assert np.isnan(delta).all() and gap.tolist() == [0, 0]
    delta, gap = t.observe(3, [0, 0], [0, 0], [4, 4], [3, 4])  # a prompt twice in one step
    assert delta[0] == pytest.approx(0.5) and gap[0] == 3 and np.isnan(delta[1]) and gap[1] == 0
    assert t.group_progress()[0] == pytest.approx(0.5 / 3)
    assert np.isnan(t.group_progress()[1:]).all()  # group 1 had no second visit yet


def test_group_value_is_sum_of_changes_over_sum_of_steps_then_an_ema():
    t = ProgressTracker(4, 2, beta=0.5)
    t.observe(0, [0, 1, 2], [0, 0, 1], [10, 10, 10], [0, 5, 5])
    t.observe(2, [0], [0], [10], [4])  # +0.4 over 2 steps
    t.observe(6, [1], [0], [10], [3])  # −0.2 over 6 steps
    # step 2: 0.4/2 = 0.2 (first value); step 6: −0.2/6; EMA: 0.5·0.2 + 0.5·(−1/30)
    assert t.group_progress()[0] == pytest.approx(0.5 * 0.2 + 0.5 * (-0.2 / 6))
    t2 = ProgressTracker(4, 2)
    t2.observe(0, [0, 1], [0, 0], [10, 10], [0, 5])
    t2.observe(5, [0, 1], [0, 0], [10, 10], [6, 5])  # +0.6 over 5 and 0 over 5: (0.6 + 0)/(5 + 5)
    assert t2.group_progress()[0] == pytest.approx(0.06)


@settings(deadline=None, max_examples=50)
@given(st.integers(1, 40), st.integers(1, 8), st.integers(0, 10**6))
def test_no_learning_means_no_progress_on_average(prompts, visits, seed):
    """Equal rates at every visit: every measurement is exactly 0, whatever the gaps."""
    rng = np.random.default_rng(seed)
    t = ProgressTracker(prompts, 3)
    rate = rng.integers(0, 9, prompts)
    step = 0
    for _ in range(visits):
        step += int(rng.integers(1, 4))
        ids = rng.permutation(prompts)[: max(1, prompts // 2)]
        delta, _ = t.observe(step, ids, rng.integers(0, 3, ids.size), np.full(ids.size, 8), rate[ids])
        assert np.all((delta == 0) | np.isnan(delta))
    assert np.all((t.group_progress() == 0) | np.isnan(t.group_progress()))


def test_state_round_trip_through_json_and_bad_state():
    t = ProgressTracker(6, 3)
    t.observe(0, [0, 1, 2], [0, 1, 2], [4, 4, 4], [0, 1, 2])
    t.observe(2, [0, 1], [0, 1], [4, 4], [2, 1])
    twin = ProgressTracker(6, 3)
    twin.load_state_dict(json.loads(json.dumps(to_jsonable(t.state_dict()))))
    a = t.observe(5, [0, 2, 3], [1, 2, 0], [8, 8, 8], [8, 0, 4])
    b = twin.observe(5, [0, 2, 3], [1, 2, 0], [8, 8, 8], [8, 0, 4])
    assert np.array_equal(a[0], b[0], equal_nan=True) and np.array_equal(a[1], b[1])
    assert np.array_equal(t.group_progress(), twin.group_progress(), equal_nan=True)
    with pytest.raises(ValueError, match="saved with"):
        ProgressTracker(7, 3).load_state_dict(t.state_dict())
    with pytest.raises(ValueError, match="0 <= c <= n"):
        t.observe(6, [0], [0], [4], [5])


@settings(deadline=None, max_examples=60)
@given(st.lists(st.lists(st.tuples(st.integers(0, 7), st.integers(0, 2), st.integers(1, 8)), min_size=1, max_size=12),
                min_size=1, max_size=6), st.integers(0, 10**6))
def test_matches_a_visit_by_visit_reference(steps, seed):
    """Vectorised per step, but the same as taking the visits one by one in order."""
    rng = np.random.default_rng(seed)
    t = ProgressTracker(8, 3, beta=0.3)
    last_rate, last_step, ema = {}, {}, {}
    step = 0
    for visits in steps:
        step += int(rng.integers(0, 3))  # 0: two calls at the same step
        ids, groups, n = (np.array(x) for x in zip(*visits))
        c = rng.binomial(n, 0.5)
        delta, gap = t.observe(step, ids, groups, n, c)
        sums = {}
        for j, (i, g) in enumerate(zip(ids.tolist(), groups.tolist())):
            r = c[j] / n[j]
            if i in last_rate and step > last_step[i]:
                assert delta[j] == pytest.approx(r - last_rate[i], abs=1e-6) and gap[j] == step - last_step[i]
                d, s = sums.get(g, (0.0, 0))
                sums[g] = (d + r - last_rate[i], s + step - last_step[i])
            else:
                assert np.isnan(delta[j]) and gap[j] == 0
            last_rate[i], last_step[i] = r, step
        for g, (d, s) in sums.items():
            ema[g] = d / s if g not in ema else 0.7 * ema[g] + 0.3 * d / s
        want = np.array([ema.get(g, np.nan) for g in range(3)])
        assert np.allclose(t.group_progress(), want, equal_nan=True, atol=1e-6)
