"""A step's learner batch (gdro_ray.service.step_batch): dynamic-sampling refills against the real
adversary (in process), the trained subset and its weights, off-policy log-probs and staleness."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gdro_ray.algorithms.grpo import group_advantages
from gdro_ray.algorithms.schedule import StepSchedule
from gdro_ray.config import load_config, to_dict
from gdro_ray.errors import UserError
from gdro_ray.protocol import LearnStats, RankStats, ShardResult, UpdateStats
from gdro_ray.service.adversary_actor import AdversaryService
from gdro_ray.service.shards import build_shards
from gdro_ray.service.step_batch import (
    RewardChecks,
    RewardHealth,
    assemble_batch,
    check_refill,
    informative,
    learn_fields,
    refill_count,
    refuse_stale,
    renormalised_weights,
    sample_refills,
    trained_slots,
)
from gdro_ray.transfer.rollout_arrays import materialise, prompt_rollouts, split_for_ranks

NUM_PROMPTS = 60


class FakePool:
    """Answers shards like the sampler pool: prompt p's rollouts all succeed when p % 3 == 0, all
    fail when p % 3 == 1 (uninformative groups), and alternate when p % 3 == 2 (informative)."""

    def __init__(self, version=0, constant=None):
        self.calls, self.version, self.constant = [], version, constant

    def run(self, shards):
        self.calls.append(shards)
        out = []
        for s in shards:
            results = []
            for slot, prompt, n in zip(s.slots, s.prompts, s.n):
                p = int(prompt[1:])
                rewards = [1.0] * n if p % 3 == 0 else [0.0] * n if p % 3 == 1 else [float(j % 2) for j in range(n)]
                if self.constant is not None:
                    rewards = [self.constant] * n
                results.append(prompt_rollouts(slot, rewards, [1, p + 2], [[5, 6][: 1 + j % 2] for j in range(n)],
                                               [[-0.5, -0.25][: 1 + j % 2] for j in range(n)]))
            out.append(ShardResult(shard_id=s.shard_id, sampler_id=0, weights_version=self.version, results=results))
        return out


class _Step:
    """The collaborators of a step, as the driver passes them: config, pool of prompts, the
    adversary (in process) and a stand-in sampler pool."""

    def __init__(self, *overrides):
        self.cfg = load_config(None, ["batch_size=8", "grpo.filter_all_equal=true", "algorithm=grpo",
                                      "sampler.shard_size=4", *overrides])
        self.train = [{"prompt": f"p{i}", "answer": "1"} for i in range(NUM_PROMPTS)]
        self.adversary = AdversaryService(to_dict(self.cfg), NUM_PROMPTS, enable_metrics=False)
        self.pool = FakePool()
        self.version = 0

    def first_round(self, sched):
        return self.pool.run(build_shards(self.cfg, self.train, sched))

    def refills(self, sched, t):
        return sample_refills(sched, self.first_round(sched), t, cfg=self.cfg, train=self.train,
                              adversary=self.adversary, sampler_pool=self.pool)

    def refuse_stale(self, sched, shard_out, t):
        return refuse_stale(sched, shard_out, t, version=self.version, max_staleness=self.cfg.cluster.max_staleness,
                            sample=lambda s: (self.first_round(s), 0.0))


def _schedule(adv_weights, rollouts, prompt_ids) -> StepSchedule:
    ids = np.asarray(prompt_ids, dtype=np.int64)
    return StepSchedule(0, ids, np.zeros_like(ids), np.asarray(rollouts, dtype=np.int64),
                        np.asarray(adv_weights, dtype=np.float64), np.ones(1))


def _by_slot(shard_out):
    return {r.slot: r for o in shard_out for r in o.results}


def test_refill_collects_b_informative_groups_and_the_adversary_observes_all():
    tr = _Step("grpo.max_refill_rounds=5")
    sched = tr.adversary.schedule()
    t = {}
    sched, shard_out, info = tr.refills(sched, t)
    by_slot = _by_slot(shard_out)
    B = sched.batch_size
    assert sorted(by_slot) == list(range(B)) and B > 8  # the rounds grew the step
    rewards = [np.asarray(by_slot[i].rewards) for i in range(B)]
    assert info["refill_rounds"] >= 1 and not info["refill_short"]
    assert informative(rewards).sum() >= 8
    slots = trained_slots(rewards, True, 8)
    assert len(slots) == 8 and all(sched.prompt_ids[i] % 3 == 2 for i in slots)
    # every refill shard has its own seed and shard id: a repeated prompt is not sampled identically
    seeds = [s.seed for call in tr.pool.calls for s in call]
    assert len(set(seeds)) == len(seeds)
    record = tr.adversary.observe(sched.step, [r.tolist() for r in rewards], [0.0] * B, 1)
    assert record["prompts"] == B and record["rollouts"] == sum(len(r) for r in rewards)


def test_refill_stops_after_max_rounds_and_says_so():
    tr = _Step("grpo.max_refill_rounds=0")
    sched = tr.adversary.schedule()
    sched, shard_out, info = tr.refills(sched, {})
    assert info == {"refill_rounds": 0, "refill_short": True, "refill_pool_spent": False}
    assert sched.batch_size == 8
    tr = _Step("grpo.max_refill_rounds=1")
    sched = tr.adversary.schedule()
    _, _, info = tr.refills(sched, {})
    assert info["refill_rounds"] <= 1 and len(tr.pool.calls) == 1 + info["refill_rounds"]


def test_a_constant_reward_ends_the_refills_when_the_pool_is_spent(capsys):
    tr = _Step(f"grpo.max_refill_rounds={100}")
    tr.pool = FakePool(constant=1.0)
    sched = tr.adversary.schedule()
    sched, shard_out, info = tr.refills(sched, {})
    sampled = sched.batch_size
    # B=8 per round over a pool of 60: 7 rounds reach it; none asks past it
    assert info == {"refill_rounds": 7, "refill_short": True, "refill_pool_spent": True} and sampled == NUM_PROMPTS
    with pytest.raises(UserError, match=r"^every group of the 60 prompts sampled at step 1 had equal rewards .*"
                                        r"training pool \(60 prompts\) without one informative group"):
        check_refill(info, 0, False, 1, sampled, NUM_PROMPTS)
    check_refill(info, 0, True, 5, sampled, NUM_PROMPTS)  # a run that trained before: a warning, the step is empty
    assert capsys.readouterr().err.startswith("warning: every group of the 60 prompts sampled at step 5")
    check_refill(info, 3, False, 1, sampled, NUM_PROMPTS)  # something to train: silent
    check_refill({"refill_rounds": 3, "refill_short": True, "refill_pool_spent": False}, 0, False, 1, 32, 60)
    assert capsys.readouterr().err.count("warning:") == 1  # the rounds ran out, not the pool: a warning


def _outs(errors=0, timeouts=0):
    return [ShardResult(shard_id=0, sampler_id=0, weights_version=0, results=[], reward_errors=errors,
                        reward_timeouts=timeouts)]


def test_steps_whose_reward_calls_all_fail_warn_then_stop(capsys):
    cfg = load_config(None, ["steps=10",
                             "reward.function=gdro_ray.rewards.examples.any_of_answers:any_of_answers_reward",
                             "sampler.reward_timeout_s=0.5"])
    rewards = [np.zeros(4)] * 3  # 3 prompts: one custom call each
    health = RewardHealth(cfg, first_step=0)
    assert health.check(1, _outs(errors=2), rewards) is False  # one call worked
    assert health.check(2, _outs(errors=3, timeouts=3), rewards) is True
    assert health.check(3, _outs(errors=3, timeouts=1), rewards) is True
    err = capsys.readouterr().err.splitlines()
    assert err[0] == ("warning: step 2: every reward call failed (3/3 timed out at sampler.reward_timeout_s="
                      "0.5 s per response; reward.function=gdro_ray.rewards.examples.any_of_answers:"
                      "any_of_answers_reward); the step trains on zero rewards") and len(err) == 2
    assert err[1].startswith("warning: step 3: every reward call failed (3/3 failed, 1 of them timed out at ")
    with pytest.raises(UserError, match=r"^every reward call failed in 3 steps in a row \(step 4: 3/3 failed, 0 of "
                                        r"them timed out .*\): fix the function \(reward.on_error=stop names"):
        health.check(4, _outs(errors=3), rewards)
    health = RewardHealth(cfg, first_step=0)
    for step in (1, 2):
        health.check(step, _outs(errors=3), rewards)
    health.check(3, _outs(errors=0), rewards)  # a good step resets the count
    assert health.streak == 0
    short = RewardHealth(load_config(None, ["steps=2"]), first_step=0)  # math-verify: one call per rollout
    assert short.check(1, _outs(timeouts=11), rewards) is False
    assert short.check(1, _outs(timeouts=12), rewards) is True
    with pytest.raises(UserError, match=r"^every reward call failed in every step of the run \(step 2: 12/12 timed "
                                        r"out at .*reward.function=math-verify\): raise sampler.reward_timeout_s"):
        short.check(2, _outs(timeouts=12), rewards)
    resumed = RewardHealth(load_config(None, ["steps=10"]), first_step=9)  # the last step of a resumed run
    with pytest.raises(UserError, match="every step of the run"):
        resumed.check(10, _outs(timeouts=12), rewards)



def test_reward_checks_remember_that_an_earlier_step_trained(capsys):
    """An empty step after the pool is spent stops the run only if no earlier step trained a group."""
    cfg = load_config(None, ["grpo.filter_all_equal=true"])
    spent = {"refill_rounds": 7, "refill_short": True, "refill_pool_spent": True}
    rewards = [np.ones(4)] * 3
    checks = RewardChecks(cfg, first_step=0, pool_size=60)
    with pytest.raises(UserError, match="the reward looks constant"):
        checks.check(1, _outs(), rewards, spent, [])
    checks = RewardChecks(cfg, first_step=0, pool_size=60)
    checks.check(1, _outs(), rewards, {}, [0, 2])  # a step that trains two groups
    checks.check(2, _outs(), rewards, spent, [])  # then an empty one: a warning, not a stop
    assert checks.trained_any and "warning: every group of the 3 prompts sampled at step 2" in capsys.readouterr().err


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.floats(-1.7e308, 1.7e308, allow_nan=False), min_size=1, max_size=8), min_size=1,
                max_size=6), st.sampled_from([1e-6, 1e-3, 1.0]))
def test_finite_rewards_never_give_nan_advantages(groups, eps):
    adv = group_advantages(groups, eps=eps, adv_clip=5.0)
    for g, a in zip(groups, adv):
        a = a.numpy()
        assert a.shape == (len(g),) and np.all(np.isfinite(a)) and np.all(np.abs(a) <= 5.0)
        g = np.asarray(g)
        if np.all(g == g[0]):
            assert np.all(a == 0)
        elif np.max(np.abs(g)) < 1e100:  # the direct formula where it cannot overflow
            direct = (g - g.mean()) / (g.std() + eps)
            assert np.allclose(a, np.clip(direct, -5, 5), rtol=1e-5, atol=1e-5)
        else:  # the rescaled form keeps the order of the rewards
            assert np.all(np.diff(a[np.argsort(g, kind="stable")]) >= -1e-6)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 64), st.integers(0, 64), st.integers(0, 64), st.integers(1, 64))
def test_refill_count_is_bounded_and_grows_with_the_gap(needed, sampled, useful, batch):
    useful = min(useful, sampled)
    k = refill_count(needed, sampled, useful, batch)
    assert 1 <= k <= batch
    assert refill_count(needed + 1, sampled, useful, batch) >= k
    if sampled and useful == sampled:
        assert k == min(batch, needed)  # everything informative: ask for exactly the gap


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.05, 15), st.integers(2, 12)), min_size=1, max_size=20), st.data())
def test_renormalised_weights_have_mean_one_over_trained_responses(rows, data):
    w, n = [a for a, _ in rows], [b for _, b in rows]
    slots = sorted(data.draw(st.sets(st.integers(0, len(rows) - 1), min_size=1)))
    out = renormalised_weights(w, n, slots)
    assert float(np.dot(out, np.asarray(n)[slots])) == pytest.approx(float(np.sum(np.asarray(n)[slots])))
    ratios = out / np.asarray(w)[slots]
    assert np.allclose(ratios, ratios[0])  # one common factor: the relative weights are kept


def test_informative_groups_are_those_with_a_gradient():
    groups = [[1, 1, 1], [0, 1], [0.0, 0.0], np.array([0.0, 0.0, 1.0]), [1.0]]
    keep = informative([np.asarray(g, dtype=float) for g in groups])
    assert keep.dtype == bool and keep.tolist() == [False, True, False, True, False]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from([0.0, 0.5, 1.0]), min_size=1, max_size=6), min_size=1, max_size=12))
def test_informative_is_exactly_a_non_zero_grpo_advantage(groups):
    """Dynamic sampling keeps a group iff GRPO gives it a gradient (some advantage ≠ 0)."""
    rewards = [np.asarray(g, dtype=float) for g in groups]
    adv = group_advantages(rewards, eps=1e-6, adv_clip=5.0)
    assert informative(rewards).tolist() == [bool(np.any(np.asarray(a) != 0)) for a in adv]


def test_trained_slots_and_batch_by_hand():
    rewards = [np.array([1.0, 1.0]), np.array([0.0, 1.0, 1.0]), np.array([0.0, 0.0]), np.array([1.0, 0.0])]
    assert trained_slots(rewards, False, 2) == [0, 1, 2, 3]
    assert trained_slots(rewards, True, 8) == [1, 3] and trained_slots(rewards, True, 1) == [1]
    sched = _schedule(adv_weights=[9.0, 2.0, 9.0, 1.0], rollouts=[2, 3, 2, 2], prompt_ids=[5, 6, 7, 8])
    by_slot = {i: prompt_rollouts(i, r, [i], [[7, i]] * len(r), [[-float(j), 0.5] for j in range(len(r))])
               for i, r in enumerate(rewards)}
    adv = [np.ones(len(r)) for r in rewards]
    batch = assemble_batch(sched, by_slot, adv, [1, 3], sampler_logprobs=True)
    # weights 2 and 1 over 3 + 2 responses: scaled by 5 / (2·3 + 1·2) = 5/8
    assert batch.advantages == pytest.approx([1.25] * 3 + [0.625] * 2)
    assert batch.signal_advantages == [1.0] * 5 and batch.prompt_index == [1, 1, 1, 3, 3]
    assert batch.group == [0, 0, 0, 1, 1] and batch.member == [0, 1, 2, 0, 1]
    assert batch.prompt_lengths == [1] * 5 and batch.response_lengths == [2] * 5
    # what a rank trains on: the token ids and the samplers' log-probs of its rows
    meta, per_rank = split_for_ranks(batch, 1, 1)
    rows, _ = materialise(meta, per_rank[0], range(len(batch)))
    assert [r.tolist() for r in rows["response_token_ids"]] == [[7, 1]] * 3 + [[7, 3]] * 2
    assert [lp.tolist() for lp in rows["old_logprobs"]] == [[0.0, 0.5], [-1.0, 0.5], [-2.0, 0.5], [0.0, 0.5],
                                                            [-1.0, 0.5]]
    on_policy = assemble_batch(sched, by_slot, adv, [1], sampler_logprobs=False)
    meta, per_rank = split_for_ranks(on_policy, 1, 1)
    assert per_rank[0] == {0: (by_slot[1].group, None)}  # an on-policy rank fetches no log-probs
    assert materialise(meta, per_rank[0], range(3))[0]["old_logprobs"] is None
    every = assemble_batch(sched, by_slot, adv, [0, 1, 2, 3], sampler_logprobs=False)
    assert every.advantages == [9.0] * 2 + [2.0] * 3 + [9.0] * 2 + [1.0] * 2  # nothing left out: as scheduled


def test_stale_rollouts_are_refused_and_sampled_again():
    tr = _Step("grpo.filter_all_equal=false", "cluster.off_policy=true", "cluster.max_staleness=1")
    sched = tr.adversary.schedule()
    tr.version, tr.pool = 3, FakePool(version=2)  # one version behind: allowed
    old = tr.first_round(sched)
    out, refused = tr.refuse_stale(sched, old, {})
    assert out is old and not refused
    tr.pool.version = 1  # two versions behind, and the pool now holds a fresh version
    old = tr.first_round(sched)
    tr.pool.version = 3
    t = {"sample": 1.0}
    out, refused = tr.refuse_stale(sched, old, t)
    assert refused and all(o.weights_version == 3 for o in out) and t["sample"] >= 1.0


def test_learn_fields_carry_the_ratio_statistics():
    ranks = [RankStats(ratio_mean=1.01, ratio_min=0.7, ratio_max=1.4, optimizer_steps=2, fetched_bytes=10 + r,
                       time_s=1.23456, cpu_s=0.5, phase_s={"forward": 0.2}, per_prompt_surrogate={0: 0.5, 2: -1.0},
                       updates=[UpdateStats(epoch=0, mini_batch=m, clip_frac=0.1 * m, ratio_mean=1.0, ratio_min=0.7,
                                            ratio_max=1.4, grad_norm=0.5, loss=0.1, tokens=9, skipped=False)
                                for m in (0, 1)]) for r in range(2)]
    learn = LearnStats.from_ranks(ranks, rollout_bytes=15)
    assert learn.surrogate(4) == [0.5, 0.0, -1.0, 0.0]  # a slot no rank trained: 0
    out = learn_fields(learn)
    assert out["rollout_bytes"] == 15 and out["rollout_bytes_per_rank"] == [10, 11]
    assert out["learner_time_s"] == [1.235, 1.235] and out["learner_phase_s"] == [{"forward": 0.2}] * 2
    assert out["ratio_max"] == 1.4 and out["optimizer_steps"] == 2
    assert [u["clip_frac"] for u in out["updates"]] == [0.0, 0.1] and "tokens" not in out["updates"][0]
    assert learn_fields(LearnStats())["updates"] == []


def test_informative_norm_rescales_weights_over_groups_with_an_advantage_only():
    """prompt_gdro.informative_norm: the all-fail group's weight 9 no longer holds the mean at 1."""
    sched = _schedule(adv_weights=[9.0, 0.5, 0.5], rollouts=[2, 2, 4], prompt_ids=[5, 6, 7])
    by_slot = {i: prompt_rollouts(i, [0.0] * n, [i], [[7]] * n, [[0.0]] * n) for i, n in enumerate([2, 2, 4])}
    adv = [np.zeros(2), np.array([1.0, -1.0]), np.array([1.0, -1.0, 1.0, -1.0])]
    plain = assemble_batch(sched, by_slot, adv, [0, 1, 2], sampler_logprobs=False)
    assert plain.advantages[2:] == pytest.approx([0.5, -0.5] + [0.5, -0.5] * 2)
    norm = assemble_batch(sched, by_slot, adv, [0, 1, 2], sampler_logprobs=False, informative_cap=15.0)
    assert norm.advantages == pytest.approx([0.0, 0.0] + [1.0, -1.0] + [1.0, -1.0] * 2)
    capped = assemble_batch(sched, by_slot, adv, [0, 1, 2], sampler_logprobs=False, informative_cap=0.8)
    assert max(abs(a) for a in capped.advantages) == pytest.approx(0.8)


def test_the_actor_observes_its_pending_schedule_by_step_and_refuses_another_step():
    tr = _Step()
    sched = tr.adversary.schedule()
    assert isinstance(sched, StepSchedule) and tr.adversary.schedule() is sched  # pending: the same object
    rewards = [[1.0] * int(n) for n in sched.rollouts]
    with pytest.raises(ValueError, match=r"^observe: results for step 1, the pending schedule is step 0$"):
        tr.adversary.observe(sched.step + 1, rewards, None, 1)
    assert tr.adversary.observe(sched.step, rewards, None, 1)["step"] == sched.step
    with pytest.raises(ValueError, match=r"the pending schedule is none$"):
        tr.adversary.observe(sched.step, rewards, None, 2)


def test_shards_carry_a_chat_rows_context_and_only_when_some_row_has_one():
    cfg = load_config(overrides=["sampler.shard_size=2"])
    context = [{"role": "system", "content": "S"}]
    train = [{"id": i, "prompt": f"p{i}", "answer": "1", **({"context": context} if i == 1 else {})} for i in range(4)]
    sched = StepSchedule(0, np.array([0, 1, 2, 3]), np.zeros(4, dtype=np.int64), np.array([2, 2, 2, 2]),
                         np.ones(4), np.ones(1))
    first, second = build_shards(cfg, train, sched)
    assert first.contexts == [None, context] and second.contexts is None
    assert first.model_inputs() == ["p0", [*context, {"role": "user", "content": "p1"}]]
