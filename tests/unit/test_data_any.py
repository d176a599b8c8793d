"""Any dataset through `datasets`: named columns, files, folders, saved datasets, and bad input
named by file, row and column (all data written by the tests; no hub)."""
from __future__ import annotations

import json
import re

import pytest

from gdro_ray.config import load_config
from gdro_ray.data.eval_sets import load_eval_set, load_train_set
from gdro_ray.data.table import DAPO_INSTRUCTION, Columns, load_examples
from gdro_ray.errors import DataError, UserError

ROWS = [{"q": "Add 2 and 3.", "sol": {"value": 5}, "difficulty": "easy", "uid": "a1", "topic": "arith"},
        {"q": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Find $x$: $2x=8$."}],
         "sol": {"value": "4"}, "difficulty": "hard", "uid": "a2", "topic": "algebra"},
        {"q": "Compute 7*6; put it in \\boxed{}.", "sol": {"value": "42"}, "difficulty": 3, "uid": 17, "topic": "arith"}]
COLS = Columns(prompt="q", answer="sol.value", tier="difficulty", id="uid")


def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_named_columns_nested_answer_chat_prompt_string_tiers_and_metadata(tmp_path):
    got = load_examples(str(_jsonl(tmp_path / "mine.jsonl", ROWS)), COLS)
    assert [e["answer"] for e in got] == ["5", "4", "42"]
    assert [e["tier"] for e in got] == ["easy", "hard", 3]
    assert [e["id"] for e in got] == ["a1", "a2", 17]
    assert got[0]["prompt"] == f"Add 2 and 3.\n\n{DAPO_INSTRUCTION}"
    assert got[1]["prompt"].startswith("Find $x$") and got[2]["prompt"] == ROWS[2]["q"]  # boxed: kept as is
    assert got[0]["metadata"] == {"topic": "arith"} and {e["source"] for e in got} == {"mine"}
    assert "context" not in got[0] and got[1]["context"] == [{"role": "system", "content": "be brief"}]


def test_chat_rows_are_kept_as_given_up_to_the_last_user_turn(tmp_path):
    shot = [{"role": "user", "content": "Add 1 and 1."}, {"role": "assistant", "content": "\\boxed{2}"}]
    rows = [{"q": [{"role": "system", "content": "S"}, *shot, {"role": "user", "content": "Add 2 and 2."},
                   {"role": "assistant", "content": "the reference solution: 4"}], "a": "4"},
            {"q": [{"role": "user", "content": "Add 3 and 3."}], "a": "6"},
            {"q": [{"role": "system", "content": "only a system turn"}], "a": "1"}]
    path = _jsonl(tmp_path / "chat.jsonl", rows)
    got = load_examples(str(path), Columns(prompt="q", answer="a"), max_rows=2)
    assert got[0]["problem"] == "Add 2 and 2." and got[0]["prompt"] == f"Add 2 and 2.\n\n{DAPO_INSTRUCTION}"
    assert got[0]["context"] == [{"role": "system", "content": "S"}, *shot]  # the trailing answer is dropped
    assert "context" not in got[1] and got[1]["problem"] == "Add 3 and 3."  # one user turn: as a string prompt
    with pytest.raises(DataError, match=r"chat.jsonl: row 3: column 'q' is missing or empty \(a string, or chat"):
        load_examples(str(path), Columns(prompt="q", answer="a"))


def test_folder_of_parquet_files_by_split_through_datasets(tmp_path):
    folder = tmp_path / "myset"
    rows = [{"problem": f"p{i}", "answer": str(i), "level": i % 3} for i in range(6)]
    _parquet(folder / "train-00000-of-00002.parquet", rows[:2])
    _parquet(folder / "train-00001-of-00002.parquet", rows[2:4])
    _parquet(folder / "test-00000-of-00001.parquet", rows[4:])
    train = load_train_set(str(folder))
    assert [e["answer"] for e in train] == ["0", "1", "2", "3"] and [e["tier"] for e in train] == [0, 1, 2, 0]
    assert [e["id"] for e in train] == [0, 1, 2, 3] and train[0]["source"] == "myset"
    test = load_eval_set(str(folder), Columns(split="test"))
    assert [e["answer"] for e in test] == ["4", "5"]
    # a folder without split names: every file; a missing answer names that file, its row and the column
    flat = tmp_path / "flat"
    _jsonl(flat / "a.jsonl", rows[:2])
    _jsonl(flat / "b.jsonl", [rows[2], {"problem": "q", "answer": ""}])
    with pytest.raises(DataError, match=rf"^{re.escape(str(flat / 'b.jsonl'))}: row 2: column 'answer' is missing"):
        load_train_set(str(flat))


def test_saved_dataset_dict_and_arrow_file(tmp_path):
    import datasets

    typed = [{"q": "Add 2 and 3.", "sol": {"value": "5"}, "difficulty": "easy", "uid": "a1"},
             {"q": "Compute 7*6.", "sol": {"value": "42"}, "difficulty": "3", "uid": "17"}]  # arrow: one type per column
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(typed),
                               "validation": datasets.Dataset.from_list(typed[:1])})
    dd.save_to_disk(str(tmp_path / "saved"))
    got = load_examples(str(tmp_path / "saved"), COLS)
    assert [e["answer"] for e in got] == ["5", "42"] and [e["tier"] for e in got] == ["easy", 3]
    assert [e["id"] for e in got] == ["a1", 17]
    val = load_examples(str(tmp_path / "saved"), Columns(**{**COLS.__dict__, "split": "validation"}))
    assert [e["id"] for e in val] == ["a1"]
    with pytest.raises(DataError, match=r"no split 'test' \(found: train, validation\)"):
        load_examples(str(tmp_path / "saved"), Columns(**{**COLS.__dict__, "split": "test"}))
    arrow = next((tmp_path / "saved" / "train").glob("*.arrow"))
    assert [e["answer"] for e in load_examples(str(arrow), COLS)] == ["5", "42"]


def test_bad_input_is_one_line_naming_file_row_and_column(tmp_path):
    path = _jsonl(tmp_path / "x.jsonl", ROWS)
    where = re.escape(str(path))
    cases = [(Columns(prompt="question", answer="sol.value"), rf"^{where}: row 1: missing column 'question' \(data.prompt_key\)"),
             (Columns(prompt="q", answer="sol.answer"), rf"^{where}: row 1: missing column 'sol.answer' \(data.answer_key\)"),
             (Columns(prompt="q", answer="sol.value", tier="level"), rf"^{where}: row 1: missing column 'level'")]
    for cols, pattern in cases:
        with pytest.raises(DataError, match=pattern):
            load_examples(str(path), cols)
    no_answer = _jsonl(tmp_path / "y.jsonl", [ROWS[0], {**ROWS[1], "sol": {"value": None}}])
    with pytest.raises(DataError, match=rf"^{re.escape(str(no_answer))}: row 2: column 'sol.value' is missing or empty$"):
        load_examples(str(no_answer), COLS)
    dup = _jsonl(tmp_path / "d.jsonl", [ROWS[0], ROWS[1], {**ROWS[2], "uid": "a1"}])
    with pytest.raises(DataError, match=r"row 3: column 'uid' repeats id 'a1' \(first at row 1\)"):
        load_examples(str(dup), COLS)
    bad_tier = _jsonl(tmp_path / "t.jsonl", [{**ROWS[0], "difficulty": [1, 2]}])
    with pytest.raises(DataError, match=r"row 1: column 'difficulty' must be an integer or a string"):
        load_examples(str(bad_tier), COLS)
    empty = tmp_path / "empty"
    _parquet(empty / "train.parquet", [])
    with pytest.raises(DataError, match=r"empty"):
        load_examples(str(empty))
    with pytest.raises(DataError, match=r"no \.parquet/\.jsonl/\.json/\.arrow files"):
        (tmp_path / "nothing").mkdir()
        load_examples(str(tmp_path / "nothing"))
    for err in (DataError, UserError):
        assert issubclass(DataError, err)


def test_hub_name_offline_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match=r"^dataset 'someone/some-set' needs the Hugging Face hub, which is offline"):
        load_train_set("someone/some-set")
    with pytest.raises(UserError, match="offline"):
        load_eval_set("someone/some-set", Columns(split="test"))


def test_config_keys_reach_the_loaders(tmp_path):
    from gdro_ray.service.user_extensions import data_columns

    folder = tmp_path / "cfgset"
    _jsonl(folder / "train.jsonl", ROWS)
    _jsonl(folder / "test.jsonl", ROWS[:2])
    cfg = load_config(overrides=[f"data.train={folder}", f"data.eval={folder}", "data.prompt_key=q",
                                 "data.answer_key=sol.value", "data.tier_key=difficulty", "data.eval_prompt_key=q",
                                 "data.eval_answer_key=sol.value", "data.eval_id_key=uid", "data.eval_split=test"])
    train_cols, eval_cols = data_columns(cfg)
    train, held_out = load_train_set(cfg.data.train, train_cols), load_eval_set(cfg.data.eval, eval_cols)
    assert len(train) == 3 and [e["tier"] for e in train] == ["easy", "hard", 3] and train[0]["id"] == 0
    assert [e["id"] for e in held_out] == ["a1", "a2"] and held_out[0]["tier"] is None
    with pytest.raises(UserError, match=r"^data.answer_key: must be a column name"):
        load_config(overrides=["data.answer_key=sol..value"])
    with pytest.raises(UserError, match=r"^data.train: .*not found"):
        load_config(overrides=[f"data.train={tmp_path}/missing.parquet"])
    with pytest.raises(UserError, match=r"^data.eval: folder .*nodir not found"):
        load_config(overrides=[f"data.eval={tmp_path}/nodir/"])
    assert load_config(overrides=["data.train=owner/name"]).data.train == "owner/name"  # checked at start


def test_string_tiers_in_evaluation_report():
    from gdro_ray.eval.evaluate import aggregate

    examples = [{"id": i, "tier": t, "source": "s", "prompt": "p", "answer": "1"}
                for i, t in enumerate(["easy", "easy", "hard", 2])]
    res = aggregate(examples, [[True, False], [True, True], [False, False], [True, False]], k=2)
    assert set(res["per_tier"]) == {"easy", "hard", "2"}
    assert res["worst_tier"]["tier"] == "hard" and res["per_tier"]["easy"]["pass_at_k"] == 1.0
