"""The Prometheus file-SD target file of the adversary endpoint, in a folder only the job's user writes.

Prometheus follows whatever targets this file lists, so whoever can write it can point the scrape
job anywhere. Ray's temp root (`/tmp/ray`) is shared by every local user, so the file lives in
`metrics.sd_dir` (default `$GDRO_RAY_CACHE/prometheus`, else `~/.cache/gdro_ray/prometheus`):
a folder owned by the job's user and not writable by group or others. The folder and the file
stay readable (0755/0644), because Prometheus usually runs as another user.
"""
from __future__ import annotations

import logging
import os
import stat
import tempfile
from pathlib import Path

from gdro_ray.metrics.names import ADVERSARY_SD_FILENAME, adversary_sd_targets

log = logging.getLogger("gdro_ray.metrics")


def default_sd_dir() -> Path:
    base = os.environ.get("GDRO_RAY_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "gdro_ray") / "prometheus"


def private_dir(folder: Path) -> str | None:
    """Make sure `folder` exists, is ours and only we can write it; why not, or None."""
    folder.mkdir(mode=0o755, parents=True, exist_ok=True)
    st = folder.lstat()
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        return f"{folder} is not a plain folder"
    if st.st_uid != os.getuid():
        return f"{folder} belongs to uid {st.st_uid}, not to this job's user ({os.getuid()})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        os.chmod(folder, stat.S_IMODE(st.st_mode) & ~(stat.S_IWGRP | stat.S_IWOTH))
    return None


def write_sd_file(host: str, port: int, sd_dir: str = "") -> str:
    """Write the target file atomically; its path, or "" (logged) when the folder is not private."""
    folder = Path(sd_dir).expanduser() if sd_dir else default_sd_dir()
    try:
        why = private_dir(folder)
        if why:
            log.warning("Prometheus file-SD not written: %s", why)
            return ""
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{ADVERSARY_SD_FILENAME}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o644)
            with os.fdopen(fd, "w") as f:
                f.write(adversary_sd_targets(host, port))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, folder / ADVERSARY_SD_FILENAME)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    except OSError as e:
        log.warning("Prometheus file-SD not written to %s: %s", folder, e)
        return ""
    return str(folder / ADVERSARY_SD_FILENAME)
