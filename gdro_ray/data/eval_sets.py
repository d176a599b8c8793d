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

- a folder (files read with `datasets`), an ``.arrow`` file, or a hub name ``owner/name``: the
  generic loader `table.load_examples`, which also does the two detections above.
Both take ``columns`` (`table.Columns`, from the ``data.*_key`` config keys) to name the prompt,
answer, tier and id columns of any other schema.

``load_train_set(name_or_path)``: ``toy`` (the 14,100-prompt pool, `toy_task.make_train_pool`),
``dapo`` (the hub set, cluster only), ``dapo-fixture``, or a file, folder or hub name as above.

Bad input raises `DataError` naming the file, row (from 1) and column; an unknown name raises
`DataError` listing the names accepted. The toy task is imported only when asked for.
"""
from __future__ import annotations

from pathlib import Path

from gdro_ray.data import dapo, table
from gdro_ray.data.table import Columns
from gdro_ray.errors import DataError

EVAL_NAMES = ("toy", "champ", "dapo-fixture")
TRAIN_NAMES = ("toy", "dapo", "dapo-fixture")


def load_table_file(path: str | Path, columns: Columns | None = None) -> list[dict]:
    """A local file or folder: the DAPO schema or MATH-500/AIME detected from row 1, or the given columns."""
    return table.load_examples(str(Path(path).expanduser()), columns)


def _hub_name(name: str) -> bool:
    """`owner/name` (one slash, no spaces): a Hugging Face hub dataset id."""
    return name.count("/") == 1 and " " not in name and not name.startswith((".", "/", "~"))


def _unknown(kind: str, name: str, names: tuple[str, ...]) -> DataError:
    return DataError(f"unknown {kind} set {name!r}: use one of {', '.join(names)} "
                     f"a .jsonl/.json/.parquet/.arrow file, a folder or a hub name owner/name")


def load_eval_set(name_or_path: str | Path, columns: Columns | None = None) -> list[dict]:
    """An evaluation set by name (toy, champ, dapo-fixture), local file or folder, or hub name."""
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
        return load_table_file(name, columns)
    if name == dapo.DAPO_HUB_NAME and columns in (None, Columns()):
        return dapo.load_dapo(name)
    if _hub_name(name):
        return table.load_examples(name, columns)
    raise _unknown("evaluation", name, EVAL_NAMES)


def load_train_set(name_or_path: str | Path, columns: Columns | None = None) -> list[dict]:
    """A training set by name (toy, dapo, dapo-fixture), local file or folder, or hub name."""
    name = str(name_or_path)
    if name == "toy":
        from gdro_ray.data.toy_task import make_train_pool

        return make_train_pool()
    if name == "dapo":
        return dapo.load_dapo(dapo.DAPO_HUB_NAME) if columns in (None, Columns()) else \
            table.load_examples(dapo.DAPO_HUB_NAME, Columns(**{**columns.__dict__, "hub_config": columns.hub_config or "en"}))
    if name == dapo.FIXTURE_NAME:
        return dapo.load_dapo(dapo.FIXTURE_NAME)
    if dapo.looks_like_path(name):
        return load_table_file(name, columns)
    if name == dapo.DAPO_HUB_NAME and columns in (None, Columns()):
        return dapo.load_dapo(name)
    if _hub_name(name):
        return table.load_examples(name, columns)
    raise _unknown("training", name, TRAIN_NAMES)


def spread_subset(examples: list[dict], m: int) -> list[dict]:
    """`m` examples spread evenly over the list (all of them when m is 0 or ≥ the length).

    Evenly spaced rather than the first m, so a set ordered by tier keeps every tier.
    """
    if m <= 0 or len(examples) <= m:
        return list(examples)
    step = len(examples) / m
    return [examples[int(i * step)] for i in range(m)]

