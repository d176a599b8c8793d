"""Experiment loggers beside Prometheus: TensorBoard, wandb, MLflow behind one small interface.

`open_loggers(cfg, run_dir)` returns one `RunLoggers` (or None when none is asked for) that the
driver calls: `log_config(config)` once, `log_step(record)` per step record, `log_eval(result,
step)` per evaluation (base at step 0, periodic ones, final), `close()` at the end. Every logger
gets the same numbers, flattened by `tensorboard.record_scalars` / `eval_scalars`: each numeric
field of the step record (docs/metrics.md) at step `record["step"] + 1` (optimizer steps done),
one series per bin for the per-group fields (`bins/<field>/bin0` … `unseen`), and `eval/*`.

- `tensorboard`: event files in <run_dir>/tensorboard/ (also `metrics.tensorboard: true`); the
  config as a text summary.
- `wandb` (extra `gdro-ray[wandb]`): `metrics.wandb_mode` offline by default, files in
  <run_dir>/wandb/ (`wandb sync` them later); the run id is derived from the run folder, so a
  resumed run continues the same wandb run (steps it already has are ignored by wandb).
- `mlflow` (extra `gdro-ray[mlflow]`, the `mlflow-skinny` client): `metrics.mlflow_tracking_uri`,
  or a local file store <run_dir>/mlruns (MLflow 3 refuses file stores unless
  MLFLOW_ALLOW_FILE_STORE=true; it is set for that default). Params: the flattened config.

A package that is not installed stops the run at start with one line naming the extra.
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from gdro_ray.errors import UserError
from gdro_ray.metrics.tensorboard import eval_scalars, record_scalars

EXTRAS = {"wandb": ("wandb", "gdro-ray[wandb]"), "mlflow": ("mlflow", "gdro-ray[mlflow]")}


def _require(name: str):
    module, extra = EXTRAS[name]
    try:
        return __import__(module)
    except ImportError as e:
        raise UserError(f"metrics.loggers: {name} is not installed ({e}); pip install '{extra}'") from None


def flatten_config(tree: dict, prefix: str = "") -> dict[str, str]:
    """{"section.key": "value"} for every leaf of the resolved config."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten_config(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)
    return out


def _step_of(record: dict) -> int:
    return int(record["step"]) + 1


class TensorBoardLogger:
    def __init__(self, run_dir: Path):
        from gdro_ray.metrics.tensorboard import TensorBoardWriter

        self.writer = TensorBoardWriter(run_dir)
        self.where = str(self.writer.log_dir)

    def log_config(self, config: dict) -> None:
        import yaml

        text = "    " + yaml.safe_dump(config, sort_keys=False).replace("\n", "\n    ")  # markdown code block
        self.writer._writer.add_text("config", text, 0)

    def log_step(self, record: dict) -> None:
        self.writer.write_record(record)

    def log_eval(self, result: dict, step: int) -> None:
        self.writer.write_eval(result, step)

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """The wandb run starts at the first call, with the config when that call is `log_config`
    (so the config is part of the run's own record, not a later update); a later `log_config`
    (a resume) updates it."""

    def __init__(self, run_dir: Path, project: str, mode: str):
        self._wandb = _require("wandb")
        self.run_dir, self.project, self.mode = run_dir, project, mode
        self.run = None
        self.where = str(run_dir / "wandb") if mode == "offline" else f"project {project}"

    def _start(self, config: dict | None = None):
        if self.run is None:
            wandb = self._wandb
            self.run_dir.mkdir(parents=True, exist_ok=True)
            run_id = hashlib.sha1(str(self.run_dir.resolve()).encode()).hexdigest()[:16]
            self.run = wandb.init(project=self.project, name=self.run_dir.name, id=run_id, resume="allow",
                                  dir=str(self.run_dir), mode=self.mode, config=config, allow_val_change=True,
                                  settings=wandb.Settings(console="off", silent=True))
        elif config is not None:
            self.run.config.update(config, allow_val_change=True)
        return self.run

    def log_config(self, config: dict) -> None:
        self._start(config)

    def log_step(self, record: dict) -> None:
        self._start().log(record_scalars(record), step=_step_of(record))

    def log_eval(self, result: dict, step: int) -> None:
        self._start().log(eval_scalars(result), step=int(step))

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()


class MlflowLogger:
    MAX_PARAM_CHARS = 500  # MLflow's limit on one param value

    def __init__(self, run_dir: Path, tracking_uri: str, experiment: str):
        if not tracking_uri:
            tracking_uri = (run_dir / "mlruns").resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # our default; see the module docstring
        _require("mlflow")
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri)
        exp = self.client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(experiment)
        # a resumed run continues the MLflow run of the same folder (tagged with it)
        folder = str(run_dir.resolve())
        found = self.client.search_runs([exp_id], filter_string=f"tags.gdro_run_dir = '{folder}'", max_results=1)
        self.run_id = found[0].info.run_id if found else self.client.create_run(
            exp_id, run_name=run_dir.name, tags={"gdro_run_dir": folder}).info.run_id
        self.where = f"{tracking_uri} (experiment {experiment}, run {self.run_id})"

    def _metrics(self, scalars: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step) for k, v in scalars.items()]
        for i in range(0, len(items), 1000):  # MLflow's batch limit
            self.client.log_batch(self.run_id, metrics=items[i:i + 1000])

    def log_config(self, config: dict) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        params = [Param(k, v[: self.MAX_PARAM_CHARS]) for k, v in flatten_config(config).items()
                  if k not in existing]  # a param cannot change value: a resumed run keeps the first
        for i in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[i:i + 100])
        self.client.log_dict(self.run_id, config, "config.yaml")

    def log_step(self, record: dict) -> None:
        self._metrics(record_scalars(record), _step_of(record))

    def log_eval(self, result: dict, step: int) -> None:
        self._metrics(eval_scalars(result), int(step))

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class RunLoggers:
    """Fans the four calls out to every configured logger."""

    def __init__(self, loggers: dict):
        self.loggers = loggers

    def log_config(self, config: dict) -> None:
        for lg in self.loggers.values():
            lg.log_config(config)

    def log_step(self, record: dict) -> None:
        if record.get("type") == "eval":  # an eval line of metrics.jsonl: its scalars come via log_eval
            return
        for lg in self.loggers.values():
            lg.log_step(record)

    def log_eval(self, result: dict, step: int) -> None:
        for lg in self.loggers.values():
            lg.log_eval(result, step)

    # the names TensorBoardWriter had, for callers written against it
    write_record, write_eval = log_step, log_eval

    def describe(self) -> str:
        return "; ".join(f"{name}: {lg.where}" for name, lg in self.loggers.items())

    def close(self) -> None:
        for lg in self.loggers.values():
            lg.close()


def logger_names(metrics_cfg) -> list[str]:
    """metrics.loggers, plus `tensorboard` when the older metrics.tensorboard flag is on."""
    names = list(metrics_cfg.loggers)
    if getattr(metrics_cfg, "tensorboard", False) and "tensorboard" not in names:
        names.insert(0, "tensorboard")
    return names


def open_loggers(metrics_cfg, run_dir: str | Path) -> RunLoggers | None:
    """The loggers `metrics_cfg` asks for, or None; packages are checked before anything is created."""
    names = logger_names(metrics_cfg)
    for name in names:
        if name in EXTRAS:
            _require(name)
    run_dir = Path(run_dir)
    loggers: dict = {}
    try:
        for name in names:
            if name == "tensorboard":
                loggers[name] = TensorBoardLogger(run_dir)
            elif name == "wandb":
                loggers[name] = WandbLogger(run_dir, metrics_cfg.wandb_project, metrics_cfg.wandb_mode)
            elif name == "mlflow":
                loggers[name] = MlflowLogger(run_dir, metrics_cfg.mlflow_tracking_uri, metrics_cfg.mlflow_experiment)
            else:  # validated at start; a programming error if reached
                raise UserError(f"metrics.loggers: unknown logger {name!r}")
    except BaseException:
        for lg in loggers.values():
            lg.close()
        raise
    return RunLoggers(loggers) if loggers else None
