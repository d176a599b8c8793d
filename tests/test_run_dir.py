"""Run folders and --resume checked before anything starts (#16 §3): one line, nothing written."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gdro_ray.algorithms.adversary import Adversary
from gdro_ray.algorithms.state import to_jsonable
from gdro_ray.config import load_config
from gdro_ray.config.loader import dump_config
from gdro_ray.errors import UserError
from gdro_ray.service.checkpoint import write_checkpoint
from gdro_ray.service.run_dir import check_new_run_dir, prepare_resume

ROOT = Path(__file__).resolve().parent.parent
NUM_PROMPTS = 200


def _fake_learner(path):
    import torch
    from safetensors.torch import save_file

    os.makedirs(path)
    Path(path, "config.json").write_text("{}")
    save_file({"w": torch.zeros(8)}, f"{path}/model.safetensors")


def _run(tmp_path, steps_done=2):
    """A run folder as the driver leaves it: config.yaml and one checkpoint with a real adversary state."""
    run = tmp_path / "run"
    run.mkdir()
    cfg = load_config(overrides=["steps=10", "batch_size=8", f"out={run}"])
    (run / "config.yaml").write_text(dump_config(cfg))
    adv = Adversary.from_config(cfg, NUM_PROMPTS)
    state = to_jsonable({"adversary": adv.state_dict(), "rollouts_total": 0})
    write_checkpoint(run, steps_done, _fake_learner, state, {"step": steps_done, "weights_version": steps_done})
    return run


def _snapshot(folder):
    return {str(p): (p.stat().st_size, p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "gdro_ray.cli.main", "train", *args], capture_output=True, text=True,
                          timeout=180, cwd=ROOT)


def test_compatible_override_is_taken(tmp_path):
    run = _run(tmp_path)
    cfg, run_dir, ckpt = prepare_resume(str(run), None, ["steps=20", "prompt_gdro.eta=0.3"])
    assert cfg.steps == 20 and cfg.prompt_gdro.eta == 0.3 and ckpt.name == "step_000002"


@pytest.mark.parametrize("override,key", [
    ("classifier.edges=[0.5]", "classifier.edges"),  # another number of bins than the saved state
    ("batch_size=4", "batch_size"),
    ("data.train=dapo-fixture", "data.train"),
    ("steps=1", "steps"),
])
def test_incompatible_override_is_one_line_and_leaves_the_run_resumable(tmp_path, override, key):
    run = _run(tmp_path)
    before = _snapshot(run)
    p = _cli("--resume", str(run), override)
    assert p.returncode == 2, p.stderr
    err = p.stderr.strip()
    assert "\n" not in err and f"error: {key}:" in err and "Traceback" not in err
    assert _snapshot(run) == before  # config.yaml untouched: a plain --resume still works
    cfg, _, _ = prepare_resume(str(run), None, [])
    assert cfg.steps == 10


def test_resume_rejects_empty_path_and_config_file(tmp_path):
    run = _run(tmp_path)
    with pytest.raises(UserError, match="empty"):
        prepare_resume("", None, [])
    other = tmp_path / "other.yaml"
    other.write_text("steps: 3\n")
    with pytest.raises(UserError, match="own config.yaml"):
        prepare_resume(str(run), str(other), [])
    p = _cli("--resume", "")
    assert p.returncode == 2 and "--resume" in p.stderr and p.stderr.strip().count("\n") == 0


def test_new_run_refuses_a_non_empty_folder(tmp_path):
    run = _run(tmp_path)
    (run / "metrics.jsonl").write_text('{"step": 0}\n')
    with pytest.raises(UserError, match="--resume"):
        check_new_run_dir(run)
    # no checkpoint yet, only a metrics file: still refused (the two runs' steps used to interleave)
    young = tmp_path / "young"
    young.mkdir()
    (young / "metrics.jsonl").write_text('{"step": 0}\n')
    with pytest.raises(UserError, match="not empty"):
        check_new_run_dir(young)
    check_new_run_dir(young, overwrite=True)
    assert not young.exists()
    # --overwrite never clears a folder that is not a run
    stranger = tmp_path / "home"
    stranger.mkdir()
    (stranger / "thesis.tex").write_text("x")
    with pytest.raises(UserError, match="not a gdro-ray run"):
        check_new_run_dir(stranger, overwrite=True)
    assert (stranger / "thesis.tex").is_file()
    check_new_run_dir(tmp_path / "fresh")  # absent: fine
    (tmp_path / "empty").mkdir()
    check_new_run_dir(tmp_path / "empty")  # empty: fine


def test_out_that_is_a_file_or_unwritable_is_one_line(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(UserError, match="is a file"):
        check_new_run_dir(f)
    with pytest.raises(UserError, match="is a file"):
        check_new_run_dir(f / "sub")
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        with pytest.raises(UserError, match="cannot write"):
            check_new_run_dir(ro / "run")
    p = _cli(f"out={f}")
    assert p.returncode == 2 and "is a file" in p.stderr and p.stderr.strip().count("\n") == 0


def test_saved_value_refused_by_todays_checks_is_fixed_by_an_override(tmp_path):
    """A run written before a check existed (here checkpoint.keep=0) resumes with the override that fixes it."""
    run = _run(tmp_path)
    cfg_file = run / "config.yaml"
    cfg_file.write_text(cfg_file.read_text().replace("keep: 2", "keep: 0"))
    with pytest.raises(UserError) as e:
        prepare_resume(str(run), None, [])
    assert str(e.value).startswith("checkpoint.keep:") and "override" in str(e.value) and "\n" not in str(e.value)
    cfg, _, _ = prepare_resume(str(run), None, ["checkpoint.keep=3"])
    assert cfg.checkpoint.keep == 3
