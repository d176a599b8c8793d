"""CLI behaviour that needs no running job: clear one-line errors and non-zero exits."""
import subprocess
import sys


def _cli(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "gdro_ray.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_status_without_a_job_fails_clearly():
    p = _cli("status", "--address", "127.0.0.1:1")
    assert p.returncode == 2
    assert p.stderr.startswith("gdro-ray status: error:") and p.stderr.strip().count("\n") == 0


def test_scale_without_a_job_fails_clearly():
    p = _cli("scale", "--samplers", "3", "--address", "127.0.0.1:1")
    assert p.returncode == 2 and "no Ray cluster" in p.stderr


def test_train_dry_run_prints_resolved_config_and_starts_nothing():
    p = _cli("train", "--dry-run", "preset=qwen3-1.7b-dapo", "steps=5")
    assert p.returncode == 0, p.stderr
    assert "preset: qwen3-1.7b-dapo" in p.stdout and "steps: 5" in p.stdout


def test_train_bad_key_fails_before_anything_starts(tmp_path):
    p = _cli("train", "sampler.num_samplerz=3", f"out={tmp_path / 'r'}")
    assert p.returncode == 2 and "sampler.num_samplerz" in p.stderr
    assert not (tmp_path / "r").exists()


def test_resume_from_missing_checkpoint_changes_nothing(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("steps: 2\n")
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    p = _cli("train", "--resume", str(tmp_path / "run"))
    assert p.returncode == 2 and "no complete checkpoint" in p.stderr
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before


def test_help_lists_every_subcommand():
    p = _cli("--help")
    for cmd in ("simulate", "prepare", "train", "eval", "status", "report", "scale", "config"):
        assert cmd in p.stdout


def test_more_samplers_than_the_cluster_can_place_fails_before_actors(tmp_path):
    p = _cli("train", "sampler.num_samplers=4", "learner.world_size=2", "cluster.num_cpus=2",
             "data.eval=dapo-fixture", "model.path=smollm2", f"out={tmp_path / 'r'}", timeout=180)
    assert p.returncode == 2, p.stderr[-2000:]
    assert "sampler.num_samplers" in p.stderr and "need 6 CPUs" in p.stderr
