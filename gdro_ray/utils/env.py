"""Process environment defaults that keep runs offline, quiet and out of other people's folders.

Called by the CLI and the tests before Ray, vLLM or transformers are imported. Values
already set by the user win.

Temp files. Where the process stands must not matter: a run started from a read-only folder,
from a folder with a planted `.tmp` link, or from a checkout at a long path behaves the same.
So the temp root is `$GDRO_RAY_TMP`, else `tmp/` under the gdro_ray cache (`~/.cache/gdro_ray`),
and every folder we create for it is private (0700, ours, not a link). Ray's session folder
goes below `$RAY_TMPDIR`, and Ray puts Unix sockets there
(`<RAY_TMPDIR>/ray/session_<date>_<time>_<usec>_<pid>/sockets/plasma_store`, about 70
characters after the root), which must fit in 107 bytes: when the natural Ray root is longer
than `RAY_ROOT_MAX`, a short private folder under /tmp is used instead.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from gdro_ray.errors import UserError

# AF_UNIX paths hold 107 bytes; Ray appends up to ~69 to its root (a 7-digit pid included).
RAY_ROOT_MAX = 38
AF_UNIX_MAX = 107


def private_dir(path: Path, what: str) -> Path:
    """Create `path` (mode 0700) or accept it only if it is a real folder owned by us.

    A link, someone else's folder or one others may write into is refused in one line: temp
    files there could be read or replaced by another user. A folder of ours with wider
    permissions is narrowed to 0700.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError as e:
        raise UserError(f"{what}: cannot create {path} ({e.strerror or type(e).__name__})") from None
    if stat.S_ISLNK(st.st_mode):
        raise UserError(f"{what}: {path} is a symbolic link; refusing to put temp files through it "
                        "(remove it, or set GDRO_RAY_TMP to a private folder)")
    if not stat.S_ISDIR(st.st_mode):
        raise UserError(f"{what}: {path} exists and is not a folder")
    if st.st_uid != os.getuid():
        raise UserError(f"{what}: {path} belongs to another user (uid {st.st_uid}); refusing to put temp files "
                        "there (set GDRO_RAY_TMP to a private folder)")
    if st.st_mode & 0o077:
        try:
            os.chmod(path, 0o700)
        except OSError as e:
            raise UserError(f"{what}: cannot make {path} private ({e.strerror})") from None
    return path


def temp_root() -> Path:
    """The root of this user's temp files: $GDRO_RAY_TMP, else the cache's tmp/ (never the cwd)."""
    root = os.environ.get("GDRO_RAY_TMP")
    if root:
        return Path(root).expanduser().absolute()
    d = os.environ.get("GDRO_RAY_CACHE")
    base = Path(d).expanduser() if d else Path.home() / ".cache" / "gdro_ray"
    return base.absolute() / "tmp"


def short_ray_root() -> Path:
    """A short per-user folder for Ray's sockets, for when the natural one is too long."""
    return Path("/tmp") / f"gdro-ray-{os.getuid()}"


def short_private_tmp(prefix: str) -> str:
    """A new private folder with a short path, for a Ray root of its own (tests, benchmarks)."""
    import tempfile

    return tempfile.mkdtemp(prefix=prefix, dir=private_dir(short_ray_root(), "RAY_TMPDIR"))


def ray_root(root: Path) -> Path:
    """$RAY_TMPDIR if set (it must be short enough), else `root/ray`, else the short fallback."""
    given = os.environ.get("RAY_TMPDIR")
    if given:
        if len(os.fsencode(given)) > RAY_ROOT_MAX:
            raise UserError(f"RAY_TMPDIR: {given} is {len(os.fsencode(given))} bytes; Ray's socket paths below it must "
                            f"fit in {AF_UNIX_MAX} bytes, so use a folder of at most {RAY_ROOT_MAX} bytes or unset it")
        return Path(given)
    natural = root / "ray"
    return natural if len(os.fsencode(str(natural))) <= RAY_ROOT_MAX else short_ray_root()


def ray_tmpdir() -> str:
    """The Ray root a run here uses ($RAY_TMPDIR or one made private now)."""
    root = temp_root()
    ray_tmp = ray_root(root)
    if not os.environ.get("RAY_TMPDIR"):
        if ray_tmp.parent == root:
            private_dir(root, "GDRO_RAY_TMP")
        private_dir(ray_tmp, "RAY_TMPDIR")
    return str(ray_tmp)


def setup_env() -> None:
    tmp = os.environ.get("TMPDIR") or str(private_dir(temp_root(), "GDRO_RAY_TMP"))
    defaults = {
        "TMPDIR": tmp,
        "RAY_TMPDIR": ray_tmpdir(),
        # Ray 2.60 turns on token auth and writes ~/.ray/auth_token; a local embedded run binds
        # only loopback (service.driver) and CLI clients fail unless server and client agree.
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
        # vLLM on CPU: in-process engine (3 processes on 2 cores is slower), small KV cache.
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_LOGGING_LEVEL": "WARNING",
        "TOKENIZERS_PARALLELISM": "false",
    }
    for k, v in defaults.items():
        os.environ.setdefault(k, v)


def cache_dir() -> Path:
    """Where prepared models and converted datasets are cached."""
    d = os.environ.get("GDRO_RAY_CACHE")
    p = Path(d) if d else Path.home() / ".cache" / "gdro_ray"
    p.mkdir(parents=True, exist_ok=True)
    return p
