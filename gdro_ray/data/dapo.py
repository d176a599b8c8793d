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
  ``[{"role", "content"}]`` (the original ``BytedTsinghua-SIA/DAPO-Math-17k``: one user turn),
  kept as given: the last user turn is the problem, turns before it its context. Required.
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

The conversion is the generic loader's (`table.py`) with this schema's columns (`dapo_columns`);
the file itself is read by `readers.py`.
Output: the shared contract ``{"id", "prompt", "problem", "answer", "tier": None, "source": "dapo",
"metadata": the row's other columns}``.
Bad input (missing, empty or unreadable file, missing column, a row without a prompt or an
answer) raises `DataError` naming the file, the row (counted from 1; the line of a .jsonl) and
the column. Nothing is cached here, so nothing can be half-written.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from gdro_ray.data import table
from gdro_ray.data.readers import read_table_rows
from gdro_ray.data.table import DAPO_INSTRUCTION, Columns, boxed_prompt, looks_like_path  # noqa: F401 (re-exported)
from gdro_ray.errors import DataError

DAPO_HUB_NAME = "open-r1/DAPO-Math-17k-Processed"
DAPO_HUB_CONFIG = "en"
FIXTURE_NAME = "dapo-fixture"


def fixture_path(suffix: str = ".jsonl") -> Path:
    """The bundled fixture (``.jsonl`` or ``.parquet``)."""
    return Path(str(resources.files("gdro_ray.data") / "fixtures" / f"dapo_math_sample{suffix}"))


# ---------------------------------------------------------------------------- the DAPO configuration
def dapo_columns(first_row: dict, where: str) -> Columns:
    """The DAPO schema as a column configuration of the generic loader (`table.py`)."""
    if "prompt" not in first_row:
        raise DataError(f"{where}: wrong schema: missing column 'prompt' (found: {', '.join(sorted(first_row)) or 'none'})")
    if "solution" not in first_row and not isinstance(first_row.get("reward_model"), dict):
        raise DataError(f"{where}: wrong schema: missing column 'solution' (or 'reward_model.ground_truth'); "
                        f"found: {', '.join(sorted(first_row))}")
    return Columns(prompt="prompt", answer="solution" if "solution" in first_row else "reward_model.ground_truth")


def dapo_rows_to_examples(rows: list[tuple[int, dict]], where: str, source: str = "dapo") -> list[dict]:
    """Convert DAPO-schema rows to contract dicts; `where` names the file in errors."""
    columns = dapo_columns(rows[0][1], where)
    parts = [(where, rows)]
    ids = table._auto_ids(parts, "dapo")  # extra_info.index when every row has a distinct integer one
    out = table.parts_to_examples(parts, columns, source)
    if ids:
        for ex, i in zip(out, ids):
            ex["id"] = i
    return out


def load_dapo(source: str = DAPO_HUB_NAME, max_rows: int = 0) -> list[dict]:
    """DAPO examples from the hub name, ``dapo-fixture`` or a local file; first `max_rows` (0 = all)."""
    source = str(source)
    if source == FIXTURE_NAME:
        path: Path | None = fixture_path()
    elif looks_like_path(source):
        path = Path(source).expanduser()
    else:
        path = None
    if path is not None:
        rows = read_table_rows(path)
    else:
        rows = table.load_hub_rows(source, "train", DAPO_HUB_CONFIG if source == DAPO_HUB_NAME else "")
    if max_rows and max_rows > 0:
        rows = rows[:max_rows]
    if not rows:
        raise DataError(f"{path or source}: dataset is empty (no rows)")
    return dapo_rows_to_examples(rows, str(path or source))
