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
        assert set(e) == {"id", "prompt", "answer", "tier", "source"}
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
    assert T.TIER_NAMES == ("add3", "add_carry", "sub3", "sub_borrow", "chain", "mul")
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
        a, rest = expr.split("+")
        b, c = rest.split("-")
        assert len(a) == 2 and len(b) == len(c) == 1
    orders = set()
    for expr in by_tier[5]:
        x, y = expr.split("*")
        assert sorted((len(x), len(y))) == [1, 2] and int(min(x, y, key=len)) >= 2
        orders.add(len(x))
    assert orders == {1, 2}  # both operand orders occur


def test_targets_short_and_self_consistent(pool):
    for e in pool[:3000]:
        target = T.format_target(e)
        assert len(target) <= 23  # plus <|im_end|> fits max_new_tokens=24
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


def test_too_large_pool_is_a_clear_error():
    with pytest.raises(DataError, match="tier 5"):
        T.make_eval_split(per_tier=100, seed=0)  # the mul tier has ~70 eval questions
