"""Bad inputs fail at start with one line naming the key (the table is docs/bad-inputs.md)."""
import os
import subprocess
import sys

import pytest

from gdro_ray.config import ConfigError, load_config
from gdro_ray.config.checks import check_run_name, is_host


@pytest.mark.parametrize("override,key", [
    ("rollout_gdro.n_min=1", "rollout_gdro.n_min"),  # a group of one has no baseline
    ("sampler.top_p=0.5", "sampler.top_p"),  # the learner trains the full-vocabulary policy
    ("sampler.temperature=0", "sampler.temperature"),
    ("sampler.temperature=-1", "sampler.temperature"),
    ("classifier.k=1000000000", "classifier.k"),
    ("classifier.prior_refit_every=0", "classifier.prior_refit_every"),
    ("learner.lr=nan", "learner.lr"),
    ("learner.lr=0", "learner.lr"),
    ("prompt_gdro.eta=.inf", "prompt_gdro.eta"),
    ("sampler.max_new_tokens=0", "sampler.max_new_tokens"),
    ("checkpoint.every=-1", "checkpoint.every"),
    ("checkpoint.keep=0", "checkpoint.keep"),
    ("metrics.host=not a host", "metrics.host"),
    ("name=../../../tmp/escape", "name"),
    ("name=.hidden", "name"),
    ("sampler.num_cpus=-1", "sampler.num_cpus"),
    ("learner.num_gpus=-0.5", "learner.num_gpus"),
    ("cluster.num_cpus=-2", "cluster.num_cpus"),
    ("data.train=missing.jsonl", "data.train"),
    ("data.eval=missing.parquet", "data.eval"),
    ("data.train=notaname", "data.train"),
    ("sampler.shard_size=0", "sampler.shard_size"),
    ("learner.micro_batch=0", "learner.micro_batch"),
    ("grpo.max_refill_rounds=1000000", "grpo.max_refill_rounds"),  # a constant reward then never ends a step
    ("reward.import_timeout_s=0", "reward.import_timeout_s"),
    ("reward.import_timeout_s=.inf", "reward.import_timeout_s"),
    ("reward.memory_limit_mb=16", "reward.memory_limit_mb"),
    ("reward.memory_limit_mb=-1", "reward.memory_limit_mb"),
    ("steps=99999999999999999999999999999", "steps"),  # no bound: ran until stopped
    ("steps=10000001", "steps"),
    ("cluster.off_policy=true", "cluster.max_staleness"),  # with max_staleness=0 below: every step sampled twice
    (".steps=3", ".steps"),  # the message used to name an empty key
    ("steps.=3", "steps."),
    ("preset=../presets/toy", "preset"),  # a path loaded any YAML outside presets/
    ("preset=/etc/passwd", "preset"),
    ("reward.function=rel/ok.py:", "reward.function"),  # read as a YAML mapping: 'must be a string'
    ("reward.function=os.path:", "reward.function"),
])
def test_value_that_used_to_pass_dry_run_names_its_key(override, key):
    if override.startswith("cluster.off_policy"):
        override = [override, "cluster.max_staleness=0"]
    with pytest.raises(ConfigError) as e:
        load_config(overrides=override if isinstance(override, list) else [override])
    msg = str(e.value)
    assert msg.startswith(key + ":") and "\n" not in msg


def test_boundary_values_still_accepted(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"problem": "1+1?", "answer": "2"}\n')
    cfg = load_config(overrides=["rollout_gdro.n_min=2", "sampler.top_p=1.0", "sampler.temperature=0.7",
                                 "classifier.k=256", "checkpoint.every=0", "checkpoint.keep=1",
                                 "metrics.host=0.0.0.0", "name=my-run_1", f"data.train={data}",
                                 "sampler.num_cpus=0"])
    assert cfg.rollout_gdro.n_min == 2 and cfg.classifier.k == 256 and cfg.name == "my-run_1"


def test_duplicate_yaml_key_is_refused(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("steps: 3\nsampler:\n  temperature: 1.0\n  temperature: 0.5\n")
    with pytest.raises(ConfigError) as e:
        load_config(f)
    assert str(e.value).startswith("temperature: given twice") and "line 4" in str(e.value)


def test_non_utf8_yaml_is_one_line(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_bytes(b"steps: 3\nname: \xff\xfe\n")
    with pytest.raises(ConfigError) as e:
        load_config(f)
    assert "not UTF-8" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("host,ok", [("127.0.0.1", True), ("::1", True), ("0.0.0.0", True), ("localhost", True),
                                     ("head-0.svc.cluster.local", True), ("not a host", False), ("-bad", False),
                                     ("a" * 64, False), ("", False)])
def test_is_host(host, ok):
    assert is_host(host) is ok


@pytest.mark.parametrize("name,ok", [("run-1", True), ("", True), ("a/b", False), ("..", False),
                                     ("../x", False), (".x", False)])
def test_run_name(name, ok):
    assert (check_run_name(name) is None) is ok


def test_cli_dry_run_reports_one_line_and_exit_2():
    p = subprocess.run([sys.executable, "-m", "gdro_ray.cli.main", "train", "--dry-run", "sampler.top_p=0.5"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.strip().count("\n") == 0 and "sampler.top_p" in p.stderr


def test_trailing_colon_says_the_function_name_is_missing():
    with pytest.raises(ConfigError, match="function name after ':' is missing"):
        load_config(overrides=["reward.function=os.path:"])
    assert load_config(overrides=["steps=10000000"]).steps == 10**7  # the bound itself is allowed


def test_existing_path_that_is_not_a_data_file_says_what_it_is(tmp_path):
    plain = tmp_path / "passwd"
    plain.write_text("root:x:0:0\n")
    with pytest.raises(ConfigError) as e:
        load_config(overrides=[f"data.train={plain}"])
    assert "is a file but not a .jsonl" in str(e.value) and "not found" not in str(e.value)
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError) as e:
        load_config(overrides=[f"data.eval={fifo}"])
    assert str(e.value).startswith("data.eval:") and "is a FIFO" in str(e.value)


def _dry(*args, **kw):
    return subprocess.run([sys.executable, "-m", "gdro_ray.cli.main", "train", "--dry-run", *args],
                          capture_output=True, text=True, timeout=120, **kw)


def test_cli_same_key_twice_and_overrides_after_flags():
    p = _dry("steps=3", "steps=5")
    assert p.returncode == 2 and p.stdout == "" and p.stderr.strip().count("\n") == 0
    assert "steps: given twice on the command line" in p.stderr
    # an override after a flag is an override (argparse said 'unrecognized arguments')
    p = _dry("steps=3", "--overwrite", "batch_size=4")
    assert p.returncode == 0, p.stderr
    assert "\nsteps: 3\n" in p.stdout and "\nbatch_size: 4\n" in p.stdout
    p = _dry("steps=3", "--no-such-flag")
    assert p.returncode == 2 and "unrecognized arguments: --no-such-flag" in p.stderr


def test_learner_group_larger_than_the_local_machine_is_refused_at_start(monkeypatch):
    from gdro_ray.service.start_checks import check_learner_fits

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cpus = os.cpu_count() or 1
    with pytest.raises(ConfigError) as e:
        check_learner_fits(load_config(overrides=[f"learner.world_size={cpus + 1}"]))
    assert str(e.value).startswith("learner.world_size:") and f"{cpus} CPUs" in str(e.value)
    check_learner_fits(load_config(overrides=[f"learner.world_size={cpus}"]))
    check_learner_fits(load_config(overrides=["learner.world_size=1000", "cluster.address=10.0.0.1:6379"]))
    p = _dry("learner.world_size=1000000")  # --dry-run refuses it too (it used to wait forever at start)
    assert p.returncode == 2 and "learner.world_size:" in p.stderr and p.stderr.strip().count("\n") == 0
