"""Direct readers for one local table file: .jsonl (rows numbered by line), .json (a list of
rows, or ``{"data": [...]}``) and .parquet.

Kept apart from the loaders (`table.py`, `dapo.py`) because both use them: a reader knows file
formats, not schemas. Every failure is a `DataError` naming the file (and the row for a bad line).
"""
from __future__ import annotations

import json
from pathlib import Path

from gdro_ray.errors import DataError

TABLE_SUFFIXES = (".parquet", ".jsonl", ".json")
DATA_SUFFIXES = TABLE_SUFFIXES + (".arrow",)


def read_table_rows(path: str | Path) -> list[tuple[int, dict]]:
    """(row number from 1, row dict) for each row of a .jsonl/.json/.parquet file.

    Raises DataError when the file is missing, unreadable, of another format, or empty."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: dataset file not found")
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DataError(f"{path}: unsupported dataset format {suffix!r} (use .parquet, .jsonl or .json)")
    if suffix == ".jsonl":
        rows = _read_jsonl(path)
    elif suffix == ".json":
        rows = _read_json(path)
    else:
        rows = _read_parquet(path)
    if not rows:
        raise DataError(f"{path}: dataset file is empty (no rows)")
    return rows


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read dataset file ({e})") from None
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: row {line_no}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}: row {line_no}: expected a JSON object, got {type(row).__name__}")
        rows.append((line_no, row))
    return rows


def _read_json(path: Path) -> list[tuple[int, dict]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: cannot read dataset file as JSON ({e})") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of rows (or {{\"data\": [...]}})")
    for i, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            raise DataError(f"{path}: row {i}: expected a JSON object, got {type(row).__name__}")
    return list(enumerate(data, start=1))


def _read_parquet(path: Path) -> list[tuple[int, dict]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a corrupt or foreign file
        raise DataError(f"{path}: cannot read dataset file as parquet ({type(e).__name__}: {e})") from None
    return list(enumerate(table.to_pylist(), start=1))
