"""Worker subprocess that serves one user reward function (see `custom.py`).

Protocol (length-prefixed pickle frames on stdin/stdout): the first frame in is the spec; the
worker sets its memory limit (spec["memory_limit_mb"]), answers ("started",), then ("ready",) once
the function is imported, or ("error", reason) and exits — an import that raises SystemExit or
KeyboardInterrupt included. Then each frame in is (prompts, responses, answers, metadata) and each
frame out ("ok", scores), ("error", "Type: message") when the function raised, or ("returned",
description) when it returned something that cannot cross the pipe (a generator). Scores are
converted to a list here so numpy arrays and tensors cross the pipe as plain numbers. It exits
when stdin closes, so a dead sampler leaves no worker.
"""
from __future__ import annotations

import asyncio
import inspect
import os
import pickle
import sys

from gdro_ray.rewards._worker_pool import set_memory_limit
from gdro_ray.rewards.custom import _HEADER, MEMORY_LIMIT_MB, _write_frame, load_function


def _read_frame(stream):
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    return pickle.loads(stream.read(_HEADER.unpack(head)[0]))


def _as_list(value):
    if hasattr(value, "tolist"):  # numpy arrays and torch tensors
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [v.item() if hasattr(v, "item") else v for v in value]
    return value


def _one_line(e: BaseException, memory_mb: float = 0) -> str:
    text = str(e).strip().splitlines()
    line = f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
    if isinstance(e, MemoryError) and memory_mb:
        line += f" (the worker's limit is reward.memory_limit_mb={memory_mb:g})"
    return line


def _describe(value) -> str:
    """What an unpicklable return value is, for the one-line error."""
    if isinstance(value, list):
        odd = next((v for v in value if not _picklable(v)), None)
        return f"a list holding a {type(odd).__name__}" if odd is not None else "a list"
    return f"a {type(value).__name__}"


def _picklable(value) -> bool:
    try:
        pickle.dumps(value)
        return True
    except Exception:  # noqa: BLE001 - any failure means it cannot cross the pipe
        return False


def serve() -> None:
    proto = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # prints in the user's function go to stderr, not into the protocol
    stdin = sys.stdin.buffer
    spec = _read_frame(stdin)
    memory_mb = float(spec.get("memory_limit_mb", MEMORY_LIMIT_MB))
    set_memory_limit(memory_mb)  # before the import: a module that loads a model counts too
    _write_frame(proto, ("started",))  # reward.import_timeout_s counts from here: the user's import only
    try:
        fn = load_function(spec)
    except ValueError as e:
        hint = f" (the worker's limit is reward.memory_limit_mb={memory_mb:g})" if "(MemoryError" in str(e) else ""
        _write_frame(proto, ("error", str(e) + hint))
        return
    except BaseException as e:  # noqa: BLE001 - sys.exit() or KeyboardInterrupt at import: say so
        _write_frame(proto, ("error", f"cannot import {spec.get('path') or spec.get('module')} "
                                      f"({_one_line(e, memory_mb)} at import)"))
        return
    _write_frame(proto, ("ready",))
    loop = None
    while True:
        args = _read_frame(stdin)
        if args is None:
            return
        try:
            value = fn(*args)
            if inspect.isawaitable(value):
                loop = loop or asyncio.new_event_loop()  # one loop: clients the function caches stay usable
                value = loop.run_until_complete(value)
            value = _as_list(value)
        except BaseException as e:  # noqa: BLE001 - SystemExit and friends are the user's bug too
            reply = ("error", _one_line(e, memory_mb))
        else:
            reply = ("ok", value) if _picklable(value) else ("returned", _describe(value))
        _write_frame(proto, reply)

