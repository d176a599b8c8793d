"""DAPO, CHAMP and eval-set loaders: schema, stable ids, and bad input naming file/row/column."""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gdro_ray.data import dapo
from gdro_ray.data.champ import CHAMP_CATEGORIES, load_champ
from gdro_ray.data.eval_sets import load_eval_set, load_train_set
from gdro_ray.errors import DataError, UserError
from gdro_ray.rewards.math_reward import math_reward

CONTRACT_KEYS = {"id", "prompt", "problem", "answer", "tier", "source"}


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _dapo_row(problem: str = "What is $2+3$?", answer: str | None = "5", **extra) -> dict:
    row = {"prompt": problem, "data_source": "math_dapo", "ability": "MATH",
           "reward_model": {"ground_truth": answer, "style": "rule"}, "extra_info": {"index": "abc"}}
    if answer is not None:
        row["solution"] = answer
    row.update(extra)
    return row


# ---------------------------------------------------------------------------- DAPO fixture
def test_fixture_jsonl_and_parquet_agree_with_stable_ids():
    from_jsonl = dapo.load_dapo("dapo-fixture")
    from_parquet = dapo.load_dapo(str(dapo.fixture_path(".parquet")))
    assert len(from_jsonl) == 20
    assert from_jsonl == from_parquet
    assert [e["id"] for e in from_jsonl] == list(range(20))
    assert dapo.load_dapo("dapo-fixture") == from_jsonl  # stable across calls
    for e in from_jsonl:
        assert set(e) == CONTRACT_KEYS | {"metadata"} and e["source"] == "dapo" and e["tier"] is None
        assert re.fullmatch(r"-?\d+", e["answer"])
        assert e["prompt"].endswith(dapo.DAPO_INSTRUCTION)
        assert "Answer:" not in e["prompt"]          # DAPO's "Answer:" wrapper was removed
        assert math_reward(f"so \\boxed{{{e['answer']}}}", e["answer"]) == 1.0


def test_max_rows_keeps_a_prefix():
    assert dapo.load_dapo("dapo-fixture", max_rows=5) == dapo.load_dapo("dapo-fixture")[:5]


def test_reward_model_schema_chat_prompt_and_integer_index(tmp_path):
    rows = []
    for i, answer in enumerate(["7", "12"]):
        row = _dapo_row(answer=answer, extra_info={"index": str(100 + i)})
        del row["solution"]
        row["prompt"] = [{"role": "user", "content": f"Problem {i}: compute it."}]
        rows.append(row)
    got = dapo.load_dapo(str(_write_jsonl(tmp_path / "orig.jsonl", rows)))
    assert [e["id"] for e in got] == [100, 101]
    assert [e["answer"] for e in got] == ["7", "12"]
    assert got[0]["prompt"].startswith("Problem 0: compute it.")


def test_prompt_with_boxed_instruction_is_kept(tmp_path):
    path = _write_jsonl(tmp_path / "boxed.jsonl", [_dapo_row("Find $x$. Put it in \\boxed{}.")])
    assert dapo.load_dapo(str(path))[0]["prompt"] == "Find $x$. Put it in \\boxed{}."


# ---------------------------------------------------------------------------- bad input
def test_missing_file(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DataError, match=re.escape(str(missing))):
        dapo.load_dapo(str(missing))


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_empty_file(tmp_path, suffix):
    path = tmp_path / f"empty{suffix}"
    if suffix == ".parquet":
        pq.write_table(pa.table({"prompt": pa.array([], pa.string()), "solution": pa.array([], pa.string())}), path)
    elif suffix == ".json":
        path.write_text("[]")
    else:
        path.write_text("\n")
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}.*empty"):
        dapo.load_dapo(str(path))


def test_wrong_schema_names_the_column(tmp_path):
    path = _write_jsonl(tmp_path / "wrong.jsonl", [{"question": "q", "solution": "1"}])
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}.*'prompt'"):
        dapo.load_dapo(str(path))
    path = _write_jsonl(tmp_path / "noanswer.jsonl", [{"prompt": "q", "extra": 1}])
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}.*'solution'"):
        dapo.load_dapo(str(path))


def test_row_without_answer_or_prompt_names_row_and_column(tmp_path):
    rows = [_dapo_row(), _dapo_row(), _dapo_row(answer=None)]
    path = _write_jsonl(tmp_path / "rows.jsonl", rows)
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: row 3: column 'solution'"):
        dapo.load_dapo(str(path))
    rows = [_dapo_row(), _dapo_row(problem="   ")]
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: row 2: column 'prompt'"):
        dapo.load_dapo(str(path))


def test_bad_json_line_and_corrupt_parquet(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(_dapo_row()) + "\n{not json\n")
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: row 2: not valid JSON"):
        dapo.load_dapo(str(path))
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match=re.escape(str(path))):
        dapo.load_dapo(str(path))


def test_hub_offline_is_a_clear_user_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="offline.*local"):
        dapo.load_dapo(dapo.DAPO_HUB_NAME)
    with pytest.raises(UserError, match="offline"):
        load_train_set("dapo")


# ---------------------------------------------------------------------------- CHAMP
def test_champ_loads_270_with_answers_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("GDRO_RAY_CACHE", str(tmp_path))
    champ = load_champ()
    assert len(champ) == 270
    assert [e["id"] for e in champ] == list(range(270))
    assert all(e["answer"].strip() and e["source"] == "champ" for e in champ)
    assert all(e["prompt"].endswith(dapo.DAPO_INSTRUCTION) for e in champ)
    per_tier = Counter(CHAMP_CATEGORIES[e["tier"]] for e in champ)
    assert per_tier == {"Number-Theory": 80, "Inequality": 50, "Polynomial": 50, "Sequence": 50,
                        "Combinatorics": 40}
    cache = tmp_path / "data" / "champ-v0.json"
    assert cache.is_file()
    assert load_champ() == champ          # from the cache
    cache.write_text("{corrupt")
    assert load_champ() == champ          # a corrupt cache is rebuilt
    assert json.loads(cache.read_text())["rows"][0]["answer"] == champ[0]["answer"]


# ---------------------------------------------------------------------------- eval sets
def test_math500_style_jsonl(tmp_path):
    rows = [{"problem": "Compute $1+1$.", "answer": "2", "level": 1, "subject": "Algebra", "unique_id": "a"},
            {"problem": "Simplify $\\frac{2}{4}$.", "answer": "\\frac{1}{2}", "level": 3, "unique_id": "b"},
            {"problem": "What is $3^2$?", "answer": 9, "level": 2, "unique_id": "c"}]
    path = _write_jsonl(tmp_path / "math500.jsonl", rows)
    got = load_eval_set(str(path))
    assert [e["id"] for e in got] == [0, 1, 2]
    assert [e["tier"] for e in got] == [1, 3, 2]
    assert [e["answer"] for e in got] == ["2", "\\frac{1}{2}", "9"]
    assert {e["source"] for e in got} == {"math500"}
    assert all(e["prompt"].endswith(dapo.DAPO_INSTRUCTION) for e in got)
    assert math_reward("\\boxed{0.5}", got[1]["answer"]) == 1.0


def test_aime_style_json_uses_integer_ids(tmp_path):
    path = tmp_path / "aime.json"
    path.write_text(json.dumps([{"id": 60, "question": "Find N.", "answer": "204"},
                                {"id": 61, "question": "Find M.", "answer": "25"}]))
    got = load_eval_set(str(path))
    assert [e["id"] for e in got] == [60, 61] and [e["tier"] for e in got] == [None, None]


def test_eval_set_bad_input(tmp_path):
    path = _write_jsonl(tmp_path / "x.jsonl", [{"problem": "p"}])
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}.*'answer'"):
        load_eval_set(str(path))
    path = _write_jsonl(tmp_path / "y.jsonl", [{"problem": "p", "answer": "1"}, {"problem": "q", "answer": ""}])
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: row 2: column 'answer'"):
        load_eval_set(str(path))
    with pytest.raises(DataError, match="unknown evaluation set"):
        load_eval_set("no-such-set")
    with pytest.raises(DataError, match="not found"):
        load_eval_set(str(tmp_path / "missing.parquet"))


def test_named_sets():
    assert load_eval_set("dapo-fixture") == dapo.load_dapo("dapo-fixture")
    assert load_train_set("dapo-fixture") == dapo.load_dapo("dapo-fixture")
    # A DAPO-schema file given as a path goes through the DAPO loader.
    assert load_eval_set(str(dapo.fixture_path(".parquet"))) == dapo.load_dapo("dapo-fixture")
    toy = load_eval_set("toy")
    assert toy and all(e["tier"] is not None for e in toy)
    assert len(load_train_set("toy")) == 14100


@given(n=st.integers(0, 300), m=st.integers(0, 400))
def test_spread_subset_size_order_and_tier_balance(n, m):
    from gdro_ray.data.eval_sets import spread_subset

    items = [{"id": i, "tier": i * 6 // max(n, 1)} for i in range(n)]  # tier-ordered, 6 tiers
    out = spread_subset(items, m)
    assert len(out) == (n if m == 0 or m >= n else m)
    ids = [e["id"] for e in out]
    assert ids == sorted(set(ids))  # distinct, in the original order
    sizes = Counter(e["tier"] for e in items)
    if 0 < m < n and min(sizes.values()) > n / m + 1:  # a tier longer than the stride always gets a pick
        assert {e["tier"] for e in out} == set(sizes)
