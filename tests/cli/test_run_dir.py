"""Run folders and --resume checked before anything starts: one line, nothing written."""
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
from gdro_ray.service.run_dir import check_new_run_dir, clear_run_dir, prepare_resume

ROOT = Path(__file__).resolve().parents[2]
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


def _cli(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "gdro_ray.cli.main", "train", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


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
    (young / "gdro-ray.lock").write_text("{}\n")  # every run holds one from its start
    (young / "metrics.jsonl").write_text('{"step": 0}\n')
    with pytest.raises(UserError, match="not empty"):
        check_new_run_dir(young)
    assert check_new_run_dir(young, overwrite=True) is True
    assert (young / "metrics.jsonl").is_file()  # nothing goes before the run holds the folder
    clear_run_dir(young)
    assert [p.name for p in young.iterdir()] == ["gdro-ray.lock"]
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


# ---- what --resume may change -------------------------------------------------------------------
def _reward_file(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ok.py").write_text("def score(p, r, a, m):\n    return [1.0] * len(r)\n")
    return folder / "ok.py"


@pytest.mark.parametrize("override,key", [
    ("reward.function={rw}:score", "reward.function"),
    ("reward.success_threshold=0.9", "reward.success_threshold"),
    ("data.prompt_key=question", "data.prompt_key"),
    ("data.answer_key=final", "data.answer_key"),
    ("data.id_key=qid", "data.id_key"),
    ("data.tier_key=level", "data.tier_key"),
    ("data.eval=dapo-fixture", "data.eval"),
    ("data.eval_answer_key=final", "data.eval_answer_key"),
    ("data.eval_tier_key=subject", "data.eval_tier_key"),
    ("data.max_eval_prompts=6", "data.max_eval_prompts"),
    ("data.toy_eval_per_tier=3", "data.toy_eval_per_tier"),
    ("eval.k=4", "eval.k"),
    ("eval.temperature=0.3", "eval.temperature"),
    ("sampler.max_new_tokens=12", "sampler.max_new_tokens"),
    ("seed=7", "seed"),
    ("model.dtype=bfloat16", "model.dtype"),
    ("preset=smollm2", "preset"),
    ("out={elsewhere}", "out"),
])
def test_resume_refuses_a_changed_problem(tmp_path, override, key):
    """The data, reward, held-out set and what decided the base evaluation stay; out= is the run's own."""
    run = _run(tmp_path)
    item = override.format(rw=_reward_file(tmp_path / "rw"), elsewhere=tmp_path / "elsewhere")
    before = _snapshot(run)
    with pytest.raises(UserError) as e:
        prepare_resume(str(run), None, [item])
    msg = str(e.value)
    assert msg.startswith(f"{key}:") and "\n" not in msg and ("resume" in msg or "lives" in msg), msg
    assert _snapshot(run) == before


def test_resume_takes_operational_changes_and_its_own_folder(tmp_path):
    run = _run(tmp_path)
    cfg, run_dir, _ = prepare_resume(str(run), None, [
        "steps=20", "eval.every=2", "checkpoint.every=5", "checkpoint.keep=3", "metrics.loggers=[tensorboard]",
        "sampler.num_samplers=1", "learner.world_size=1", "cluster.actor_logs=true", "sampler.reward_timeout_s=5",
        "reward.on_error=stop", f"out={run}"])
    assert cfg.steps == 20 and cfg.eval.every == 2 and cfg.metrics.loggers == ["tensorboard"] and run_dir == run


def test_changeable_keys_are_schema_keys_and_the_problem_is_not_among_them():
    from gdro_ray.config.loader import describe_keys
    from gdro_ray.service.run_dir import CHANGEABLE_ON_RESUME, changeable_on_resume

    keys = [k for k, _, _ in describe_keys()]
    for entry in CHANGEABLE_ON_RESUME:  # a renamed key must not silently leave the list
        assert any(k == entry or (entry.endswith(".") and k.startswith(entry)) for k in keys), entry
    for key in ("reward.function", "data.train", "data.eval", "data.prompt_key", "data.eval_id_key", "eval.k",
                "model.path", "preset", "seed", "out", "learner.lora.rank", "learner.lora.target_modules"):
        assert not changeable_on_resume(key), key
    assert changeable_on_resume("steps") and changeable_on_resume("checkpoint.keep_best")
    assert changeable_on_resume("learner.lr")  # the LoRA exception leaves the rest of its section


def test_relative_reward_file_is_recorded_absolute(tmp_path, monkeypatch):
    """A resume from another folder imports the file the run started with, not a namesake there."""
    from gdro_ray.rewards.custom import resolve_spec
    from gdro_ray.service.start_checks import record_reward_path

    first, other = tmp_path / "first", tmp_path / "other"
    used = _reward_file(first / "rel")
    _reward_file(other / "rel")
    monkeypatch.chdir(first)
    cfg = record_reward_path(load_config(overrides=["reward.function=rel/ok.py:score"]))
    assert cfg.reward.function == f"{used}:score"
    assert record_reward_path(load_config(overrides=["reward.function=os.path:join"])).reward.function == "os.path:join"
    monkeypatch.chdir(other)
    assert resolve_spec(cfg.reward.function)["path"] == str(used)
    # the CLI records it so: config.yaml is what --dry-run prints
    p = subprocess.run([sys.executable, "-m", "gdro_ray.cli.main", "train", "--dry-run",
                        "reward.function=rel/ok.py:score"], capture_output=True, text=True, timeout=180, cwd=first)
    assert p.returncode == 0, p.stderr
    assert f"function: {used}:score" in p.stdout


def test_resume_with_the_recorded_reward_file_is_not_a_change(tmp_path, monkeypatch):
    from gdro_ray.service.start_checks import record_reward_path

    used = _reward_file(tmp_path / "first" / "rel")
    monkeypatch.chdir(tmp_path / "first")
    run = tmp_path / "run"
    run.mkdir()
    cfg = record_reward_path(load_config(overrides=["steps=10", "batch_size=8", "reward.function=rel/ok.py:score"]))
    (run / "config.yaml").write_text(dump_config(cfg))
    state = to_jsonable({"adversary": Adversary.from_config(cfg, NUM_PROMPTS).state_dict(), "rollouts_total": 0})
    write_checkpoint(run, 2, _fake_learner, state, {"step": 2, "weights_version": 2})
    assert prepare_resume(str(run), None, ["reward.function=rel/ok.py:score"])[0].reward.function == f"{used}:score"
    _reward_file(tmp_path / "other" / "rel")
    monkeypatch.chdir(tmp_path / "other")  # the same text names another file here
    with pytest.raises(UserError, match="^reward.function: cannot change on resume"):
        prepare_resume(str(run), None, ["reward.function=rel/ok.py:score"])
    assert prepare_resume(str(run), None, [])[0].reward.function == f"{used}:score"


def test_overwrite_never_clears_the_current_folder_its_parents_or_the_files_it_reads(tmp_path, monkeypatch):
    run = _run(tmp_path)
    (run / "metrics.jsonl").write_text('{"step": 0}\n')
    (run / "sub").mkdir()
    monkeypatch.chdir(run / "sub")
    with pytest.raises(UserError, match="holds the current folder"):
        check_new_run_dir(run, overwrite=True)
    monkeypatch.chdir(run)
    with pytest.raises(UserError, match="holds the current folder"):
        check_new_run_dir(Path("."), overwrite=True)
    monkeypatch.chdir(tmp_path)
    (run / "my.yaml").write_text("steps: 3\n")
    with pytest.raises(UserError, match="the config file"):
        check_new_run_dir(run, overwrite=True, config_path=str(run / "my.yaml"))
    (run / "r.py").write_text("def score(p, r, a, m):\n    return [0.0] * len(r)\n")
    cfg = load_config(overrides=[f"reward.function={run / 'r.py'}:score"])
    with pytest.raises(UserError, match="reward.function"):
        check_new_run_dir(run, overwrite=True, cfg=cfg)
    assert (run / "metrics.jsonl").is_file() and (run / "my.yaml").is_file()
    link = tmp_path / "link"
    link.symlink_to(run)
    with pytest.raises(UserError, match="symbolic link"):
        check_new_run_dir(link, overwrite=True)


def test_a_folder_with_any_config_yaml_is_not_taken_for_a_run(tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "config.yaml").write_text("steps: 3\n")
    (proj / "metrics.jsonl").write_text("{}\n")
    (proj / "main.py").write_text("print(1)\n")
    with pytest.raises(UserError, match="not a gdro-ray run folder"):
        check_new_run_dir(proj, overwrite=True)
    assert sorted(p.name for p in proj.iterdir()) == ["config.yaml", "main.py", "metrics.jsonl"]


def test_a_name_longer_than_the_file_system_takes_is_one_line(tmp_path):
    with pytest.raises(UserError, match="255"):
        check_new_run_dir(tmp_path / ("n" * 300))


def test_one_writer_per_run_folder(tmp_path):
    """A second holder is refused naming the first; the lock goes with its holder."""
    from gdro_ray.service.run_lock import RunLock

    run = tmp_path / "run"
    first = RunLock(run).acquire()
    assert first.created_dir and (run / "gdro-ray.lock").is_file()
    script = ("import sys\nfrom gdro_ray.service.run_lock import RunLock\nfrom gdro_ray.errors import UserError\n"
              "try:\n    RunLock(sys.argv[1]).acquire()\nexcept UserError as e:\n    print(e); sys.exit(2)\n")
    p = subprocess.run([sys.executable, "-c", script, str(run)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "in use by gdro-ray train pid" in p.stdout and str(os.getpid()) in p.stdout, p.stdout
    first.release(remove_if_unused=True)
    assert not run.exists()  # a start that wrote nothing leaves nothing
    p = subprocess.run([sys.executable, "-c", script, str(run)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout


def test_a_start_refused_after_the_lock_leaves_an_existing_empty_folder_empty(tmp_path):
    from gdro_ray.service.run_lock import RunLock

    run = tmp_path / "empty"
    run.mkdir()
    lock = RunLock(run).acquire()
    lock.release(remove_if_unused=True)
    assert run.is_dir() and not any(run.iterdir())
    check_new_run_dir(run)  # and a later start takes it


def test_a_second_train_into_a_folder_in_use_is_refused_before_anything_starts(tmp_path):
    from gdro_ray.service.run_lock import RunLock

    run = tmp_path / "same"
    held = RunLock(run).acquire()
    try:
        p = _cli(f"out={run}", "steps=2")
        assert p.returncode == 2 and p.stderr.strip().count("\n") == 0, p.stderr
        assert "is in use by gdro-ray train pid" in p.stderr and "Started a local Ray" not in p.stderr
        assert [x.name for x in run.iterdir()] == ["gdro-ray.lock"]
    finally:
        held.release()


@pytest.mark.slow
def test_overwrite_refused_at_start_keeps_the_earlier_run(tmp_path):
    """The earlier run goes only once the new one has started: a busy metrics port stops the start
    in one line and the old folder is untouched."""
    import socket

    run = _run(tmp_path)
    (run / "metrics.jsonl").write_text('{"step": 0}\n')
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        p = _cli(f"out={run}", "--overwrite", f"metrics.port={port}", "steps=2", "batch_size=4", "budget_mean=4",
                 "data.max_prompts=32", "sampler.num_samplers=1", "learner.world_size=1", timeout=900)
    assert p.returncode == 2, p.stderr[-2000:]
    assert f"metrics.port: {port}" in p.stderr.strip().splitlines()[-1]
    after = sorted(str(x.relative_to(run)) for x in run.rglob("*"))
    assert [x for x in after if x != "gdro-ray.lock"] == before  # the lock now marks the older run as ours
