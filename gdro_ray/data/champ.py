r"""CHAMP: 270 competition math problems with answers, offline, from the `champ-dataset` package.

The package ships ``champ_dataset/dataset_files/v0.json`` (72 MB: problems plus solutions,
hints, concepts and model transcripts). Reading it costs about half a second, so the first
call extracts just what evaluation needs into ``cache_dir()/data/champ-v0.json`` (about
100 KB, written atomically, keyed by the source file's size and mtime) and later calls read
that.

The package directory is located with ``importlib.util.find_spec`` (its ``__init__`` is not
run, so its own imports are not needed). Order and ids: problems sorted by category (in
``CHAMP_CATEGORIES`` order) then by their number (``P_Combinatorics_7`` before
``P_Combinatorics_12``); ``id`` is the position in that order, so it is stable across
releases that keep the set. ``tier`` is the category's index in ``CHAMP_CATEGORIES``
(categories, not difficulty levels: per-tier evaluation then reports per category).
Answers are CHAMP's free-form strings, kept as they are (e.g. ``'239'``, ``'No'``,
``'C(10, 5), or equivalently 252'``): the verifier matches numeric and symbolic ones; prose
answers will rarely match.
"""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

from gdro_ray.data.table import Columns, parts_to_examples
from gdro_ray.errors import DataError
from gdro_ray.utils.env import cache_dir
from gdro_ray.utils.io import atomic_write_json

CHAMP_CATEGORIES = ("Combinatorics", "Inequality", "Number-Theory", "Polynomial", "Sequence")
CHAMP_SIZE = 270
_CACHE_FORMAT = 1
_NUMBER = re.compile(r"_(\d+)$")


def champ_source_file() -> Path:
    """The JSON file inside the installed `champ-dataset` package."""
    spec = importlib.util.find_spec("champ_dataset")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("CHAMP needs the 'champ-dataset' package: pip install champ-dataset==1.0.0")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "dataset_files" / "v0.json"
        if path.is_file():
            return path
    raise DataError("champ-dataset is installed but its dataset_files/v0.json is missing")


def _sort_key(identifier: str, category: str) -> tuple[int, int, str]:
    number = _NUMBER.search(identifier)
    return (CHAMP_CATEGORIES.index(category), int(number.group(1)) if number else 0, identifier)


def _extract(source: Path) -> list[dict]:
    try:
        problems = json.loads(source.read_text(encoding="utf-8"))["problems"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{source}: cannot read CHAMP problems ({type(e).__name__}: {e})") from None
    rows = []
    for key, p in problems.items():
        category = p.get("category")
        text, answer = p.get("_text") or p.get("_raw_text"), p.get("_answer") or p.get("_raw_answer")
        if category not in CHAMP_CATEGORIES:
            raise DataError(f"{source}: row {key}: column 'category' has unknown value {category!r}")
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{source}: row {key}: column '_text' is missing or empty")
        if not isinstance(answer, str) or not answer.strip():
            raise DataError(f"{source}: row {key}: column '_answer' is missing or empty")
        rows.append({"identifier": p.get("identifier", key), "category": category,
                     "text": text.strip(), "answer": answer.strip()})
    rows.sort(key=lambda r: _sort_key(r["identifier"], r["category"]))
    return rows


def _cached_rows(source: Path) -> list[dict]:
    stat = source.stat()
    stamp = {"format": _CACHE_FORMAT, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    cache = cache_dir() / "data" / "champ-v0.json"
    try:
        cached = json.loads(cache.read_text(encoding="utf-8"))
        if cached.get("stamp") == stamp:
            return cached["rows"]
    except (OSError, ValueError, AttributeError):
        pass  # absent, stale or corrupt: rebuild
    rows = _extract(source)
    atomic_write_json(cache, {"stamp": stamp, "rows": rows})
    return rows


# CHAMP as a configuration of the generic loader: these columns of the extracted rows.
CHAMP_COLUMNS = Columns(prompt="text", answer="answer", tier="tier")


def load_champ() -> list[dict]:
    """The 270 CHAMP problems as contract dicts (source "champ", tier = category index,
    metadata = identifier and category)."""
    source = champ_source_file()
    rows = [(i, {**r, "tier": CHAMP_CATEGORIES.index(r["category"])})
            for i, r in enumerate(_cached_rows(source), start=1)]
    return parts_to_examples([(str(source), rows)], CHAMP_COLUMNS, "champ")
