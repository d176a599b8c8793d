"""One-line root causes of Ray actor failures.

An actor whose `__init__` raises surfaces as `ActorDiedError` whose text starts with "The actor
died because of an error raised in its creation task" and ends, after a remote traceback, with
the line that says what went wrong ("OSError: [Errno 98] Address already in use"). Users need
that last line, named against the config key where one is responsible.
"""
from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_EXC_LINE = re.compile(r"^([A-Za-z_][\w]*\.)*[A-Za-z_]\w*(Error|Exception|Interrupt|Exit|Warning)\b.*")


def root_cause(exc: BaseException) -> str:
    """The innermost exception line of a (remote) traceback, else the first line of the message."""
    text = _ANSI.sub("", str(exc))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if _EXC_LINE.match(line):
            return line
    return lines[0] if lines else type(exc).__name__


def adversary_start_error(exc: BaseException, host: str, port: int) -> str:
    """One line for an adversary actor that died while starting, naming metrics.* when the bind failed."""
    cause = root_cause(exc)
    if "Address already in use" in cause:
        return f"metrics.port: {port} on {host} is already in use (pick another, or 0 for a free one)"
    if "Cannot assign requested address" in cause or "Name or service not known" in cause:
        return f"metrics.host: cannot bind {host} on the adversary's node ({cause})"
    return f"the adversary actor could not start: {cause}"
