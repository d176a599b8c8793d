"""metrics.loggers: TensorBoard, wandb (offline) and MLflow (local file store) get the config, every
step-record field, the per-bin series and the evaluations; an absent package is one clear line."""
from __future__ import annotations

import builtins
from types import SimpleNamespace

import pytest
from _tensorboard import read_scalars

from gdro_ray.config import load_config
from gdro_ray.errors import UserError
from gdro_ray.metrics import loggers as L

CONFIG = {"algorithm": "both", "prompt_gdro": {"eta": 0.65}, "metrics": {"loggers": ["wandb"]}}


def _record(step: int) -> dict:
    return {"step": step, "algorithm": "both", "reward_mean": 0.1 * (step + 1), "shadow_price": 0.5 + step,
            "bin_weights": [0.5, 0.3, 0.2], "bin_pass_at_k": [None, 0.4, 0.9],
            "stage_time_s": {"sample": 1.5, "learn": 2.0 + step}}


SAMPLE = {"step": 2, "bin": "bin0", "prompt_id": 7, "prompt": "What is 1 + 1?", "answer": "2",
          "responses": [{"text": "so \\boxed{2}", "reward": 1.0, "advantage": 0.9, "tokens": 9, "truncated": False}]}


def _metrics_cfg(loggers, **kw) -> SimpleNamespace:
    base = dict(loggers=loggers, tensorboard=False, wandb_project="gdro-test", wandb_mode="offline",
                mlflow_tracking_uri="", mlflow_experiment="gdro-test")
    return SimpleNamespace(**{**base, **kw})


def _drive(run, tmp_path):
    """Base eval, three steps, a periodic eval line that must be skipped by log_step, final eval."""
    run.log_config(CONFIG)
    run.log_eval({"pooled": {"pass_at_k": 0.25}, "per_tier": {"3": {"pass_at_k": 0.1}}}, 0)
    for step in range(3):
        run.log_step(_record(step))
    run.log_samples([SAMPLE], 3)
    run.log_step({"type": "eval", "step": 2, "pooled_pass_at_k": 123.0})
    run.log_eval({"pooled": {"pass_at_k": 0.5}, "per_tier": {"3": {"pass_at_k": 0.2}}}, 3)
    run.close()


def test_tensorboard_alias_and_config_text(tmp_path):
    run = L.open_loggers(_metrics_cfg([], tensorboard=True), tmp_path)
    assert list(run.loggers) == ["tensorboard"]
    _drive(run, tmp_path)
    tb = read_scalars(tmp_path / "tensorboard")
    assert tb["reward_mean"] == [(1, pytest.approx(0.1)), (2, pytest.approx(0.2)), (3, pytest.approx(0.3))]
    assert tb["eval/tier3/pass_at_k"] == [(0, pytest.approx(0.1)), (3, pytest.approx(0.2))]
    assert "pooled_pass_at_k" not in tb
    events = b"".join(p.read_bytes() for p in (tmp_path / "tensorboard").rglob("events.out.tfevents.*"))
    assert b"What is 1 + 1?" in events  # the samples as a text summary


def test_no_loggers_is_none(tmp_path):
    assert L.open_loggers(_metrics_cfg([]), tmp_path) is None


def test_wandb_offline_round_trip(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb not installed (pip install 'gdro-ray[wandb]')")
    from _wandb import isolate, read_offline_run

    isolate(monkeypatch, tmp_path)

    run = L.open_loggers(_metrics_cfg(["wandb"]), tmp_path)
    _drive(run, tmp_path)
    config, history = read_offline_run(tmp_path / "wandb")
    assert config["prompt_gdro"] == {"eta": 0.65} and config["algorithm"] == "both"
    by_step: dict = {}
    for row in history:
        by_step.setdefault(row["_step"], {}).update(row)
    assert by_step[0]["eval/pooled/pass_at_k"] == 0.25
    assert [by_step[s]["reward_mean"] for s in (1, 2, 3)] == pytest.approx([0.1, 0.2, 0.3])
    assert by_step[2]["bins/bin_weights/bin1"] == 0.3 and by_step[3]["stage_time_s/learn"] == 4.0
    assert by_step[3]["eval/tier3/pass_at_k"] == 0.2
    assert "bins/bin_pass_at_k/bin0" not in by_step[1]  # null pass@k is not logged
    assert not any("pooled_pass_at_k" in row for row in history)
    assert by_step[3]["samples/path"].startswith("media/table/samples_3_")  # the sample completions as a table
    table = next((tmp_path / "wandb").rglob("samples_3_*.table.json"))
    assert "What is 1 + 1?" in table.read_text()


def test_mlflow_file_store_round_trip_and_resume(tmp_path):
    pytest.importorskip("mlflow", reason="mlflow not installed (pip install 'gdro-ray[mlflow]')")
    run = L.open_loggers(_metrics_cfg(["mlflow"]), tmp_path)
    _drive(run, tmp_path)
    lg = run.loggers["mlflow"]
    client, rid = lg.client, lg.run_id
    hist = lambda key: [(m.step, m.value) for m in sorted(client.get_metric_history(rid, key), key=lambda m: m.step)]  # noqa: E731
    assert hist("reward_mean") == [(1, pytest.approx(0.1)), (2, pytest.approx(0.2)), (3, pytest.approx(0.3))]
    assert hist("bins/bin_weights/unseen") == [(1, 0.2), (2, 0.2), (3, 0.2)]
    assert hist("eval/pooled/pass_at_k") == [(0, 0.25), (3, 0.5)]
    params = client.get_run(rid).data.params
    assert params["prompt_gdro.eta"] == "0.65" and params["metrics.loggers"] == "['wandb']"
    assert (tmp_path / "mlruns").is_dir()
    assert [a.path for a in client.list_artifacts(rid, "samples")] == ["samples/step000003.jsonl"]
    again = L.open_loggers(_metrics_cfg(["mlflow"]), tmp_path)  # a resumed run continues the same MLflow run
    assert again.loggers["mlflow"].run_id == rid
    again.log_config(CONFIG)  # params already there are not re-logged (MLflow refuses a changed param)
    again.close()


@pytest.mark.parametrize("name, extra", [("wandb", "gdro-ray[wandb]"), ("mlflow", "gdro-ray[mlflow]")])
def test_absent_package_is_one_line_naming_the_extra(tmp_path, monkeypatch, name, extra):
    real_import = builtins.__import__

    def fake_import(mod, *a, **k):
        if mod == name or mod.startswith(name + "."):
            raise ImportError(f"No module named '{name}'")
        return real_import(mod, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(UserError) as err:
        L.open_loggers(_metrics_cfg(["tensorboard", name]), tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and f"pip install '{extra}'" in msg and msg.startswith("metrics.loggers:")
    assert not (tmp_path / "tensorboard").exists()  # checked before any logger was created


def test_config_keys_validated():
    cfg = load_config(overrides=["metrics.loggers=[tensorboard,mlflow]", "metrics.tensorboard=true"])
    assert L.logger_names(cfg.metrics) == ["tensorboard", "mlflow"]
    assert L.logger_names(load_config(overrides=["metrics.tensorboard=true"]).metrics) == ["tensorboard"]
    with pytest.raises(UserError, match=r"^metrics.loggers\[1\]: must be one of"):
        load_config(overrides=["metrics.loggers=[wandb,neptune]"])
    with pytest.raises(UserError, match=r"^metrics.loggers\[1\]: 'wandb' is listed twice"):
        load_config(overrides=["metrics.loggers=[wandb,wandb]"])
    with pytest.raises(UserError, match=r"^metrics.wandb_mode: must be one of"):
        load_config(overrides=["metrics.wandb_mode=cloud"])


# ---- logger settings checked at start, before Ray ----------------------------------------------
@pytest.mark.parametrize("uri, why", [
    ("not a uri", "is not a tracking URI"),  # MLflow took it for a file-store path and failed after the actors started
    ("ftp://host/x", "is not a tracking URI"),
    ("http://", "names no host"),
    ("file://otherhost/x", "a file store is local"),
    ("sqlite:////no/such/folder/mlflow.db", "sqlite"),
])
def test_mlflow_uri_that_cannot_work_is_one_line(uri, why):
    with pytest.raises(UserError) as e:
        L.check_mlflow_uri(uri, network=False)
    msg = str(e.value)
    assert msg.startswith("metrics.mlflow_tracking_uri:") and why in msg and "\n" not in msg


def test_mlflow_file_uri_in_a_file_or_unreachable_server(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        L.check_mlflow_uri((tmp_path / "afile" / "mlruns").as_uri())
    L.check_mlflow_uri((tmp_path / "new" / "mlruns").as_uri())  # created on first use
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    L.check_mlflow_uri(f"http://127.0.0.1:{port}", network=False)  # --dry-run does not connect
    with pytest.raises(UserError, match=f"no server answers at 127.0.0.1:{port}"):
        L.check_mlflow_uri(f"http://127.0.0.1:{port}")


def test_mlflow_any_file_uri_works_and_a_quote_in_the_folder_resumes(tmp_path, monkeypatch):
    """MLflow 3 refuses file stores unless MLFLOW_ALLOW_FILE_STORE is set: set for any file: URI, not
    only the default one; a quote in the run folder used to break MLflow's filter string."""
    pytest.importorskip("mlflow", reason="mlflow not installed (pip install 'gdro-ray[mlflow]')")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    uri = (tmp_path / "store").as_uri()
    for name in ("it's", "both'\""):
        run_dir = tmp_path / name
        first = L.open_loggers(_metrics_cfg(["mlflow"], mlflow_tracking_uri=uri), run_dir)
        rid = first.loggers["mlflow"].run_id
        first.close()
        again = L.open_loggers(_metrics_cfg(["mlflow"], mlflow_tracking_uri=uri), run_dir)
        assert again.loggers["mlflow"].run_id == rid  # the resumed run found its MLflow run
        again.close()
    assert L.run_filter("/a/it's") == "tags.gdro_run_dir = \"/a/it's\""


def test_wandb_online_without_a_key_is_one_line_at_dry_run(tmp_path):
    pytest.importorskip("wandb", reason="wandb not installed (pip install 'gdro-ray[wandb]')")
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "NETRC"))}
    env.update(HOME=str(tmp_path), WANDB_CONFIG_DIR=str(tmp_path / "cfg"))
    cmd = [sys.executable, "-m", "gdro_ray.cli.main", "train", "--dry-run", "metrics.loggers=[wandb]",
           "metrics.wandb_mode=online"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert p.returncode == 2 and p.stdout == "" and p.stderr.strip().count("\n") == 0
    assert "metrics.wandb_mode: online needs a wandb API key" in p.stderr
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                       env=dict(env, WANDB_API_KEY="a" * 40))
    assert p.returncode == 0, p.stderr
