"""The Prometheus file-SD target file is written only where the job's user alone can write."""
import json
import os
import stat

import pytest

from gdro_ray.metrics.names import ADVERSARY_SD_FILENAME
from gdro_ray.metrics.sd_file import default_sd_dir, write_sd_file


def test_written_atomically_readable_and_private(tmp_path):
    folder = tmp_path / "sd"
    path = write_sd_file("10.0.0.5", 9464, str(folder))
    assert path == str(folder / ADVERSARY_SD_FILENAME)
    assert json.loads(open(path).read())[0]["targets"] == ["10.0.0.5:9464"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert not os.stat(folder).st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    assert [p.name for p in folder.iterdir()] == [ADVERSARY_SD_FILENAME]  # no temp file left


def test_group_or_world_writable_folder_is_closed_first(tmp_path):
    folder = tmp_path / "sd"
    folder.mkdir()
    folder.chmod(0o777)
    assert write_sd_file("127.0.0.1", 1234, str(folder))
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o755


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand a folder to another user")
def test_folder_of_another_user_is_refused(tmp_path):
    folder = tmp_path / "theirs"
    folder.mkdir()
    os.chown(folder, 4321, 4321)
    assert write_sd_file("127.0.0.1", 1234, str(folder)) == ""
    assert not (folder / ADVERSARY_SD_FILENAME).exists()


def test_symlinked_folder_is_refused(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    assert write_sd_file("127.0.0.1", 1234, str(link)) == ""
    assert not (real / ADVERSARY_SD_FILENAME).exists()


def test_default_is_the_cache_not_rays_temp_root(monkeypatch, tmp_path):
    monkeypatch.setenv("GDRO_RAY_CACHE", str(tmp_path / "cache"))
    assert default_sd_dir() == tmp_path / "cache" / "prometheus"
    monkeypatch.delenv("GDRO_RAY_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_sd_dir() == tmp_path / "home" / ".cache" / "gdro_ray" / "prometheus"
