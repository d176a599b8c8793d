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
    import torch
    from safetensors.torch import save_file

    os.makedirs(path)
    with open(f"{path}/config.json", "w") as f:
        f.write("{}")
    save_file({"w": torch.arange(64, dtype=torch.float32)}, f"{path}/model.safetensors")


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


def _three_checkpoints(tmp_path):
    d = _run_dir(tmp_path)
    for step in (1, 2, 3):
        write_checkpoint(d, step, _fake_learner, {"a": step}, {"step": step, "weights_version": step}, keep=3)
    return d


def _truncate(path, keep_bytes):
    data = path.read_bytes()
    path.write_bytes(data[:keep_bytes])


@pytest.mark.parametrize("how", ["truncated_weights", "flipped_byte", "torn_json", "missing_weights"])
def test_damaged_newest_checkpoint_falls_back_to_intact_one(tmp_path, how):
    d = _three_checkpoints(tmp_path)
    ck = d / "checkpoints" / "step_000003"
    w = ck / "learner" / "model.safetensors"
    if how == "truncated_weights":
        _truncate(w, w.stat().st_size - 17)
    elif how == "flipped_byte":  # same size: only the checksum can see it
        data = bytearray(w.read_bytes())
        data[-1] ^= 0xFF
        w.write_bytes(bytes(data))
    elif how == "torn_json":
        _truncate(ck / "adversary.json", 3)
    else:
        w.unlink()
    said = []
    assert latest_checkpoint(d, say=said.append).name == "step_000002"
    assert len(said) == 1 and "step_000003" in said[0] and "step_000002" in said[0]


def test_every_checkpoint_damaged_is_one_line(tmp_path):
    d = _three_checkpoints(tmp_path)
    for ck in (d / "checkpoints").glob("step_*"):
        _truncate(ck / "learner" / "model.safetensors", 100)
    with pytest.raises(CheckpointError) as e:
        latest_checkpoint(d, say=lambda m: None)
    assert "\n" not in str(e.value) and "no intact checkpoint" in str(e.value)


def test_truncated_weights_without_manifest_are_caught(tmp_path):
    """Checkpoints from before manifests: the safetensors header still exposes a truncation."""
    d = _three_checkpoints(tmp_path)
    ck = d / "checkpoints" / "step_000003"
    (ck / "manifest.json").unlink()
    assert latest_checkpoint(d, say=lambda m: None).name == "step_000003"
    w = ck / "learner" / "model.safetensors"
    _truncate(w, w.stat().st_size - 8)
    assert latest_checkpoint(d, say=lambda m: None).name == "step_000002"


@pytest.mark.parametrize("pointer", ["../../../etc", "/etc", "step_1", ""])
def test_latest_pointing_outside_the_run_is_refused(tmp_path, pointer):
    d = _three_checkpoints(tmp_path)
    (d / "checkpoints" / "latest").write_text(pointer)
    with pytest.raises(CheckpointError) as e:
        latest_checkpoint(d)
    assert "\n" not in str(e.value) and "latest" in str(e.value)


def test_stale_partial_folders_are_removed_by_the_next_write(tmp_path):
    d = _three_checkpoints(tmp_path)
    stale = d / "checkpoints" / ".step_000004.abc123.partial"
    (stale / "learner").mkdir(parents=True)
    (stale / "learner" / "optimizer.pt").write_bytes(b"x" * 1000)
    write_checkpoint(d, 4, _fake_learner, {"a": 4}, {"step": 4, "weights_version": 4}, keep=3)
    assert not stale.exists()
    assert not [p for p in (d / "checkpoints").iterdir() if p.name.startswith(".")]
    manifest = json.loads((d / "checkpoints" / "step_000004" / "manifest.json").read_text())
    assert set(manifest["files"]) == {"adversary.json", "driver.json", "learner/config.json",
                                      "learner/model.safetensors"}
