"""The Adversary round trip: schedule/observe invariants, records, state, bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gdro_ray.algorithms.adversary import Adversary, StepSchedule
from gdro_ray.algorithms.state import to_jsonable

PER_GROUP = ("bin_prompts", "bin_batch_prompts", "bin_rollouts", "bin_weights", "bin_scores", "bin_variance",
             "bin_pass_at_k", "bin_share", "bin_clip_fraction", "bin_adv_weight")
SCALARS = ("step", "algorithm", "prompts", "rollouts", "budget_mean", "shadow_price", "reward_mean",
           "useful_rollout_fraction", "adversary_ms")


def make(algorithm="both", num_prompts=300, batch_size=32, mode="resample", allow_repeats=True, seed=0, **kw):
    return Adversary(num_prompts=num_prompts, algorithm=algorithm, batch_size=batch_size, budget_mean=4,
                     classifier_kw=kw.pop("classifier_kw", {}), prompt_kw=kw.pop("prompt_kw", {}),
                     rollout_kw=kw.pop("rollout_kw", {}), signal=kw.pop("signal", "learnability"),
                     mode=mode, allow_repeats=allow_repeats, seed=seed, max_repeats=kw.pop("max_repeats", 0),
                     resample_base=kw.pop("resample_base", "uniform"))


def true_p(num_prompts: int) -> np.ndarray:
    """A fixed heterogeneous pool: a third hopeless-ish, a third medium, a third easy."""
    return np.linspace(0.0, 1.0, num_prompts) ** 2


def rewards_for(sch: StepSchedule, p: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    return [(rng.random(int(n)) < p[i]).astype(float) for i, n in zip(sch.prompt_ids, sch.rollouts)]


def run(adv: Adversary, steps: int, seed: int = 1) -> list[dict]:
    rng, p = np.random.default_rng(seed), true_p(adv.num_prompts)
    out = []
    for _ in range(steps):
        sch = adv.schedule()
        out.append(adv.observe(sch, rewards_for(sch, p, rng)))
    return out


@pytest.mark.parametrize("algorithm", ["grpo", "prompt_gdro", "rollout_gdro", "both"])
@pytest.mark.parametrize("mode", ["reweight", "resample"])
def test_records_have_every_field(algorithm, mode):
    adv = make(algorithm, mode=mode)
    records = run(adv, 6)
    for i, rec in enumerate(records):
        for key in SCALARS:
            assert key in rec, key
        for key in PER_GROUP:
            assert len(rec[key]) == adv.num_groups, key
        assert rec["step"] == i and rec["algorithm"] == algorithm
        assert rec["prompts"] == 32 and rec["budget_mean"] == 4
        assert sum(rec["bin_batch_prompts"]) == 32 and sum(rec["bin_prompts"]) == adv.num_prompts
        assert sum(rec["bin_rollouts"]) == rec["rollouts"]
        assert abs(sum(rec["bin_share"]) - 1.0) < 1e-9
        assert abs(sum(rec["bin_weights"]) - 1.0) < 1e-9
        assert 0.0 <= rec["useful_rollout_fraction"] <= 1.0
        assert 0.0 <= rec["useful_prompt_fraction"] <= 1.0
        assert (rec["useful_prompt_fraction"] == 0.0) == (rec["useful_rollout_fraction"] == 0.0)
        json.dumps(rec, allow_nan=False)  # strict JSON: no NaN sneaks into a record
    # Step 0 schedules from an empty history: every prompt is unseen.
    assert records[0]["bin_batch_prompts"][-1] == 32


def test_useful_prompt_fraction_counts_groups_with_mixed_rewards():
    adv = make("grpo")
    sch = adv.schedule()
    rewards = [np.array([1.0] + [0.0] * (int(n) - 1)) if i % 4 == 0 else np.full(int(n), float(i % 4 == 1))
               for i, n in enumerate(sch.rollouts)]  # a quarter mixed, the rest all right or all wrong
    rec = adv.observe(sch, rewards)
    assert rec["useful_prompt_fraction"] == 8 / 32
    assert rec["useful_rollout_fraction"] == 8 * 4 / rec["rollouts"]


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 60), seed=st.integers(0, 10_000), algorithm=st.sampled_from(["rollout_gdro", "both"]))
def test_budget_is_exact_under_rollout_gdro(batch, seed, algorithm):
    adv = make(algorithm, num_prompts=120, batch_size=batch, seed=seed)
    rng, p = np.random.default_rng(seed), true_p(120)
    for _ in range(4):
        sch = adv.schedule()
        assert sch.rollouts.sum() == batch * 4
        assert sch.rollouts.min() >= 2 and sch.rollouts.max() <= 12
        adv.observe(sch, rewards_for(sch, p, rng))


@pytest.mark.parametrize("algorithm", ["grpo", "prompt_gdro"])
def test_fixed_rollouts_without_rollout_gdro(algorithm):
    adv = make(algorithm)
    run(adv, 3)
    assert np.all(adv.schedule().rollouts == 4)


def test_cursor_visits_every_prompt_once_per_epoch():
    adv = make("grpo", num_prompts=100, batch_size=32)
    seen = []
    for _ in range(3):
        sch = adv.schedule()
        seen.extend(sch.prompt_ids.tolist())
        adv.observe(sch, [np.zeros(int(n)) for n in sch.rollouts])
    assert sorted(seen[:96]) == sorted(set(seen[:96]))  # no repeat inside the first epoch
    sch = adv.schedule()  # crosses into epoch 1: the 4 left of epoch 0, then 28 of epoch 1
    first_epoch = set(seen) | set(sch.prompt_ids[:4].tolist())
    assert first_epoch == set(range(100))


def test_schedule_is_idempotent_until_observe():
    adv = make("both")
    run(adv, 3)
    a, b = adv.schedule(), adv.schedule()
    assert a is b


@pytest.mark.parametrize("algorithm,mode", [("both", "resample"), ("both", "reweight"), ("grpo", "resample")])
def test_state_round_trip_gives_identical_future_schedules(algorithm, mode):
    adv = make(algorithm, mode=mode)
    run(adv, 8)
    adv.schedule()  # a pending schedule must survive the round trip too
    state = json.loads(json.dumps(to_jsonable(adv.state_dict())))
    twin = make(algorithm, mode=mode)
    twin.load_state_dict(state)
    ra, rb = run(adv, 6, seed=5), run(twin, 6, seed=5)
    for x, y in zip(ra, rb):
        x, y = dict(x), dict(y)
        x.pop("adversary_ms"), y.pop("adversary_ms")
        assert x == y
    assert np.array_equal(adv.schedule().prompt_ids, twin.schedule().prompt_ids)


def test_state_from_another_configuration_is_refused():
    adv = make("both")
    with pytest.raises(ValueError, match="batch_size"):
        make("both", batch_size=16).load_state_dict(adv.state_dict())


def _snapshot(adv: Adversary) -> str:
    return json.dumps(to_jsonable(adv.state_dict()), sort_keys=True)


@pytest.mark.parametrize("problem,match", [
    ("short", "rewards has"), ("count", "has 1 rewards"), ("nan", "non-finite"),
    ("range", "outside"), ("step", "step"), ("ids", "does not match"), ("surrogate", "surrogate"),
])
def test_bad_observe_raises_and_changes_nothing(problem, match):
    adv = make("both")
    run(adv, 3)
    sch = adv.schedule()
    rewards = [np.ones(int(n)) * 0.0 for n in sch.rollouts]
    surrogate = None
    if problem == "short":
        rewards = rewards[:-1]
    elif problem == "count":
        rewards[2] = np.zeros(1)
    elif problem == "nan":
        rewards[0] = rewards[0].copy()
        rewards[0][0] = np.nan
    elif problem == "range":
        rewards[1] = rewards[1] + 2.0
    elif problem == "step":
        sch = StepSchedule.from_dict({**sch.to_dict(), "step": sch.step + 1})
    elif problem == "ids":
        d = sch.to_dict()
        d["prompt_ids"] = [(i + 1) % adv.num_prompts for i in d["prompt_ids"]]
        sch = StepSchedule.from_dict(d)
    elif problem == "surrogate":
        surrogate = np.zeros(3)
    before = _snapshot(adv)
    with pytest.raises(ValueError, match=match):
        adv.observe(sch, rewards, surrogate)
    assert _snapshot(adv) == before


def test_observe_without_schedule_raises():
    adv = make("grpo")
    sch = adv.schedule()
    adv.observe(sch, [np.zeros(int(n)) for n in sch.rollouts])
    with pytest.raises(ValueError, match="step"):
        adv.observe(sch, [np.zeros(int(n)) for n in sch.rollouts])


def test_resample_with_repeats_follows_q():
    """The realised batch share tracks q even for groups smaller than their slot count."""
    adv = make("prompt_gdro", num_prompts=200, batch_size=64, mode="resample", allow_repeats=True)
    run(adv, 10)  # leave the all-unseen start behind
    q_sum, share_sum = np.zeros(adv.num_groups), np.zeros(adv.num_groups)
    rng, p = np.random.default_rng(3), true_p(200)
    steps = 200
    for _ in range(steps):
        sch = adv.schedule()
        q_sum += sch.q
        share_sum += np.bincount(sch.group_ids, minlength=adv.num_groups) / sch.batch_size
        adv.observe(sch, rewards_for(sch, p, rng))
    assert np.abs(share_sum / steps - q_sum / steps).max() < 0.02


def test_resample_without_repeats_never_repeats_a_prompt():
    adv = make("prompt_gdro", num_prompts=100, batch_size=64, allow_repeats=False)
    for rec in run(adv, 15):
        assert rec["repeated_slots"] == 0


@settings(max_examples=15, deadline=None)
@given(cap=st.integers(1, 4), num_prompts=st.integers(20, 200), batch=st.integers(8, 96), seed=st.integers(0, 5))
def test_max_repeats_caps_visits_per_prompt_and_keeps_the_batch(cap, num_prompts, batch, seed):
    adv = Adversary(num_prompts=num_prompts, algorithm="prompt_gdro", batch_size=batch, budget_mean=4,
                    mode="resample", allow_repeats=True, max_repeats=cap, seed=seed)
    limit = max(cap, -(-batch // num_prompts))  # a pool too small for the cap repeats as little as fits
    rng, p = np.random.default_rng(seed), true_p(num_prompts)
    for _ in range(12):
        sch = adv.schedule()
        assert sch.batch_size == batch and len(sch.prompt_ids) == batch
        assert np.bincount(sch.prompt_ids).max() <= limit
        adv.observe(sch, rewards_for(sch, p, rng))


def test_bad_max_repeats_is_refused():
    with pytest.raises(ValueError, match="max_repeats"):
        make("prompt_gdro", max_repeats=-1)


def test_resample_without_repeats_needs_enough_prompts():
    with pytest.raises(ValueError, match="batch_size"):
        make("prompt_gdro", num_prompts=10, batch_size=64, allow_repeats=False)


@pytest.mark.parametrize("algorithm", ["prompt_gdro", "both"])
def test_reweight_weights_have_mean_one_over_responses(algorithm):
    adv = make(algorithm, mode="reweight", prompt_kw={"omega_max": 1e9})
    rng, p = np.random.default_rng(0), true_p(adv.num_prompts)
    for _ in range(12):
        sch = adv.schedule()
        mean = float((sch.adv_weights * sch.rollouts).sum() / sch.rollouts.sum())
        assert abs(mean - 1.0) < 1e-9
        assert np.all(sch.adv_weights > 0)
        for g in np.unique(sch.group_ids):  # one weight per group
            assert np.ptp(sch.adv_weights[sch.group_ids == g]) < 1e-12
        adv.observe(sch, rewards_for(sch, p, rng))


def test_weights_are_one_outside_reweight_mode():
    adv = make("both", mode="resample")
    run(adv, 3)
    assert np.all(adv.schedule().adv_weights == 1.0)


def test_same_seed_same_schedules_and_other_seed_differs():
    a, b, c = make("both", seed=4), make("both", seed=4), make("both", seed=5)
    ra, rb = run(a, 5), run(b, 5)
    run(c, 5)  # the same steps on the other seed, so its next schedule is comparable
    assert [r["bin_batch_prompts"] for r in ra] == [r["bin_batch_prompts"] for r in rb]
    assert np.array_equal(a.schedule().prompt_ids, b.schedule().prompt_ids)
    assert not np.array_equal(a.schedule().prompt_ids, c.schedule().prompt_ids)


def test_schedule_dict_round_trip():
    adv = make("both", mode="reweight")
    run(adv, 2)
    sch = adv.schedule()
    back = StepSchedule.from_dict(json.loads(json.dumps(sch.to_dict())))
    for field in ("prompt_ids", "group_ids", "rollouts", "adv_weights", "q"):
        assert np.array_equal(getattr(back, field), getattr(sch, field))
    adv.observe(back, [np.zeros(int(n)) for n in back.rollouts])  # accepted as the pending one


def test_from_config_uses_the_config_sections():
    from gdro_ray.config.loader import load_config

    cfg = load_config(None, ["algorithm=rollout_gdro", "batch_size=16", "budget_mean=4", "rollout_gdro.n_max=6",
                             "classifier.edges=[0.25,0.5,0.75]"])
    adv = Adversary.from_config(cfg, num_prompts=50)
    assert adv.num_groups == 5 and adv.batch_size == 16 and adv.algorithm == "rollout_gdro"
    run(adv, 3)
    assert adv.schedule().rollouts.max() <= 6


def test_unknown_algorithm_is_refused():
    with pytest.raises(ValueError, match="algorithm"):
        make("ppo")


def test_shadow_controllers_report_without_acting():
    """GRPO runs both controllers in shadow: scores move, schedules stay uniform."""
    adv = make("grpo")
    recs = run(adv, 10)
    assert any(abs(s) > 0 for s in recs[-1]["bin_scores"] if s is not None)
    assert all(r["rollouts"] == 32 * 4 for r in recs)
    pool = np.asarray(recs[-1]["bin_prompts"], float)
    # the applied q is the pool's group shares at schedule time: uniform prompt sampling
    assert abs(sum(recs[-1]["bin_weights"]) - 1.0) < 1e-9 and pool.sum() == adv.num_prompts


def test_schedule_ahead_queues_one_step_and_observes_in_order():
    """One-step off-policy: the next schedule is made before the current one is observed."""
    def make():
        return Adversary(500, "both", 16, 4, {}, {}, {}, "learnability", "resample", True, seed=3)

    rng = np.random.default_rng(0)
    adv = make()
    s0 = adv.schedule()
    s1 = adv.schedule_ahead()
    assert (s0.step, s1.step, s0.lag, s1.lag) == (0, 1, 0, 1)
    assert adv.schedule() is s0  # still idempotent: the oldest pending one
    with pytest.raises(ValueError):
        adv.schedule_ahead()  # at most two outstanding
    with pytest.raises(ValueError):
        adv.observe(s1, [rng.integers(0, 2, n).astype(float) for n in s1.rollouts])
    # the pending queue survives a state round trip
    twin = make()
    twin.load_state_dict(json.loads(json.dumps(to_jsonable(adv.state_dict()))))
    r0 = adv.observe(s0, [rng.integers(0, 2, n).astype(float) for n in s0.rollouts])
    assert r0["step"] == 0 and r0["schedule_lag"] == 0
    r1 = adv.observe(s1, [rng.integers(0, 2, n).astype(float) for n in s1.rollouts])
    assert r1["step"] == 1 and r1["schedule_lag"] == 1
    assert twin.schedule().step == 0 and len(twin._pending) == 2


def test_passk_proxy_keeps_rollouts_on_hard_but_solvable_prompts():
    """The p̂(1−p̂) proxy sees 0/n on a hard prompt as variance v_min and gives it n_min; the
    pass@k proxy sees its pass@8 (≈ 1 − (1 − p)^8) as uncertain and keeps rollouts there."""
    p = true_p(600)
    hard = (p > 0.02) & (p < 0.08)
    means = {}
    for proxy in ("reward_variance", "passk_variance"):
        adv = Adversary(num_prompts=600, algorithm="rollout_gdro", batch_size=64, budget_mean=4, seed=0,
                        rollout_proxy=proxy)
        rng, given = np.random.default_rng(3), []
        for step in range(60):
            sch = adv.schedule()
            if step >= 30:  # after several epochs every prompt has history
                given += [int(n) for i, n in zip(sch.prompt_ids, sch.rollouts) if hard[i]]
            adv.observe(sch, rewards_for(sch, p, rng))
        means[proxy] = float(np.mean(given))
    assert means["passk_variance"] > means["reward_variance"] + 2.0, means


def test_unknown_rollout_proxy_is_refused():
    with pytest.raises(ValueError, match="rollout_proxy"):
        Adversary(num_prompts=10, algorithm="both", batch_size=4, budget_mean=4, rollout_proxy="entropy")


# ---- extend: dynamic sampling's refill rounds ------------------------------------------------
@pytest.mark.parametrize("algorithm,mode", [("both", "resample"), ("both", "reweight"), ("grpo", "resample"),
                                            ("rollout_gdro", "resample")])
def test_extend_grows_the_pending_step_and_observe_sees_every_prompt(algorithm, mode):
    adv = make(algorithm, mode=mode)
    run(adv, 4)
    first = adv.schedule()
    grown = adv.extend(10)
    assert grown.step == first.step and grown.batch_size == first.batch_size + 10
    assert np.array_equal(grown.prompt_ids[:32], first.prompt_ids)
    assert np.array_equal(grown.rollouts[:32], first.rollouts)
    assert adv.schedule() is grown  # the pending step is the grown one
    assert int(grown.rollouts[32:].sum()) == 10 * 4  # the refill keeps the per-prompt budget n̄
    assert np.array_equal(grown.group_ids[32:], adv.classifier.groups(grown.prompt_ids[32:]))
    if mode == "reweight" and algorithm != "grpo":
        assert np.all(grown.adv_weights[32:] > 0)
    else:
        assert np.all(grown.adv_weights == 1.0)
    rng, p = np.random.default_rng(3), true_p(adv.num_prompts)
    with pytest.raises(ValueError, match="does not match"):  # the un-grown schedule is no longer the step
        adv.observe(first, rewards_for(first, p, rng))
    assert adv.step == 4
    record = adv.observe(grown, rewards_for(grown, p, rng))
    assert record["prompts"] == 42 and record["rollouts"] == int(grown.rollouts.sum())
    assert sum(record["bin_batch_prompts"]) == 42 and adv.step == 5


def test_extend_is_deterministic_and_survives_a_state_round_trip():
    a, b = make("both"), make("both")
    run(a, 3), run(b, 3)
    a.schedule(), b.schedule()
    ga, gb = a.extend(7), b.extend(7)
    assert np.array_equal(ga.prompt_ids, gb.prompt_ids) and np.array_equal(ga.rollouts, gb.rollouts)
    twin = make("both")
    twin.load_state_dict(json.loads(json.dumps(to_jsonable(a.state_dict()))))
    assert np.array_equal(twin.schedule().prompt_ids, ga.prompt_ids)  # the grown step is what resumes
    assert np.array_equal(twin.extend(5).prompt_ids, a.extend(5).prompt_ids)


def test_extend_follows_the_cursor_without_skipping_prompts():
    adv = make("grpo", num_prompts=100, batch_size=30, mode="reweight")
    seen = list(adv.schedule().prompt_ids) + list(adv.extend(20).prompt_ids[30:])
    rng, p = np.random.default_rng(0), true_p(100)
    adv.observe(adv.schedule(), rewards_for(adv.schedule(), p, rng))
    seen += list(adv.schedule().prompt_ids) + list(adv.extend(20).prompt_ids[30:])
    assert sorted(seen) == list(range(100))  # one epoch, every prompt once, refills included


@settings(max_examples=25, deadline=None)
@given(cap=st.integers(1, 3), rounds=st.lists(st.integers(1, 40), min_size=1, max_size=4),
       num_prompts=st.integers(20, 120), seed=st.integers(0, 5))
def test_refill_rounds_respect_max_repeats(cap, rounds, num_prompts, seed):
    """A refill round counts the step's earlier visits against prompt_gdro.max_repeats, as long
    as the pool can hold the step at that cap (else the fewest repeats that fit)."""
    adv = make("both", num_prompts=num_prompts, batch_size=16, max_repeats=cap, seed=seed)
    run(adv, 3, seed=seed)
    sch = adv.schedule()
    for count in rounds:
        sch = adv.extend(count)
        need = max(cap, -(-sch.batch_size // num_prompts))
        assert np.bincount(sch.prompt_ids).max() <= need


def test_extend_needs_a_pending_schedule_and_a_positive_count():
    adv = make("both")
    with pytest.raises(ValueError, match="no pending schedule"):
        adv.extend(3)
    adv.schedule()
    with pytest.raises(ValueError, match="count"):
        adv.extend(0)


def test_share_normalization_reference_reaches_prompt_gdro():
    """auto resolves per mode; `pool` divides by the pool's group shares, so its scores differ
    from `none` on the same history, and `batch` from both (the reference actually reaches S_b)."""
    assert make(mode="resample").share_normalization == "none"
    assert make(mode="reweight").share_normalization == "batch"
    p = true_p(300)
    scores = {}
    for ref in ("none", "pool", "batch"):
        adv = Adversary(num_prompts=300, algorithm="prompt_gdro", batch_size=32, budget_mean=4, seed=0,
                        mode="reweight", share_normalization=ref, max_repeats=0)
        rng = np.random.default_rng(1)
        for _ in range(12):
            s = adv.schedule()
            adv.observe(s, [rng.binomial(1, p[i], n).astype(float) for i, n in zip(s.prompt_ids, s.rollouts)])
        scores[ref] = adv.prompt_gdro.scores.copy()
        assert adv.state_dict()["config"]["share_normalization"] == ref
    assert not np.allclose(scores["none"], scores["pool"])
    assert not np.allclose(scores["none"], scores["batch"])
    assert not np.allclose(scores["pool"], scores["batch"])
    with pytest.raises(ValueError, match="share_normalization"):
        Adversary(num_prompts=10, algorithm="prompt_gdro", batch_size=4, budget_mean=4,
                  share_normalization="sideways")


@settings(max_examples=20, deadline=None)
@given(steps=st.integers(1, 6), seed=st.integers(0, 20), base=st.sampled_from(["uniform", "pool"]))
def test_resample_base_is_what_q_tilts(steps, seed, base):
    """`uniform`: the batch's group mix is q; `pool`: q times each group's pool share, so equal
    scores give the pool's own mix (GRPO's uniform draw over prompts)."""
    adv = make("prompt_gdro", num_prompts=200, batch_size=32, seed=seed, resample_base=base)
    run(adv, steps, seed=seed)
    counts = adv.classifier.group_counts().astype(float)
    q = np.where(counts > 0, adv.prompt_gdro.distribution(counts > 0), 0.0)
    want = q * counts if base == "pool" else q
    assert np.allclose(adv.schedule().q, want / want.sum())


def test_pool_base_at_equal_scores_draws_like_the_pool():
    adv = make("prompt_gdro", num_prompts=400, batch_size=64, resample_base="pool")
    run(adv, 8)
    adv.prompt_gdro.load_state_dict({**adv.prompt_gdro.state_dict(),
                                     "scores": np.zeros_like(np.asarray(adv.prompt_gdro.state_dict()["scores"]))})
    counts = adv.classifier.group_counts()
    shares = counts / counts.sum()
    assert np.allclose(adv.schedule().q, shares, atol=1e-12)
    with pytest.raises(ValueError, match="resample_base"):
        make(resample_base="natural")


# ------------------------------------------------------------------ profiles' machinery through the adversary
def from_profile(profile: str, *over: str, num_prompts: int = 240) -> Adversary:
    from gdro_ray.config.loader import load_config

    cfg = load_config(None, ["preset=toy", f"profile={profile}", "batch_size=32", *over])
    return Adversary.from_config(cfg, num_prompts=num_prompts)


@pytest.mark.parametrize("profile,algorithm", [("paper", "prompt_gdro"), ("paper", "rollout_gdro"),
                                               ("learnability", "prompt_gdro"), ("learnability", "both"),
                                               ("project", "rollout_gdro")])
def test_profiles_run_round_trip_and_report_their_strength(profile, algorithm):
    def run_with_surrogate(a: Adversary, steps: int, seed: int) -> list[dict]:
        rng, p = np.random.default_rng(seed), true_p(a.num_prompts)
        out = []
        for _ in range(steps):
            sch = a.schedule()
            assert int(sch.rollouts.sum()) == 32 * 8
            out.append(a.observe(sch, rewards_for(sch, p, rng), rng.normal(0, 0.01, sch.batch_size)))
        return out

    adv = from_profile(profile, f"algorithm={algorithm}")
    records = run_with_surrogate(adv, 12, seed=2)
    for rec in records:
        json.dumps(rec, allow_nan=False)
        assert rec["q_ratio"] >= 1.0 and len(rec["bin_progress"]) == adv.num_groups
        assert len(rec["bin_edges"]) == adv.num_groups - 2 and 0.0 <= rec["expected_useful_fraction"] <= 1.0
    adv.schedule()
    state = json.loads(json.dumps(to_jsonable(adv.state_dict())))
    twin = from_profile(profile, f"algorithm={algorithm}")
    twin.load_state_dict(state)
    ra, rb = run_with_surrogate(adv, 5, seed=9), run_with_surrogate(twin, 5, seed=9)
    for x, y in zip(ra, rb):
        x.pop("adversary_ms"), y.pop("adversary_ms")
        assert x == y


def test_knapsack_gives_hard_but_solvable_prompts_more_and_raises_the_expected_useful_share():
    adv = from_profile("project", "algorithm=rollout_gdro", "rollout_gdro.mode=knapsack", "rollout_gdro.n_min=4",
                       "rollout_gdro.n_max=24")
    base = from_profile("project", "algorithm=grpo")
    for a in (adv, base):
        run(a, 15)
    sch, ref = adv.schedule(), base.schedule()
    p_hat = adv.classifier.success_rates(sch.prompt_ids)
    assert sch.rollouts.sum() == 32 * 8 and sch.rollouts.min() >= 4 and sch.rollouts.max() <= 24
    from gdro_ray.algorithms.knapsack import gradient_probability

    assert gradient_probability(sch.rollouts, p_hat).sum() >= gradient_probability(np.full(32, 8), p_hat).sum()
    assert ref.rollouts.tolist() == [8] * 32


def test_progress_signal_with_the_pool_tilt_draws_like_grpo_before_any_measurement():
    adv = from_profile("learnability", "algorithm=prompt_gdro", "prompt_gdro.worst_eta=0")
    run(adv, 1)  # 32 of 240 prompts seen once: no prompt has a second visit, nothing is measured
    assert not adv.prompt_gdro._initialized.any()
    counts = adv.classifier.group_counts()
    assert np.allclose(adv.schedule().q, counts / counts.sum())


def test_states_saved_before_the_new_controllers_still_load():
    adv = make("both")
    run(adv, 4)
    state = to_jsonable(adv.state_dict())
    del state["progress"], state["prompt_gdro"]["last_success"]
    del state["classifier"]["count_edges"], state["classifier"]["refreshed"]
    state["classifier"]["config"].pop("binning")
    twin = make("both")
    twin.load_state_dict(json.loads(json.dumps(state)))
    assert np.array_equal(twin.schedule().prompt_ids, adv.schedule().prompt_ids)
    assert all(v is None for v in run(twin, 1)[0]["bin_progress"])  # progress starts afresh


def test_reweight_record_reports_how_hard_q_leans_and_the_weight_on_informative_groups():
    adv = make("prompt_gdro", mode="reweight", prompt_kw={"eta": 3.0})
    rec = run(adv, 6)[-1]
    sch_w = np.asarray(rec["bin_adv_weight"])
    assert rec["adv_weight_ratio"] >= 1.0 and rec["q_ratio"] >= 1.0
    assert rec["adv_weight_informative_mean"] is None or rec["adv_weight_informative_mean"] > 0
    assert sch_w.max() > 0


def test_progress_signal_scores_are_the_trackers_group_progress():
    adv = from_profile("learnability", "algorithm=prompt_gdro")
    run(adv, 15)
    init = adv.prompt_gdro._initialized
    assert init.any() and np.array_equal(init, np.isfinite(adv.progress.group_progress()))
    assert np.allclose(adv.prompt_gdro.scores[init], adv.progress.group_progress()[init])


@settings(max_examples=15, deadline=None)
@given(steps=st.integers(1, 8), seed=st.integers(0, 50), score=st.floats(0.0, 1.0))
def test_linear_weights_at_equal_scores_draw_like_the_pool(steps, seed, score):
    adv = from_profile("learnability", "algorithm=prompt_gdro", "prompt_gdro.worst_eta=0", f"seed={seed}")
    run(adv, steps, seed=seed)
    adv.prompt_gdro.scores[:] = score
    adv.prompt_gdro._initialized[:] = True
    counts = adv.classifier.group_counts()
    assert np.allclose(adv.schedule().q, counts / counts.sum(), atol=1e-12)


# ---- rollouts that were not scored (a host framework's "not applicable") -------------------------
def _without_timing(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if k != "adversary_ms"}


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["grpo", "prompt_gdro", "rollout_gdro", "both"]), st.sampled_from(["reweight", "resample"]),
       st.sampled_from(["learnability", "failure", "progress"]), st.integers(0, 1000))
def test_missing_ok_without_a_missing_reward_changes_nothing(algorithm, mode, signal, seed):
    a, b = make(algorithm, mode=mode, seed=seed, signal=signal), make(algorithm, mode=mode, seed=seed, signal=signal)
    rng_a, rng_b, p = np.random.default_rng(seed), np.random.default_rng(seed), true_p(300)
    for _ in range(4):
        sa, sb = a.schedule(), b.schedule()
        ra = _without_timing(a.observe(sa, rewards_for(sa, p, rng_a)))
        rb = _without_timing(b.observe(sb, rewards_for(sb, p, rng_b), missing_ok=True))
        assert json.dumps(ra, sort_keys=True) == json.dumps(rb, sort_keys=True)
    assert json.dumps(to_jsonable(a.state_dict()), sort_keys=True) == json.dumps(to_jsonable(b.state_dict()),
                                                                                 sort_keys=True)


def test_an_unscored_rollout_is_seen_by_no_statistic_and_an_unscored_prompt_is_not_visited():
    adv = make("both", mode="reweight", seed=3)  # the data cursor: no prompt twice in a step
    sch = adv.schedule()
    rewards = [np.resize(np.array([1.0, 0.0]), int(n)) for n in sch.rollouts]
    with pytest.raises(ValueError, match="non-finite"):
        adv.observe(sch, [np.full(int(n), np.nan) for n in sch.rollouts])  # not without missing_ok
    partial = [r.copy() for r in rewards]
    partial[0][:] = np.nan  # prompt 0: nothing scored
    partial[1][0] = np.nan  # prompt 1: one rollout fewer
    with pytest.raises(ValueError, match="non-finite"):
        adv.observe(sch, [np.where(np.isnan(r), np.inf, r) for r in partial], missing_ok=True)  # inf is still bad
    rec = adv.observe(sch, partial, missing_ok=True)
    assert rec["rollouts"] == int(sch.rollouts.sum())  # the budget was spent all the same
    assert rec["rollouts_observed"] == int(sch.rollouts.sum()) - int(sch.rollouts[0]) - 1
    st_ = adv.classifier.state_dict()
    pid0, pid1, pid2 = (int(x) for x in sch.prompt_ids[:3])
    assert st_["visits"][pid0] == 0 and st_["pooled_n"][pid0] == 0  # prompt 0 was not visited
    assert st_["pooled_n"][pid1] == int(sch.rollouts[1]) - 1  # prompt 1: its scored rollouts
    assert st_["pooled_n"][pid2] == int(sch.rollouts[2])
    assert st_["pooled_c"][pid1] == int(np.nansum(partial[1] > 0.5))
