"""Worker subprocess that serves one user reward function (see `custom.py`).

Protocol (length-prefixed pickle frames on stdin/stdout): the first frame in is the spec; the
worker answers ("ready",) once the function is imported, or ("error", reason) and exits. Then
each frame in is (prompts, responses, answers, metadata) and each frame out ("ok", scores) or
("error", "Type: message"). Scores are converted to a list here so numpy arrays and tensors
cross the pipe as plain numbers. It exits when stdin closes, so a dead sampler leaves no worker.
"""
from __future__ import annotations

import asyncio
import inspect
import os
import pickle
import sys

from gdro_ray.rewards.custom import _HEADER, _write_frame, load_function


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


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def serve() -> None:
    proto = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # prints in the user's function go to stderr, not into the protocol
    stdin = sys.stdin.buffer
    spec = _read_frame(stdin)
    try:
        fn = load_function(spec)
    except ValueError as e:
        _write_frame(proto, ("error", str(e)))
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
            reply = ("ok", _as_list(value))
            pickle.dumps(reply)
        except BaseException as e:  # noqa: BLE001 - SystemExit and friends are the user's bug too
            reply = ("error", _one_line(e))
        _write_frame(proto, reply)


if __name__ == "__main__":
    serve()
