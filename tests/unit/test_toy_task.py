"""The toy reasoning task: determinism, stable ids, heavy tails, disjoint balanced splits."""
import itertools
from collections import Counter

import pytest

from gdro_ray.data import toy_task as T
from gdro_ray.errors import DataError


@pytest.fixture(scope="module")
def pool():
    return T.make_train_pool(14100, seed=0)


def test_pool_is_a_pure_function_of_seed_and_size(pool):
    assert T.make_train_pool(14100, seed=0) == pool
    other = T.make_train_pool(14100, seed=1)
    assert [e["prompt"] for e in other] != [e["prompt"] for e in pool]


def test_ids_are_indices_and_contract_fields(pool):
    assert [e["id"] for e in pool] == list(range(len(pool)))
    for e in pool[:500]:
        assert set(e) == {"id", "prompt", "problem", "answer", "tier", "source"}
        assert e["source"] == "toy" and 0 <= e["tier"] < T.NUM_TIERS
        assert e["prompt"].endswith("Put the final answer in \\boxed{}.")
        assert str(int(e["answer"])) == e["answer"]


def test_answers_are_correct(pool):
    for e in pool[:2000]:
        assert eval(T.expression_of(e["prompt"])) == int(e["answer"])


def test_prompts_unique_and_shares_heavy_tailed(pool):
    assert len({e["prompt"] for e in pool}) == len(pool)
    counts = Counter(e["tier"] for e in pool)
    assert [counts[t] for t in range(T.NUM_TIERS)] == T.tier_counts(14100)
    shares = [counts[t] / len(pool) for t in range(T.NUM_TIERS)]
    assert all(abs(s - want) < 1e-3 for s, want in zip(shares, T.TIER_SHARES))
    assert all(a > b for a, b in itertools.pairwise(shares))  # monotone: most prompts easy
    # the shuffle spreads tiers: a prefix has roughly the same mix
    head = Counter(e["tier"] for e in pool[:1000])
    assert abs(head[0] / 1000 - T.TIER_SHARES[0]) < 0.06


def test_tier_counts_sum_exactly():
    for size in (0, 1, 7, 100, 14100, 14101):
        assert sum(T.tier_counts(size)) == size


def test_eval_split_balanced_and_disjoint(pool):
    ev = T.make_eval_split(per_tier=40, seed=0)
    assert Counter(e["tier"] for e in ev) == {t: 40 for t in range(T.NUM_TIERS)}
    assert [e["id"] for e in ev] == list(range(len(ev)))
    assert len({e["prompt"] for e in ev}) == len(ev)
    train_prompts = {e["prompt"] for e in pool} | {e["prompt"] for e in T.make_train_pool(3000, seed=5)}
    assert not train_prompts & {e["prompt"] for e in ev}
    assert T.make_eval_split(per_tier=40, seed=0) == ev


def test_sft_set_disjoint_from_pool_and_eval(pool):
    sft = T.make_sft_set([50] * T.NUM_TIERS, seed=3)
    assert Counter(e["tier"] for e in sft) == {t: 50 for t in range(T.NUM_TIERS)}
    sft_prompts = {e["prompt"] for e in sft}
    assert not sft_prompts & {e["prompt"] for e in pool}
    assert not sft_prompts & {e["prompt"] for e in T.make_eval_split(40, seed=0)}


def test_tier_constraints_hold(pool):
    by_tier = {t: [T.expression_of(e["prompt"]) for e in pool if e["tier"] == t][:300] for t in range(T.NUM_TIERS)}
    assert T.TIER_NAMES == ("add3", "add_carry", "sub3", "sub_borrow", "carry_out", "sub_neg")
    for expr in by_tier[0]:
        a, b = expr.split("+")
        assert len(a) == len(b) == 3 and all(int(x) + int(y) <= 9 for x, y in zip(a, b))
    for expr in by_tier[1]:
        a, b = expr.split("+")
        assert any(int(x) + int(y) > 9 for x, y in zip(a, b)) and int(a) + int(b) < 1000
    for expr in by_tier[2]:
        a, b = expr.split("-")
        assert len(a) == len(b) == 3 and all(int(x) >= int(y) for x, y in zip(a, b))
    for expr in by_tier[3]:
        a, b = expr.split("-")
        assert int(a) > int(b) and any(int(x) < int(y) for x, y in zip(a, b))
    for expr in by_tier[4]:
        a, b = expr.split("+")
        assert len(a) == len(b) == 3 and int(a) + int(b) >= 1000
    for expr in by_tier[5]:
        a, b = expr.split("-")
        assert len(a) == len(b) == 3 and int(a) < int(b)


def test_slip_changes_only_the_last_digit():
    for value in (0, 7, 9, 10, 598, 599, 1203, -347, -349):
        wrong = T.slip(value)
        assert wrong != value and (wrong < 0) == (value < 0)
        assert str(abs(wrong))[:-1] == str(abs(value))[:-1]
        assert int(str(abs(wrong))[-1]) == (int(str(abs(value))[-1]) + 1) % 10


def test_sft_right_rate_sets_the_shown_answer_per_tier():
    rates = (1.0, 0.0, 0.5, 0.5, 0.1, 0.9)
    sft = T.make_sft_set([400] * T.NUM_TIERS, seed=1, right_rate=rates)
    assert sft == T.make_sft_set([400] * T.NUM_TIERS, seed=1, right_rate=rates)  # deterministic
    for t, rate in enumerate(rates):
        rows = [e for e in sft if e["tier"] == t]
        right = sum(e["shown"] == e["answer"] for e in rows) / len(rows)
        assert abs(right - rate) < 0.08
        for e in rows:
            assert e["shown"] in (e["answer"], str(T.slip(int(e["answer"]))))
            target = T.format_target(e)
            assert T.integer_reward(target, e["answer"]) == float(e["shown"] == e["answer"])
    assert all("shown" not in e for e in T.make_sft_set([5] * T.NUM_TIERS, seed=1))


def test_targets_short_and_self_consistent(pool):
    for e in pool[:3000]:
        target = T.format_target(e)
        assert len(target) <= 24  # plus <|im_end|> fits the toy preset's max_new_tokens=28
        assert T.integer_reward(target, e["answer"]) == 1.0
        assert target.startswith(T.expression_of(e["prompt"]) + "=")


@pytest.mark.parametrize(
    "response,answer,want",
    [
        ("1+2=3\\boxed{3}", "3", 1.0),
        ("\\boxed{4} then \\boxed{3}", "3", 1.0),
        ("\\boxed{3} then \\boxed{4}", "3", 0.0),
        ("3", "3", 0.0),
        ("\\boxed{ 42 }", "42", 1.0),
        ("\\boxed{042}", "42", 1.0),
        ("\\boxed{4.2}", "42", 0.0),
        ("\\boxed{}", "0", 0.0),
        ("\\boxed{" + "9" * 5000 + "}", "9", 0.0),
    ],
)
def test_integer_reward(response, answer, want):
    assert T.integer_reward(response, answer) == want


def test_eval_split_holds_200_per_tier():
    ev = T.make_eval_split(per_tier=200, seed=0)
    assert len({e["prompt"] for e in ev}) == 200 * T.NUM_TIERS


def test_exhausted_bucket_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(T, "_EVAL_CUT", 0)  # an empty eval bucket: every tier runs out at once
    with pytest.raises(DataError, match="tier 0"):
        T.make_eval_split(per_tier=1, seed=0)
