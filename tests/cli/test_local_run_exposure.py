"""A local run listens on loopback only and starts from any folder, however long its path.

The live test lists the listening sockets of the run's process tree while it trains (two gloo
learner ranks, a sampler, the adversary): it never sends traffic anywhere.
"""
from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gdro_ray.errors import UserError
from gdro_ray.utils import env as genv

SMALL = ["steps=2", "batch_size=4", "budget_mean=4", "data.max_prompts=32", "data.toy_eval_per_tier=2",
         "data.max_eval_prompts=6", "eval.k=2", "sampler.num_samplers=1", "checkpoint.every=0"]
LOOPBACK = ("127.0.0.1:", "[::1]:", "[::ffff:127.0.0.1]:")


def _clean_env(monkeypatch, **extra):
    for k in ("TMPDIR", "RAY_TMPDIR", "GDRO_RAY_TMP"):
        monkeypatch.delenv(k, raising=False)
    for k, v in extra.items():
        monkeypatch.setenv(k, str(v))


def test_ray_root_stays_short_whatever_the_temp_root(monkeypatch, tmp_path):
    deep = tmp_path / ("d" * 90)
    _clean_env(monkeypatch, GDRO_RAY_TMP=deep)
    genv.setup_env()
    ray_tmp = os.environ["RAY_TMPDIR"]
    assert len(os.fsencode(ray_tmp)) <= genv.RAY_ROOT_MAX
    assert ray_tmp == str(genv.short_ray_root())
    assert os.environ["TMPDIR"] == str(deep) and deep.is_dir()
    for p in (deep, Path(ray_tmp)):
        st = os.lstat(p)
        assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.getuid()


def test_a_short_temp_root_keeps_ray_beside_it(monkeypatch, tmp_path):
    short = Path(genv.short_private_tmp("t"))  # a short private folder stands for a short home
    _clean_env(monkeypatch, GDRO_RAY_TMP=short)
    genv.setup_env()
    assert os.environ["RAY_TMPDIR"] == str(short / "ray") and (short / "ray").is_dir()
    shutil.rmtree(short)


def test_temp_root_does_not_depend_on_the_current_folder(monkeypatch, tmp_path):
    cwd = tmp_path / "project"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    _clean_env(monkeypatch, GDRO_RAY_CACHE=tmp_path / "cache")
    genv.setup_env()
    assert not (cwd / ".tmp").exists()
    assert os.environ["TMPDIR"] == str(tmp_path / "cache" / "tmp")


def test_a_linked_temp_root_is_refused(monkeypatch, tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o777)
    link = tmp_path / "tmp-link"
    link.symlink_to(target)
    _clean_env(monkeypatch, GDRO_RAY_TMP=link)
    with pytest.raises(UserError, match="symbolic link"):
        genv.setup_env()


def test_a_temp_root_open_to_others_is_made_private(monkeypatch, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    os.chmod(root, 0o777)
    _clean_env(monkeypatch, GDRO_RAY_TMP=root)
    genv.setup_env()
    assert stat.S_IMODE(os.lstat(root).st_mode) == 0o700


def test_someone_elses_temp_root_is_refused(monkeypatch, tmp_path):
    root = tmp_path / "theirs"
    root.mkdir()
    if os.getuid() != 0:
        pytest.skip("changing a folder's owner needs root")
    os.chown(root, 65534, 65534)
    _clean_env(monkeypatch, GDRO_RAY_TMP=root)
    with pytest.raises(UserError, match="another user"):
        genv.setup_env()


def test_a_ray_root_too_long_for_its_sockets_is_one_line(tmp_path):
    env = dict(os.environ, RAY_TMPDIR=str(tmp_path / ("r" * 60)))
    p = subprocess.run([sys.executable, "-m", "gdro_ray.cli.main", "train", "--dry-run"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "RAY_TMPDIR" in p.stderr and "107 bytes" in p.stderr, p.stderr


def _process_tree(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        out.add(pid)
        todo.extend(children.get(pid, []))
    return out


def _listening(pids: set[int]) -> set[tuple[str, str]]:
    """(local address, process name) of every TCP/UDP socket listening in one of `pids`."""
    out = subprocess.run(["ss", "-ltunpH"], capture_output=True, text=True, check=True).stdout
    seen = set()
    for line in out.splitlines():
        fields = line.split()
        for name, pid in re.findall(r'\("([^"]+)",pid=(\d+)', line):
            if int(pid) in pids:
                seen.add((fields[4], name))
    return seen


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2) to list listening sockets")
def test_local_run_from_a_deep_folder_listens_on_loopback_only(tmp_path):
    """From a current folder whose path passes 100 characters, with no temp variables set, a
    two-rank run trains, and every port of its process tree is on loopback."""
    deep = tmp_path / ("folder_with_a_rather_long_name_" * 4)
    deep.mkdir()
    assert len(str(deep)) > 100
    env = {k: v for k, v in os.environ.items() if k not in ("TMPDIR", "RAY_TMPDIR", "GDRO_RAY_TMP")}
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "gdro_ray.cli.main", "train", *SMALL, "learner.world_size=2",
                             f"out={out}"], cwd=deep, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    seen: set[tuple[str, str]] = set()
    deadline = time.monotonic() + 900
    while proc.poll() is None and time.monotonic() < deadline:
        seen |= _listening(_process_tree(proc.pid))
        time.sleep(0.3)
    if proc.poll() is None:
        proc.kill()
    log = proc.stdout.read()
    assert proc.wait() == 0, log[-3000:]
    assert "every port on 127.0.0.1" in log
    names = {name for _, name in seen}
    # what must have been seen listening, so that the check below covers them
    assert {"gcs_server", "raylet"} <= names, sorted(seen)
    assert any(n.startswith("ray::LearnerWor") for n in names), sorted(seen)
    open_ = sorted((addr, name) for addr, name in seen if not addr.startswith(LOOPBACK))
    assert not open_, f"listening beyond loopback: {open_}"
    assert not (deep / ".tmp").exists()  # nothing written where the user stands
    assert (out / "metrics.jsonl").is_file()


def _marked(mark: str) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if mark.encode() in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                    out.append(int(entry))
            except OSError:
                pass
    return out


@pytest.mark.slow
def test_a_driver_killed_hard_leaves_no_ray_process_behind(tmp_path):
    """SIGKILL of the driver once its actors run: Ray's agents, raylet and workers go within seconds."""
    from gdro_ray.service.ray_start import SESSION_MARK

    args = [a for a in SMALL if not a.startswith("steps=")]
    proc = subprocess.Popen([sys.executable, "-m", "gdro_ray.cli.main", "train", *args, "learner.world_size=1",
                             "steps=50", f"out={tmp_path / 'run'}"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:  # until the actors are up
        lines.append(line)
        if line.startswith("weight sync:"):
            break
    assert proc.poll() is None, "".join(lines)
    def environ(pid: int) -> list[bytes]:
        try:
            return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            return []

    prefix = SESSION_MARK.encode() + b"="
    assert not any(v.startswith(prefix) for v in environ(proc.pid))  # the driver started unmarked
    token = next(v.decode() for p in _process_tree(proc.pid) for v in environ(p) if v.startswith(prefix))
    assert len(_marked(token)) >= 3  # gcs, raylet, workers, agents
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 30
    while _marked(token) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _marked(token), "Ray processes outlived their driver by 30 s"


def test_status_takes_single_machine_mode_only_for_a_loopback_only_gcs():
    """A port bound to 127.0.0.1 alone is a local run's Ray; one bound to every interface is a
    `ray start` cluster that a client must reach in Ray's normal mode."""
    import socket

    from gdro_ray.service.connect import _listens_on_loopback_only

    with socket.socket() as lo, socket.socket() as anyif:
        lo.bind(("127.0.0.1", 0))
        lo.listen()
        anyif.bind(("", 0))
        anyif.listen()
        assert _listens_on_loopback_only(f"127.0.0.1:{lo.getsockname()[1]}")
        assert not _listens_on_loopback_only(f"127.0.0.1:{anyif.getsockname()[1]}")
        assert not _listens_on_loopback_only(f"10.1.2.3:{lo.getsockname()[1]}")
