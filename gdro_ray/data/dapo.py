r"""DAPO-Math-17k loader: the hub set on a cluster, or a local file of the same schema.

Sources
- ``open-r1/DAPO-Math-17k-Processed`` (config ``en``, split ``train``, 14,116 rows) through
  ``datasets.load_dataset``: needs hub access. With ``HF_HUB_OFFLINE=1`` it fails at once with
  a `UserError` that says to pass a local file instead.
- A local ``.parquet``, ``.jsonl`` or ``.json`` (a list of rows, or ``{"data": [...]}``).
- ``dapo-fixture``: 20 rows in this schema bundled with the package (problems written for
  this project, integer answers), for tests and smoke runs.

Schema supported (the processed set's columns; extra columns are ignored)
- ``prompt``: the problem. A string (processed set) or a list of chat messages
  ``[{"role", "content"}]`` (the original ``BytedTsinghua-SIA/DAPO-Math-17k``; the first user
  message is used). Required.
- the answer: ``solution`` (string) when the column exists, else ``reward_model.ground_truth``
  (a struct with ``ground_truth`` and ``style``). One of the two is required.
- ``extra_info.index``: used as the id when every row has a distinct integer index; else the
  id is the 0-based row position (the processed set's indices are UUID strings).
- ``data_source``, ``source_prompt``, ``ability``: read by nobody here.

Prompt rewrite: DAPO wraps each problem in "Solve the following math problem step by step.
The last line of your response should be of the form Answer: $Answer ..." and "Remember to
put your answer on its own line after "Answer:"." That asks for an ``Answer:`` line, but the
reward reads ``\boxed{}``; so the wrapper is removed and ``DAPO_INSTRUCTION`` appended (unless
the prompt already mentions ``\boxed``).

Output: the shared contract ``{"id", "prompt", "answer", "tier": None, "source": "dapo"}``.
Bad input (missing, empty or unreadable file, missing column, a row without a prompt or an
answer) raises `DataError` naming the file, the row (counted from 1; the line of a .jsonl) and
the column. Nothing is cached here, so nothing can be half-written.
"""
from __future__ import annotations

import json
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

from gdro_ray.errors import DataError, UserError

DAPO_HUB_NAME = "open-r1/DAPO-Math-17k-Processed"
DAPO_HUB_CONFIG = "en"
FIXTURE_NAME = "dapo-fixture"
DAPO_INSTRUCTION = "Let's think step by step and output the final answer within \\boxed{}."
TABLE_SUFFIXES = (".parquet", ".jsonl", ".json")

_WRAP_HEAD = re.compile(r"^\s*Solve the following math problem step by step\..*?"
                        r"where \$Answer is the answer to the problem\.\s*", re.DOTALL)
_WRAP_TAIL = re.compile(r"\s*Remember to put your answer on its own line after \"Answer:\"\.?\s*$")


def fixture_path(suffix: str = ".jsonl") -> Path:
    """The bundled fixture (``.jsonl`` or ``.parquet``)."""
    return Path(str(resources.files("gdro_ray.data") / "fixtures" / f"dapo_math_sample{suffix}"))


def looks_like_path(source: str) -> bool:
    """A local file name (by suffix, or because it exists) rather than a hub dataset name."""
    return source.lower().endswith(TABLE_SUFFIXES) or Path(source).expanduser().exists()


# ---------------------------------------------------------------------------- file reading
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


# ---------------------------------------------------------------------------- row conversion
def _prompt_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # chat messages: the first user turn is the problem
        for msg in value:
            if isinstance(msg, dict) and msg.get("role", "user") == "user" and isinstance(msg.get("content"), str):
                return msg["content"]
    return None


def _answer_text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return str(value)
    return value if isinstance(value, str) else None


def boxed_prompt(problem: str) -> str:
    """The DAPO-style user message: the problem, then the \\boxed{} instruction."""
    problem = _WRAP_TAIL.sub("", _WRAP_HEAD.sub("", problem)).strip()
    if "\\boxed" in problem:
        return problem
    return f"{problem}\n\n{DAPO_INSTRUCTION}"


def _integer_ids(rows: list[tuple[int, dict]]) -> list[int] | None:
    """`extra_info.index` as ids when every row has a distinct integer one, else None."""
    ids = []
    for _, row in rows:
        info = row.get("extra_info")
        index = info.get("index") if isinstance(info, dict) else None
        if isinstance(index, bool):
            return None
        if isinstance(index, int):
            ids.append(index)
        elif isinstance(index, str) and index.strip().isdigit():
            ids.append(int(index))
        else:
            return None
    return ids if len(set(ids)) == len(ids) else None


def dapo_rows_to_examples(rows: list[tuple[int, dict]], where: str, source: str = "dapo") -> list[dict]:
    """Convert DAPO-schema rows to contract dicts; `where` names the file in errors."""
    first = rows[0][1]
    if "prompt" not in first:
        raise DataError(f"{where}: wrong schema: missing column 'prompt' (found: {', '.join(sorted(first)) or 'none'})")
    use_solution = "solution" in first
    if not use_solution and not isinstance(first.get("reward_model"), dict):
        raise DataError(f"{where}: wrong schema: missing column 'solution' (or 'reward_model.ground_truth'); "
                        f"found: {', '.join(sorted(first))}")
    answer_col = "solution" if use_solution else "reward_model.ground_truth"
    ids = _integer_ids(rows)
    out = []
    for pos, (row_no, row) in enumerate(rows):
        prompt = _prompt_text(row.get("prompt"))
        if prompt is None or not prompt.strip():
            raise DataError(f"{where}: row {row_no}: column 'prompt' is missing or empty")
        if use_solution:
            answer = _answer_text(row.get("solution"))
        else:
            reward = row.get("reward_model")
            answer = _answer_text(reward.get("ground_truth")) if isinstance(reward, dict) else None
        if answer is None or not answer.strip():
            raise DataError(f"{where}: row {row_no}: column '{answer_col}' is missing or empty")
        out.append({"id": ids[pos] if ids else pos, "prompt": boxed_prompt(prompt),
                    "answer": answer.strip(), "tier": None, "source": source})
    return out


def _load_hub(name: str) -> list[tuple[int, dict]]:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        raise UserError(f"dataset {name!r} needs the Hugging Face hub, which is offline here (HF_HUB_OFFLINE=1): "
                        f"download it where the hub is reachable and pass a local .parquet/.jsonl file instead")
    import datasets

    config = DAPO_HUB_CONFIG if name == DAPO_HUB_NAME else None
    try:
        table = datasets.load_dataset(name, config, split="train")
    except Exception as e:
        raise UserError(f"cannot load dataset {name!r} from the hub ({type(e).__name__}: {e}); "
                        f"pass a local .parquet/.jsonl file instead") from None
    return list(enumerate(table, start=1))


def load_dapo(source: str = DAPO_HUB_NAME, max_rows: int = 0) -> list[dict]:
    """DAPO examples from the hub name, ``dapo-fixture`` or a local file; first `max_rows` (0 = all)."""
    source = str(source)
    if source == FIXTURE_NAME:
        path: Path | None = fixture_path()
    elif looks_like_path(source):
        path = Path(source).expanduser()
    else:
        path = None
    rows = read_table_rows(path) if path is not None else _load_hub(source)
    if max_rows and max_rows > 0:
        rows = rows[:max_rows]
    if not rows:
        raise DataError(f"{path or source}: dataset is empty (no rows)")
    return dapo_rows_to_examples(rows, str(path or source))
