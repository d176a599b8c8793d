"""Prompt-GDRO: the distribution, the EMA score, no frequency bias, no-regret of the exponential
weights (Hedge and EXP3 configurations), reweighting, state; and the difficulty signals."""
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gdro_ray.algorithms import PromptGDRO, difficulty_signal, group_advantages, to_jsonable


@settings(deadline=None, max_examples=50)
@given(st.lists(st.floats(-10, 10), min_size=1, max_size=12), st.floats(0.05, 3), st.floats(0, 0.5),
       st.data())
def test_distribution_matches_formula_and_respects_in_play(scores, eta, gamma, data):
    B = len(scores)
    ctl = PromptGDRO(B, eta=eta, gamma=gamma, score_clip=3.0)
    ctl.scores = np.array(scores)
    mask = np.array(data.draw(st.lists(st.booleans(), min_size=B, max_size=B)))
    if not mask.any():
        mask[0] = True
    q = ctl.distribution(mask)
    w = np.exp(eta * np.clip(scores, -3, 3)) * mask
    expected = (1 - gamma) * w / w.sum() + gamma * mask / mask.sum()
    assert np.allclose(q, expected, rtol=1e-9, atol=1e-12)
    assert q.sum() == pytest.approx(1.0) and (q[~mask] == 0).all()
    assert (q[mask] >= gamma / mask.sum() - 1e-12).all()


def test_ema_score_initialises_then_smooths_and_absent_groups_keep_theirs():
    ctl = PromptGDRO(3, beta=0.25, normalize_by_share=False)
    ctl.observe(np.array([0, 0, 1]), np.array([1.0, 0.0, 0.8]))
    assert ctl.scores.tolist() == pytest.approx([0.5, 0.8, 0.0])
    ctl.observe(np.array([0]), np.array([1.0]))
    assert ctl.scores.tolist() == pytest.approx([0.75 * 0.5 + 0.25 * 1.0, 0.8, 0.0])


def test_share_normalisation_is_relative_to_uniform_and_uses_the_floor():
    ctl = PromptGDRO(2, share_floor=0.1, score_clip=math.inf)
    ids = np.array([0] * 99 + [1])
    ctl.observe(ids, np.full(100, 0.5))  # relative shares 2·0.99 and 2·0.01 → floor 0.1
    assert ctl.scores.tolist() == pytest.approx([0.5 / 1.98, 0.5 / 0.1])
    pool = PromptGDRO(3, share_floor=0.1, score_clip=math.inf)
    pool.observe(np.array([0, 1]), np.array([0.5, 0.5]), shares=np.array([1.0, 3.0, 0.0]))
    # reference = the given shares over the 2 groups that have one: relative 0.5 and 1.5
    assert pool.scores.tolist() == pytest.approx([0.5 / 0.5, 0.5 / 1.5, 0.0])
    with pytest.raises(ValueError, match="shares"):
        pool.observe(np.array([0]), np.array([0.5]), shares=np.array([1.0, -1.0, 0.0]))


@pytest.mark.parametrize("normalize", [True, False])
def test_rare_hard_group_outweighs_common_easier_group(normalize):
    # 2 % of the batch with mean loss 0.8 against 60 % with mean loss 0.5: the common group's
    # summed loss (30) dwarfs the rare one's (1.6), yet the rare group must get more weight.
    rng = np.random.default_rng(0)
    ctl = PromptGDRO(3, normalize_by_share=normalize)
    for _ in range(30):
        ids = np.array([0] * 2 + [1] * 60 + [2] * 38)
        loss = np.concatenate([rng.uniform(0.6, 1.0, 2), rng.uniform(0.3, 0.7, 60), rng.uniform(0.0, 0.4, 38)])
        ctl.observe(ids, loss)
    q = ctl.distribution()
    assert q[0] > q[1] > q[2]


def test_clip_fraction_reports_thin_groups_at_the_clip():
    ctl = PromptGDRO(2, share_floor=0.02)  # the paper's floor: a thin group is boosted 50×
    for _ in range(10):
        ctl.observe(np.array([0] * 99 + [1]), np.full(100, 0.5))  # thin group: 0.5 / 0.02 = 25
    assert ctl.clip_fraction().tolist() == [0.0, 1.0]
    assert ctl.metrics()["steps"] == 10


def regret_of(ctl, losses, rng=None):
    """Run the adversary on a T×B loss matrix (or an adaptive rule); regret to the best fixed group."""
    T, B = losses.shape if not callable(losses) else (losses.T, losses.B)
    earned, totals = 0.0, np.zeros(B)
    for t in range(T):
        q = ctl.distribution()
        row = losses(t, q) if callable(losses) else losses[t]
        earned += float(q @ row)
        totals += row
        if rng is None:  # full information: every group's loss is seen
            ctl.observe(np.arange(B), row)
        else:  # bandit: one group is drawn from q and only its loss is seen (EXP3 loss form)
            b = min(int(np.searchsorted(np.cumsum(q), rng.random(), side="right")), B - 1)
            ctl.observe(np.array([b]), np.array([-(1.0 - row[b]) / q[b]]))
    return totals.max() - earned


class AdaptiveAdversary:
    """Hands loss 1 to the group the player currently weights least: hard for a maximiser."""

    def __init__(self, T, B):
        self.T, self.B = T, B

    def __call__(self, t, q):
        row = np.zeros(self.B)
        row[int(np.argmin(q))] = 1.0
        return row


def hedge(B, T):
    return PromptGDRO(B, eta=math.sqrt(8 * math.log(B) / T), gamma=0.0, score_clip=math.inf,
                      normalize_by_share=False, score_mode="cumulative")


@pytest.mark.parametrize("kind", ["stochastic", "switching", "adaptive"])
def test_hedge_configuration_has_vanishing_regret(kind):
    B, per_step = 6, []
    for T in (100, 1000, 5000):
        rng = np.random.default_rng(T)
        if kind == "stochastic":
            losses = rng.binomial(1, np.linspace(0.2, 0.7, B), size=(T, B)).astype(float)
        elif kind == "switching":  # the best group changes in blocks of growing length
            losses = np.zeros((T, B))
            edges = np.unique(np.geomspace(1, T, 12).astype(int))
            for i, (a, b) in enumerate(zip(np.r_[0, edges[:-1]], edges)):
                losses[a:b, i % B] = 1.0
        else:
            losses = AdaptiveAdversary(T, B)
        regret = regret_of(hedge(B, T), losses)
        assert regret <= math.sqrt(T * math.log(B) / 2) + 1e-9  # Hedge's bound
        per_step.append(regret / T)
    assert per_step[0] > per_step[1] > per_step[2]


def test_exp3_configuration_has_vanishing_regret_on_average():
    B, per_step = 4, []
    for T in (100, 1000, 5000):
        runs = []
        for seed in range(3):
            rng = np.random.default_rng(seed)
            losses = rng.binomial(1, np.linspace(0.2, 0.8, B), size=(T, B)).astype(float)
            ctl = PromptGDRO(B, eta=math.sqrt(2 * math.log(B) / (T * B)), gamma=0.0, score_clip=math.inf,
                             normalize_by_share=False, score_mode="cumulative")
            runs.append(regret_of(ctl, losses, rng=rng))
        regret = float(np.mean(runs))
        assert regret <= 2 * math.sqrt(2 * T * B * math.log(B))  # EXP3's expected-regret bound, with slack
        per_step.append(regret / T)
    assert per_step[0] > per_step[2] and per_step[1] > per_step[2]


def test_default_ema_tracks_a_change_faster_than_hedge():
    # The documented trade-off: the EMA score forgets, so it follows a switch of the hardest group.
    ema, cumulative = PromptGDRO(2, normalize_by_share=False), hedge(2, 400)
    before, after = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    for t in range(300):
        for ctl in (ema, cumulative):
            ctl.observe(np.arange(2), before if t < 200 else after)
    assert ema.distribution()[1] > 0.6 and cumulative.distribution()[1] < 0.5


def test_advantage_weights_follow_q_with_mean_one_and_cap():
    ctl = PromptGDRO(3, normalize_by_share=False)
    ctl.scores = np.array([1.0, 0.0, -1.0])
    ids = np.array([0, 1, 1, 2, 2, 2])
    w = ctl.advantage_weights(ids)
    q = ctl.distribution()
    assert w.mean() == pytest.approx(1.0) and w[0] / w[1] == pytest.approx(q[0] / q[1])
    capped = PromptGDRO(2, eta=3.0, omega_max=1.5, normalize_by_share=False)
    capped.scores = np.array([3.0, -3.0])
    assert capped.advantage_weights(np.array([0] + [1] * 9)).max() == 1.5
    only_zero = np.array([True, False, False])
    assert ctl.advantage_weights(np.array([0, 1]), in_play=only_zero).tolist() == [2.0, 0.0]


def snapshot(ctl):
    return {k: np.array(v, copy=True) for k, v in ctl.state_dict().items() if k != "config"}


@pytest.mark.parametrize("ids, signals, message", [
    ([0, 1], [0.1, np.nan], "NaN"),
    ([0, 5], [0.1, 0.2], "group_ids must lie"),
    ([0, 1], [0.1], "equal lengths"),
])
def test_bad_observation_raises_and_changes_nothing(ids, signals, message):
    ctl = PromptGDRO(3)
    ctl.observe(np.array([0, 1, 2]), np.array([0.3, 0.5, 0.7]))
    before = snapshot(ctl)
    with pytest.raises(ValueError, match=message):
        ctl.observe(np.array(ids), np.array(signals))
    after = snapshot(ctl)
    assert all(np.array_equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("kwargs, message", [
    ({"eta": 0.0}, "eta must be > 0"), ({"gamma": 1.0}, "gamma must be in \\[0, 1\\)"),
    ({"beta": 0.0}, "beta must be in \\(0, 1\\]"), ({"share_floor": 0.0}, "share_floor"),
    ({"score_mode": "sum"}, "score_mode"),
])
def test_bad_configuration_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PromptGDRO(4, **kwargs)
    with pytest.raises(ValueError, match="in_play"):
        PromptGDRO(2).distribution(np.array([False, False]))


def test_state_round_trip_through_json_gives_identical_decisions():
    rng = np.random.default_rng(5)
    original = PromptGDRO(5)
    for _ in range(20):
        original.observe(rng.integers(0, 5, 32), rng.uniform(0, 1, 32))
    restored = PromptGDRO(5)
    restored.load_state_dict(json.loads(json.dumps(to_jsonable(original.state_dict()))))
    for _ in range(20):
        ids, sig = rng.integers(0, 5, 32), rng.uniform(0, 1, 32)
        for ctl in (original, restored):
            ctl.observe(ids, sig)
        assert np.array_equal(original.distribution(), restored.distribution())
    assert original.metrics() == restored.metrics()


# ------------------------------------------------------------------ difficulty signals
@settings(deadline=None, max_examples=40)
@given(st.lists(st.lists(st.sampled_from([0.0, 1.0, 0.5]), min_size=1, max_size=12), min_size=1, max_size=10))
def test_signals_match_a_per_prompt_reference(groups):
    rewards = [np.array(g) for g in groups]
    failure = difficulty_signal("failure", rewards)
    learn = difficulty_signal("learnability", rewards)
    for r, f, lrn, a in zip(rewards, failure, learn, group_advantages(rewards)):
        assert f == pytest.approx(1 - r.mean())
        expected = (r - r.mean()) / (r.std() + 1e-6)
        assert np.allclose(a, expected) and lrn == pytest.approx(np.abs(expected).mean())


def test_learnability_of_binary_rewards_is_two_sqrt_p_one_minus_p():
    rewards = [np.array([1.0, 0, 0, 0]), np.array([1.0, 1, 0, 0]), np.zeros(4), np.ones(4)]
    assert difficulty_signal("learnability", rewards) == pytest.approx(
        [2 * math.sqrt(0.25 * 0.75), 1.0, 0.0, 0.0], abs=1e-5)


def test_signal_errors():
    with pytest.raises(ValueError, match="needs the per-prompt surrogate"):
        difficulty_signal("surrogate", [np.ones(2)])
    with pytest.raises(ValueError, match="2 values for 1 prompts"):
        difficulty_signal("surrogate", [np.ones(2)], surrogate=np.ones(2))
    with pytest.raises(ValueError, match="signal kind"):
        difficulty_signal("loss", [np.ones(2)])
    with pytest.raises(ValueError, match="rewards in \\[0, 1\\]"):
        difficulty_signal("failure", [np.array([-1.0, 1.0])])
    assert difficulty_signal("surrogate", [np.ones(2)], surrogate=np.array([0.3])).tolist() == [0.3]


# ------------------------------------------------- no feedback of q's own choice

@settings(deadline=None, max_examples=60)
@given(st.integers(2, 10), st.integers(0, 10**6), st.sampled_from(["batch", "pool"]))
def test_scores_stay_inside_the_clip_for_signals_in_unit_range(groups, seed, reference):
    """Default floor ½ and clip 3: a [0, 1] signal scores at most 2, whatever the shares."""
    rng = np.random.default_rng(seed)
    ctl = PromptGDRO(groups)
    for _ in range(20):
        ids = rng.choice(groups, size=int(rng.integers(1, 200)), p=rng.dirichlet(np.full(groups, 0.3)))
        shares = rng.dirichlet(np.full(groups, 0.3)) if reference == "pool" else None
        ctl.observe(ids, rng.uniform(0, 1, ids.size), shares)
    assert np.abs(ctl.scores).max() <= 2.0 + 1e-12
    assert ctl.clip_fraction().max() == 0.0


def _run_resample_loop(ctl, losses, reference, steps=150, batch=256, seed=0):
    """The resample loop: each step the batch's groups are drawn from q, each prompt's signal is
    its group's fixed loss, and the adversary observes with the chosen reference share."""
    rng = np.random.default_rng(seed)
    B = len(losses)
    pool = rng.dirichlet(np.full(B, 2.0))  # the groups' shares of the pool (not chosen by q)
    for _ in range(steps):
        q = ctl.distribution()
        ids = rng.choice(B, size=batch, p=q)
        shares = pool if reference == "pool" else None
        ctl.observe(ids, np.asarray(losses)[ids], shares)
    return ctl.distribution()


@settings(deadline=None, max_examples=25)
@given(st.lists(st.integers(0, 100), min_size=2, max_size=10, unique=True), st.integers(0, 1000))
def test_resample_mode_q_is_ordered_by_static_loss(percent, seed):
    """In resample mode (reference: none) q follows the losses: the worst group gets the most
    mass, strictly wherever the losses differ."""
    losses = [p / 100 for p in percent]
    q = _run_resample_loop(PromptGDRO(len(losses), normalize_by_share=False), losses, "none", seed=seed)
    order = np.argsort(losses)
    assert np.all(np.diff(q[order]) > 0), (losses, q)


@settings(deadline=None, max_examples=25)
@given(st.lists(st.integers(0, 100), min_size=2, max_size=10, unique=True))
def test_reweight_mode_q_is_ordered_by_static_loss_at_equal_shares(percent):
    """Under the data cursor the batch share is the natural frequency; with equal shares q is
    ordered by loss (with unequal shares, by loss over relative share: the paper's intent)."""
    losses = [p / 100 for p in percent]
    B = len(losses)
    ctl = PromptGDRO(B)
    ids = np.repeat(np.arange(B), 20)
    for _ in range(60):
        ctl.observe(ids, np.asarray(losses)[ids])
    q = ctl.distribution()
    order = np.argsort(losses)
    assert np.all(np.diff(q[order]) > 0), (losses, q)


def test_batch_share_in_resample_mode_feeds_q_back_and_flattens_it():
    """Why resample mode may not divide by the realised batch share: with fixed losses 0.3 … 0.9
    over 10 groups, a group q favours gets a larger batch share and so a smaller score, which pulls
    q back toward uniform (with the paper's raw share, floor 0.02 and clip 3, q became exactly
    uniform). The pool reference or none keep q spread in loss order."""
    losses = np.linspace(0.3, 0.9, 10)
    fed_back = _run_resample_loop(PromptGDRO(10, share_floor=0.02), losses, "batch")
    pool = _run_resample_loop(PromptGDRO(10), losses, "pool")
    none = _run_resample_loop(PromptGDRO(10, normalize_by_share=False), losses, "none")
    spread = lambda q: q.max() / q.min()  # noqa: E731
    assert spread(none) > 1.4 and np.all(np.diff(none) > 0)
    assert spread(pool) > 1.3
    assert spread(fed_back) < spread(none) - 0.1  # its own choice came back as evidence


# ------------------------------------------------------------------ linear weights, the paper's raw share, strength
@settings(deadline=None, max_examples=80)
@given(st.lists(st.floats(-1, 1), min_size=1, max_size=12), st.floats(0, 0.9), st.floats(0, 5), st.data())
def test_linear_q_is_a_distribution_with_the_floor_and_zero_scores_at_the_floor(scores, gamma, worst_eta, data):
    B = len(scores)
    ctl = PromptGDRO(B, gamma=gamma, weights="linear", worst_eta=worst_eta)
    ctl.scores = np.array(scores)
    ctl._initialized[:] = True
    mask = np.array(data.draw(st.lists(st.booleans(), min_size=B, max_size=B)))
    mask[0] = True
    success = np.array(data.draw(st.lists(st.floats(0, 1), min_size=B, max_size=B)))
    q = ctl.distribution(mask, success)
    assert q.sum() == pytest.approx(1.0) and (q >= 0).all() and (q[~mask] == 0).all()
    floor = gamma / mask.sum()
    assert (q[mask] >= floor - 1e-12).all()
    if (np.array(scores)[mask] > 0).any():  # some positive score: a group scoring ≤ 0 gets exactly the floor
        assert np.allclose(q[mask & (np.array(scores) <= 0)], floor, atol=1e-12)
    else:  # nothing positive anywhere: no preference
        assert np.allclose(q[mask], 1.0 / mask.sum())


def test_linear_q_keeps_a_tiny_positive_score_ahead_of_zero_scores():
    # the smallest positive float times a worst-group weight below 1 underflows to 0 unless the
    # scores are scaled first, and an all-zero value would spread q uniformly
    ctl = PromptGDRO(3, gamma=0.0, weights="linear", worst_eta=1.0)
    ctl.scores = np.array([5e-324, 0.0, 0.0])
    ctl._initialized[:] = True
    q = ctl.distribution(np.array([True, False, True]), np.array([1.0, 0.0, 0.0]))
    assert q.tolist() == [1.0, 0.0, 0.0]


@settings(deadline=None, max_examples=60)
@given(st.integers(1, 12), st.floats(0.0, 2.0), st.floats(0, 0.9))
def test_linear_equal_scores_and_no_worst_weight_give_a_uniform_q(B, score, gamma):
    """Equal scores: q uniform over the groups in play, so a pool-tilted draw is GRPO's."""
    ctl = PromptGDRO(B, gamma=gamma, weights="linear")
    ctl.scores = np.full(B, score)
    ctl._initialized[:] = True
    assert np.allclose(ctl.distribution(), 1.0 / B)


def test_linear_weights_are_proportional_to_score_times_worst_group_weight():
    ctl = PromptGDRO(3, gamma=0.0, weights="linear", worst_eta=2.0)
    ctl.scores = np.array([0.1, 0.1, 0.3])
    ctl._initialized[:] = True
    success = np.array([0.1, 0.6, 0.6])
    v = np.exp(-2.0 * success) * ctl.scores
    assert np.allclose(ctl.distribution(None, success), v / v.sum())
    assert np.allclose(ctl.distribution(), v / v.sum())  # the last success rates are remembered
    fresh = PromptGDRO(3, gamma=0.0, weights="linear")
    fresh.scores, fresh._initialized[:] = np.array([0.2, 0.0, 0.0]), np.array([True, True, False])
    # an unscored group in play weighs as the mean of the scored ones (0.1)
    assert np.allclose(fresh.distribution(), np.array([0.2, 0.0, 0.1]) / 0.3)


def test_weighted_observe_gives_a_ratio_of_sums():
    ctl = PromptGDRO(2, normalize_by_share=False, weights="linear")
    ctl.observe(np.array([0, 0, 1]), np.array([0.1, 0.4, 0.2]), weights=np.array([1.0, 3.0, 2.0]))
    assert ctl.scores.tolist() == pytest.approx([(0.1 * 1 + 0.4 * 3) / 4, 0.2])
    with pytest.raises(ValueError, match="weights"):
        ctl.observe(np.array([0]), np.array([0.1]), weights=np.array([0.0]))


def test_raw_share_is_the_papers_division_with_its_floor():
    ctl = PromptGDRO(2, share_floor=0.02, score_clip=math.inf, share_raw=True)
    ids = np.array([0] * 99 + [1])
    ctl.observe(ids, np.full(100, 0.5))  # raw shares 0.99 and 0.01 → floor 0.02
    assert ctl.scores.tolist() == pytest.approx([0.5 / 0.99, 0.5 / 0.02])


def test_q_ratio_is_reported_and_is_max_over_min_of_q_in_play():
    from gdro_ray.algorithms.prompt_gdro import q_ratio

    assert q_ratio([0.2, 0.0, 0.8]) == pytest.approx(4.0) and q_ratio([0.5, 0.5]) == 1.0
    ctl = PromptGDRO(3, eta=3.0, gamma=0.0)
    ctl.scores = np.array([0.0, 1.0, 2.0])
    assert ctl.metrics()["q_ratio"] == pytest.approx(math.exp(6.0))


@settings(deadline=None, max_examples=80)
@given(st.lists(st.tuples(st.floats(0.01, 15), st.integers(2, 24), st.booleans()), min_size=1, max_size=30),
       st.floats(1, 15))
def test_informative_mean_one_holds_the_mean_over_informative_responses(rows, cap):
    from gdro_ray.algorithms.prompt_gdro import informative_mean_one

    w, n, info = (np.array(x) for x in zip(*rows))
    out = informative_mean_one(w, n, info, cap)
    assert np.array_equal(out[~info], w[~info])  # all-equal groups: untouched, they carry no advantage
    assert (out <= np.maximum(w, cap) + 1e-12).all()
    if info.any():
        mean = (out[info] * n[info]).sum() / n[info].sum()
        # exactly 1 unless the cap bit; ratios between informative prompts are kept below the cap
        assert mean <= 1 + 1e-9
        if (out[info] < cap).all():
            assert mean == pytest.approx(1.0)
        below = info & (out < cap)
        if below.sum() >= 2:
            r = out[below] / w[below]
            assert np.allclose(r, r[0])
