"""Bad inputs fail at start with one line naming the key (#16 §5, #12 item 7; the table is docs/bad-inputs.md)."""
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
])
def test_value_that_used_to_pass_dry_run_names_its_key(override, key):
    with pytest.raises(ConfigError) as e:
        load_config(overrides=[override])
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
