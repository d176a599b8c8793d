"""Atomic checkpoints: complete or absent, never half-written; clear errors on bad resume input."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from gdro_ray.errors import CheckpointError
from gdro_ray.service.checkpoint import latest_checkpoint, write_checkpoint


def _fake_learner(path):
    os.makedirs(path)
    for name in ("config.json", "model.safetensors"):
        with open(f"{path}/{name}", "w") as f:
            f.write("{}")


def _run_dir(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / "config.yaml").write_text("steps: 3\n")
    return d


def test_write_and_find_latest(tmp_path):
    d = _run_dir(tmp_path)
    write_checkpoint(d, 1, _fake_learner, {"a": 1}, {"step": 1, "weights_version": 1})
    write_checkpoint(d, 2, _fake_learner, {"a": 2}, {"step": 2, "weights_version": 2})
    write_checkpoint(d, 3, _fake_learner, {"a": 3}, {"step": 3, "weights_version": 3}, keep=2)
    ck = latest_checkpoint(d)
    assert ck.name == "step_000003"
    assert json.loads((ck / "adversary.json").read_text()) == {"a": 3}
    assert sorted(p.name for p in (d / "checkpoints").glob("step_*")) == ["step_000002", "step_000003"]


def test_failure_during_write_keeps_previous(tmp_path):
    d = _run_dir(tmp_path)
    write_checkpoint(d, 1, _fake_learner, {"a": 1}, {"step": 1, "weights_version": 1})

    def boom(path):
        _fake_learner(path)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_checkpoint(d, 2, boom, {"a": 2}, {"step": 2, "weights_version": 2})
    assert latest_checkpoint(d).name == "step_000001"
    assert not list((d / "checkpoints").glob("*partial*"))


def test_kill_during_write_keeps_previous(tmp_path):
    d = _run_dir(tmp_path)
    write_checkpoint(d, 1, _fake_learner, {"a": 1}, {"step": 1, "weights_version": 1})
    script = textwrap.dedent(f"""
        import os, time
        from gdro_ray.service.checkpoint import write_checkpoint
        def slow(path):
            os.makedirs(path); open(path + '/config.json', 'w').write('{{}}')
            print('writing', flush=True); time.sleep(30)
        write_checkpoint({str(d)!r}, 2, slow, {{'a': 2}}, {{'step': 2, 'weights_version': 2}})
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "writing"
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert latest_checkpoint(d).name == "step_000001"
    assert json.loads((latest_checkpoint(d) / "adversary.json").read_text()) == {"a": 1}


@pytest.mark.parametrize("damage", ["no_dir", "no_config", "no_latest", "missing_file", "corrupt_json"])
def test_bad_resume_input_is_named(tmp_path, damage):
    d = _run_dir(tmp_path)
    write_checkpoint(d, 1, _fake_learner, {"a": 1}, {"step": 1, "weights_version": 1})
    ck = d / "checkpoints" / "step_000001"
    target = d
    if damage == "no_dir":
        target = tmp_path / "missing"
    elif damage == "no_config":
        (d / "config.yaml").unlink()
    elif damage == "no_latest":
        (d / "checkpoints" / "latest").unlink()
    elif damage == "missing_file":
        (ck / "driver.json").unlink()
    else:
        (ck / "adversary.json").write_text("{not json")
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    with pytest.raises(CheckpointError) as e:
        latest_checkpoint(target)
    assert "\n" not in str(e.value)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before
