r"""Evaluation and training sets by name or path, all as contract dicts.

``load_eval_set(name_or_path)``:
- ``toy``: the toy task's held-out split, balanced across tiers (`toy_task.make_eval_split`).
- ``champ``: the 270 CHAMP problems (`champ.load_champ`).
- ``dapo-fixture``: the bundled 20-row DAPO-schema sample.
- a local ``.jsonl`` / ``.json`` / ``.parquet`` file:
  - in the DAPO schema (a ``prompt`` column plus ``solution`` or ``reward_model``) -> the DAPO
    loader;
  - otherwise MATH-500 / AIME style: the problem in ``problem`` (or ``question``), the answer in
    ``answer`` (or ``solution``, MATH-500's answer-only files); optional integer ``id`` column
    (used when every row has a distinct one, else the 0-based row position); optional
    ``level`` (MATH-500's 1..5) or ``tier`` becomes the tier. The prompt gets the ``\boxed{}``
    instruction; ``source`` is the file's stem (``math500.jsonl`` -> ``math500``).

``load_train_set(name_or_path)``: ``toy`` (the 14,100-prompt pool, `toy_task.make_train_pool`),
``dapo`` (the hub set, cluster only), ``dapo-fixture``, or a local file as above.

Bad input raises `DataError` naming the file, row (from 1) and column; an unknown name raises
`DataError` listing the names accepted. The toy task is imported only when asked for.
"""
from __future__ import annotations

from pathlib import Path

from gdro_ray.data import dapo
from gdro_ray.errors import DataError

EVAL_NAMES = ("toy", "champ", "dapo-fixture")
TRAIN_NAMES = ("toy", "dapo", "dapo-fixture")
_PROBLEM_COLUMNS = ("problem", "question")
_ANSWER_COLUMNS = ("answer", "solution")


def _is_dapo_schema(first_row: dict) -> bool:
    return "prompt" in first_row and ("solution" in first_row or isinstance(first_row.get("reward_model"), dict))


def _int_or_none(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _problem_rows_to_examples(rows: list[tuple[int, dict]], path: Path) -> list[dict]:
    first = rows[0][1]
    problem_col = next((c for c in _PROBLEM_COLUMNS if c in first), None)
    answer_col = next((c for c in _ANSWER_COLUMNS if c in first), None)
    found = ", ".join(sorted(first)) or "none"
    if problem_col is None:
        raise DataError(f"{path}: wrong schema: missing column 'problem' (or 'question'); found: {found}")
    if answer_col is None:
        raise DataError(f"{path}: wrong schema: missing column 'answer'; found: {found}")
    ids = [_int_or_none(row.get("id")) for _, row in rows]
    use_ids = all(i is not None for i in ids) and len(set(ids)) == len(ids)
    tier_col = "level" if "level" in first else ("tier" if "tier" in first else None)
    out = []
    for pos, (row_no, row) in enumerate(rows):
        problem, answer = row.get(problem_col), row.get(answer_col)
        if not isinstance(problem, str) or not problem.strip():
            raise DataError(f"{path}: row {row_no}: column '{problem_col}' is missing or empty")
        if isinstance(answer, (int, float)) and not isinstance(answer, bool):
            answer = str(answer)
        if not isinstance(answer, str) or not answer.strip():
            raise DataError(f"{path}: row {row_no}: column '{answer_col}' is missing or empty")
        tier = None
        if tier_col is not None and row.get(tier_col) is not None:
            tier = _int_or_none(row[tier_col])
            if tier is None:
                raise DataError(f"{path}: row {row_no}: column '{tier_col}' must be an integer, got {row[tier_col]!r}")
        out.append({"id": ids[pos] if use_ids else pos, "prompt": dapo.boxed_prompt(problem),
                    "answer": answer.strip(), "tier": tier, "source": path.stem})
    return out


def load_table_file(path: str | Path) -> list[dict]:
    """A local file in the DAPO schema or the MATH-500/AIME schema (detected from row 1)."""
    path = Path(path).expanduser()
    rows = dapo.read_table_rows(path)
    if _is_dapo_schema(rows[0][1]):
        return dapo.dapo_rows_to_examples(rows, str(path))
    return _problem_rows_to_examples(rows, path)


def _unknown(kind: str, name: str, names: tuple[str, ...]) -> DataError:
    return DataError(f"unknown {kind} set {name!r}: use one of {', '.join(names)} "
                     f"or a .jsonl/.json/.parquet file path")


def load_eval_set(name_or_path: str | Path) -> list[dict]:
    """An evaluation set by name (toy, champ, dapo-fixture) or local file."""
    name = str(name_or_path)
    if name == "toy":
        from gdro_ray.data.toy_task import make_eval_split

        return make_eval_split()
    if name == "champ":
        from gdro_ray.data.champ import load_champ

        return load_champ()
    if name == dapo.FIXTURE_NAME:
        return dapo.load_dapo(dapo.FIXTURE_NAME)
    if dapo.looks_like_path(name):
        return load_table_file(name)
    raise _unknown("evaluation", name, EVAL_NAMES)


def load_train_set(name_or_path: str | Path) -> list[dict]:
    """A training set by name (toy, dapo, dapo-fixture), hub id of a DAPO-schema set, or file."""
    name = str(name_or_path)
    if name == "toy":
        from gdro_ray.data.toy_task import make_train_pool

        return make_train_pool()
    if name == "dapo":
        return dapo.load_dapo(dapo.DAPO_HUB_NAME)
    if name == dapo.FIXTURE_NAME:
        return dapo.load_dapo(dapo.FIXTURE_NAME)
    if dapo.looks_like_path(name):
        return load_table_file(name)
    if "/" in name:  # an owner/name hub id in the DAPO schema (needs the hub)
        return dapo.load_dapo(name)
    raise _unknown("training", name, TRAIN_NAMES)


def spread_subset(examples: list[dict], m: int) -> list[dict]:
    """`m` examples spread evenly over the list (all of them when m is 0 or ≥ the length).

    Evenly spaced rather than the first m, so a set ordered by tier keeps every tier.
    """
    if m <= 0 or len(examples) <= m:
        return list(examples)
    step = len(examples) / m
    return [examples[int(i * step)] for i in range(m)]

