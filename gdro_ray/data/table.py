r"""Any dataset as prompts: a hub name, a local file or a local folder, with named columns.

Sources (`load_rows`)
- a local ``.parquet``, ``.jsonl`` or ``.json`` file: read directly (rows numbered as the file's
  lines for .jsonl, from 1 otherwise);
- a local ``.arrow`` file or a folder: read with `datasets`, one data file at a time so an error
  can name the file. A folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``
  is read with ``load_from_disk`` (a DatasetDict: the split `split`). Any other folder: its
  .parquet/.jsonl/.json/.arrow files (searched recursively, sorted by path); when some of them
  have the split's name as a path component or file-name prefix (``train/…``,
  ``train-00000-of-00001.parquet``, ``test.jsonl``) only those are read;
- anything else is a hub dataset name, loaded with ``datasets.load_dataset(name, hub_config,
  split=split)``; with ``HF_HUB_OFFLINE=1`` that fails at once with a line saying to pass a
  local copy.

Columns (`Columns`, from ``data.prompt_key`` … or ``data.eval_prompt_key`` …): a key may be
dotted to reach into a struct column (``reward_model.ground_truth``). Empty keys are detected
from the first row: the DAPO schema (``prompt`` + ``solution`` or ``reward_model.ground_truth``,
ids from ``extra_info.index``), else MATH-500/AIME (``problem``/``question`` +
``answer``/``solution``, tier from ``level`` or ``tier``, ids from ``id``).
- prompt: a string, or chat messages ``[{"role", "content"}]``, kept as given: the last user turn
  is the problem, the turns before it (system, earlier exchanges) become the example's
  ``context``, turns after it are dropped. The instruction (``DAPO_INSTRUCTION``, asking for
  ``\boxed{}``) is appended to the problem unless the text already mentions ``\boxed``; the chat
  template is applied later by the engine, from the model's tokenizer.
- answer: a string or a number (made a string). Required and non-empty in every row.
- tier (optional): integer or string values, kept as they are (integer-like strings become
  integers); a row without one gets ``None``. Evaluation reports per tier.
- id (optional): must be present and distinct in every row; integer-like values become
  integers. Without an id key, ids are the 0-based row positions (or the detected schema's ids
  when every row has a distinct integer one).
Every example also carries ``metadata``: the row's other columns (what a `reward.function` gets).

Bad input (no such file or folder, a split that is empty, a missing column, a row without a
prompt or an answer, a duplicate id) raises `DataError`: one line naming the file, row and column.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gdro_ray.data.readers import DATA_SUFFIXES, read_table_rows
from gdro_ray.errors import DataError, UserError

DAPO_INSTRUCTION = "Let's think step by step and output the final answer within \\boxed{}."
_WRAP_HEAD = re.compile(r"^\s*Solve the following math problem step by step\..*?"
                        r"where \$Answer is the answer to the problem\.\s*", re.DOTALL)
_WRAP_TAIL = re.compile(r"\s*Remember to put your answer on its own line after \"Answer:\"\.?\s*$")
_MISSING = object()


@dataclass(frozen=True)
class Columns:
    """Which columns hold what; empty = detect from the first row (module docstring)."""

    prompt: str = ""
    answer: str = ""
    tier: str = ""
    id: str = ""
    split: str = "train"
    hub_config: str = ""


def clean_problem(problem: str) -> str:
    """The problem with DAPO's "Answer:" wrapper removed."""
    return _WRAP_TAIL.sub("", _WRAP_HEAD.sub("", problem)).strip()


def boxed_prompt(problem: str) -> str:
    """The user message: the problem (DAPO's "Answer:" wrapper removed), then the \\boxed{} instruction."""
    problem = clean_problem(problem)
    if "\\boxed" in problem:
        return problem
    return f"{problem}\n\n{DAPO_INSTRUCTION}"


def looks_like_path(source: str) -> bool:
    """A local file or folder (by suffix, a path-like start, two or more '/', or because it exists)
    rather than a hub dataset name (`owner/name`)."""
    return (source.lower().endswith(DATA_SUFFIXES) or source.startswith((".", "/", "~")) or source.count("/") >= 2
            or Path(source).expanduser().exists())


# ---------------------------------------------------------------------------- reading
def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def _dataset_rows(table, start: int = 1) -> list[tuple[int, dict]]:
    return list(enumerate((dict(r) for r in table), start=start))


def load_hub_rows(name: str, split: str = "train", hub_config: str = "") -> list[tuple[int, dict]]:
    if hub_offline():
        raise UserError(f"dataset {name!r} needs the Hugging Face hub, which is offline here (HF_HUB_OFFLINE=1): "
                        f"download it where the hub is reachable and pass a local file or folder instead")
    import datasets

    try:
        table = datasets.load_dataset(name, hub_config or None, split=split)
    except Exception as e:
        raise UserError(f"cannot load dataset {name!r} (split {split!r}) from the hub ({type(e).__name__}: "
                        f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}); "
                        f"pass a local file or folder instead") from None
    return _dataset_rows(table)


def _read_with_datasets(path: Path) -> list[tuple[int, dict]]:
    """One data file through `datasets` (the .arrow case, and every file of a folder)."""
    import datasets

    suffix = path.suffix.lower()
    try:
        if suffix == ".arrow":
            table = datasets.Dataset.from_file(str(path))
        else:
            builder = {".parquet": "parquet", ".jsonl": "json", ".json": "json"}[suffix]
            table = datasets.load_dataset(builder, data_files=str(path), split="train")
    except Exception as e:  # several exception types for a corrupt or foreign file
        raise DataError(f"{path}: cannot read dataset file ({type(e).__name__}: "
                        f"{str(e).strip().splitlines()[0] if str(e).strip() else ''})") from None
    return _dataset_rows(table)


def _folder_files(folder: Path, split: str) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in DATA_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if split:
        in_split = [p for p in files if split in p.relative_to(folder).parts[:-1]
                    or re.match(rf"{re.escape(split)}([-_.]|$)", p.name)]
        if in_split:
            return in_split
    return files


def _read_folder(folder: Path, split: str) -> list[tuple[str, list[tuple[int, dict]]]]:
    if (folder / "dataset_info.json").is_file() or (folder / "dataset_dict.json").is_file():
        import datasets

        try:
            table = datasets.load_from_disk(str(folder))
        except Exception as e:
            raise DataError(f"{folder}: cannot read saved dataset ({type(e).__name__}: {e})") from None
        if isinstance(table, datasets.DatasetDict):
            if split not in table:
                raise DataError(f"{folder}: no split {split!r} (found: {', '.join(table) or 'none'})")
            return [(f"{folder} [{split}]", _dataset_rows(table[split]))]
        return [(str(folder), _dataset_rows(table))]
    files = _folder_files(folder, split)
    if not files:
        raise DataError(f"{folder}: no .parquet/.jsonl/.json/.arrow files in the folder")
    return [(str(p), _read_with_datasets(p)) for p in files]


def load_parts(source: str, split: str = "train", hub_config: str = "") -> list[tuple[str, list[tuple[int, dict]]]]:
    """[(where, [(row number, row)])]: one part per file read (one for a hub split)."""
    path = Path(source).expanduser()
    if path.is_dir():
        parts = _read_folder(path, split)
    elif path.suffix.lower() == ".arrow" and path.is_file():
        parts = [(str(path), _read_with_datasets(path))]
    elif looks_like_path(source):
        parts = [(str(path), read_table_rows(path))]  # raises "not found" for a missing path
    else:
        parts = [(f"{source} [{split}]", load_hub_rows(source, split, hub_config))]
    if not any(rows for _, rows in parts):
        raise DataError(f"{parts[0][0] if len(parts) == 1 else source}: the split is empty (no rows)")
    return parts


# ---------------------------------------------------------------------------- conversion
def get_column(row: dict, key: str) -> Any:
    """`row[key]`, following dots into struct columns; _MISSING when absent."""
    if key in row:
        return row[key]
    value: Any = row
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def prompt_text(value: Any) -> str | None:
    """The problem: the string itself, or the last user turn of chat messages."""
    return prompt_parts(value)[0]


def prompt_parts(value: Any) -> tuple[str | None, list[dict] | None]:
    """(problem, context) of a prompt column. A string is the problem, with no context. Chat
    messages are kept as given: the last user turn is the problem, the turns before it (a system
    turn, earlier exchanges, few-shot examples) its context, None when there are none. Turns after
    the last user turn (a reference solution as the assistant's answer) are not part of the prompt."""
    if isinstance(value, str):
        return value, None
    if not isinstance(value, (list, tuple)):
        return None, None
    turns = []
    for msg in value:
        if not isinstance(msg, dict) or not isinstance(msg.get("content"), str):
            return None, None
        turns.append({"role": str(msg.get("role") or "user"), "content": msg["content"]})
    last = max((i for i, t in enumerate(turns) if t["role"] == "user"), default=None)
    if last is None:
        return None, None
    return turns[last]["content"], (turns[:last] or None)


def answer_text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None or value is _MISSING:
        return None
    if isinstance(value, (int, float)):
        return str(value)
    return value if isinstance(value, str) else None


def int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    return None


def detect_columns(first: dict, columns: Columns, where: str) -> tuple[Columns, str]:
    """Fill empty keys from a known schema; returns (columns, schema name: dapo | problem | custom)."""
    dapo = "prompt" in first and ("solution" in first or isinstance(first.get("reward_model"), dict))
    found = ", ".join(sorted(first)) or "none"
    prompt, answer, tier, ident = columns.prompt, columns.answer, columns.tier, columns.id
    if not prompt:
        prompt = "prompt" if dapo else next((c for c in ("problem", "question", "prompt") if c in first), "")
        if not prompt:
            raise DataError(f"{where}: wrong schema: missing column 'problem' (or 'question', 'prompt'; "
                            f"set data.prompt_key); found: {found}")
    if not answer:
        if dapo:
            answer = "solution" if "solution" in first else "reward_model.ground_truth"
        else:
            answer = next((c for c in ("answer", "solution") if c in first), "")
        if not answer:
            raise DataError(f"{where}: wrong schema: missing column 'answer' (set data.answer_key); found: {found}")
    if not tier and not dapo and not columns.prompt:
        tier = next((c for c in ("level", "tier") if c in first), "")
    for role, key in (("prompt", prompt), ("answer", answer), ("tier", tier), ("id", ident)):
        if key and get_column(first, key) is _MISSING:
            raise DataError(f"{where}: row 1: missing column {key!r} (data.{role}_key); found: {found}")
    schema = "dapo" if dapo and not columns.prompt else ("problem" if not columns.prompt else "custom")
    return Columns(prompt, answer, tier, ident, columns.split, columns.hub_config), schema


def _auto_ids(parts, schema: str) -> list | None:
    """The detected schema's own ids when every row has a distinct integer one, else None."""
    ids = []
    for _, rows in parts:
        for _, row in rows:
            if schema == "dapo":
                info = row.get("extra_info")
                value = int_or_none(info.get("index")) if isinstance(info, dict) else None
            else:
                value = int_or_none(row.get("id"))
            if value is None:
                return None
            ids.append(value)
    return ids if len(set(ids)) == len(ids) else None


def _top_key(key: str) -> str:
    return key.split(".", 1)[0]


def parts_to_examples(parts: list[tuple[str, list[tuple[int, dict]]]], columns: Columns, source: str | None,
                      default_source: str = "data") -> list[dict]:
    """Contract dicts {"id", "prompt", "problem", "answer", "tier", "source", "metadata"} from read rows,
    and "context" (the turns before the problem) for chat messages that have some.

    `source` names the set; None = "dapo" for the detected DAPO schema, else `default_source`."""
    first_where, first_rows = next((w, r) for w, r in parts if r)
    cols, schema = detect_columns(first_rows[0][1], columns, first_where)
    source = source or ("dapo" if schema == "dapo" else default_source)
    auto_ids = None if cols.id else _auto_ids(parts, schema)
    used = {_top_key(k) for k in (cols.prompt, cols.answer, cols.tier, cols.id) if k}
    out, seen_ids = [], {}
    for where, rows in parts:
        for row_no, row in rows:
            prompt, context = prompt_parts(get_column(row, cols.prompt))
            if prompt is None or not prompt.strip():
                raise DataError(f"{where}: row {row_no}: column {cols.prompt!r} is missing or empty (a string, "
                                "or chat messages [{role, content}] with a user turn)")
            answer = answer_text(get_column(row, cols.answer))
            if answer is None or not answer.strip():
                raise DataError(f"{where}: row {row_no}: column {cols.answer!r} is missing or empty")
            tier = None
            if cols.tier:
                raw = get_column(row, cols.tier)
                if raw is not _MISSING and raw is not None:
                    tier = int_or_none(raw)
                    if tier is None:
                        if not isinstance(raw, str) or not raw.strip():
                            raise DataError(f"{where}: row {row_no}: column {cols.tier!r} must be an integer "
                                            f"or a string, got {raw!r}")
                        tier = raw.strip()
            if cols.id:
                raw = get_column(row, cols.id)
                ident = int_or_none(raw)
                if ident is None:
                    if not isinstance(raw, str) or not raw.strip():
                        raise DataError(f"{where}: row {row_no}: column {cols.id!r} is missing or empty")
                    ident = raw.strip()
                if ident in seen_ids:
                    raise DataError(f"{where}: row {row_no}: column {cols.id!r} repeats id {ident!r} "
                                    f"(first at {seen_ids[ident]})")
                seen_ids[ident] = f"row {row_no}"
            else:
                ident = auto_ids[len(out)] if auto_ids else len(out)
            metadata = {k: v for k, v in row.items() if k not in used}
            example = {"id": ident, "prompt": boxed_prompt(prompt), "problem": clean_problem(prompt),
                       "answer": answer.strip(), "tier": tier, "source": source, "metadata": metadata}
            if context:
                example["context"] = context
            out.append(example)
    return out


def load_examples(source: str, columns: Columns | None = None, name: str | None = None,
                  max_rows: int = 0) -> list[dict]:
    """Examples of any dataset (module docstring); `name` is their `source` (default: the file stem
    or the hub name); `max_rows` keeps the first rows (0 = all)."""
    columns = columns or Columns()
    parts = load_parts(str(source), columns.split, columns.hub_config)
    if max_rows and max_rows > 0:
        left, kept = max_rows, []
        for where, rows in parts:
            if left > 0 and rows:
                kept.append((where, rows[:left]))
                left -= len(rows[:left])
        parts = kept
    path = Path(str(source)).expanduser()
    default = path.stem if looks_like_path(str(source)) else str(source)
    return parts_to_examples(parts, columns, name, default)
