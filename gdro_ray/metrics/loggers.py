"""Experiment loggers beside Prometheus: TensorBoard, wandb, MLflow behind one small interface.

`open_loggers(cfg, run_dir)` returns one `RunLoggers` (or None when none is asked for) that the
driver calls: `log_config(config)` once, `log_step(record)` per step record, `log_eval(result,
step)` per evaluation (base at step 0, periodic ones, final), `log_samples(records, step)` every
`metrics.samples_every` steps (a text block, a wandb table, an MLflow artifact), `close()` at the end. Every logger
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
  MLFLOW_ALLOW_FILE_STORE=true; it is set for that default and for any `file:` URI, since the
  file store is what the skinny client writes without a server). Params: the flattened config.

A package that is not installed stops the run at start with one line naming the extra; so does a
setting that cannot work (`check_logger_settings`, called before Ray starts and by `--dry-run`):
a tracking URI that is not one, a file or sqlite store in a folder that cannot be written, a
server that does not answer (not in `--dry-run`), wandb `online` without an API key.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import socket
import time
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

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

    def log_samples(self, records: list[dict], step: int) -> None:
        from gdro_ray.metrics.samples import samples_markdown

        self.writer._writer.add_text("samples", samples_markdown(records), step)

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

    def log_samples(self, records: list[dict], step: int) -> None:
        rows = [[r["step"] + 1, r["bin"], r["prompt"], x["text"], x["reward"], x["advantage"], x["tokens"]]
                for r in records for x in r["responses"]]
        table = self._wandb.Table(columns=["step", "bin", "prompt", "response", "reward", "advantage", "tokens"],
                                  data=rows)
        self._start().log({"samples": table}, step=int(step))

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()


def run_filter(folder: str) -> str:
    """MLflow's filter for the run of `folder`. Its filter strings have no escape for a quote inside a
    value, so the value is quoted with the quote it lacks; a folder with both is found by its hash."""
    for quote in ("'", '"'):
        if quote not in folder:
            return f"tags.gdro_run_dir = {quote}{folder}{quote}"
    return f"tags.gdro_run_key = '{hashlib.sha1(folder.encode()).hexdigest()[:16]}'"


class MlflowLogger:
    MAX_PARAM_CHARS = 500  # MLflow's limit on one param value

    def __init__(self, run_dir: Path, tracking_uri: str, experiment: str):
        if not tracking_uri:
            tracking_uri = (run_dir / "mlruns").resolve().as_uri()
        if tracking_uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # see the module docstring
        _require("mlflow")
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri)
        exp = self.client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(experiment)
        # a resumed run continues the MLflow run of the same folder (tagged with it)
        folder = str(run_dir.resolve())
        key = hashlib.sha1(folder.encode()).hexdigest()[:16]
        found = self.client.search_runs([exp_id], filter_string=run_filter(folder), max_results=1)
        self.run_id = found[0].info.run_id if found else self.client.create_run(
            exp_id, run_name=run_dir.name, tags={"gdro_run_dir": folder, "gdro_run_key": key}).info.run_id
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

    def log_samples(self, records: list[dict], step: int) -> None:
        import json

        text = "".join(json.dumps(r) + "\n" for r in records)
        self.client.log_text(self.run_id, text, f"samples/step{int(step):06d}.jsonl")

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

    def log_samples(self, records: list[dict], step: int) -> None:
        """Sample completions (`gdro_ray/metrics/samples.py`) at `step` optimizer steps done."""
        for lg in self.loggers.values():
            lg.log_samples(records, step)

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


# Tracking URI schemes the MLflow client takes (a database scheme may carry a driver: mysql+pymysql).
MLFLOW_SCHEMES = ("file", "sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks", "databricks-uc")
_DB_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
_URI_HINT = ("use file:///PATH, http(s)://HOST:PORT, or sqlite:///PATH/mlflow.db with the full mlflow package "
             "(empty = <run_dir>/mlruns)")
CONNECT_TIMEOUT_S = 5.0  # a tracking server that does not answer in this time fails the start


def _writable_folder(folder: Path, uri: str) -> None:
    """The store's folder is, or can be created, and written."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"metrics.mlflow_tracking_uri: {probe} (in {uri}) is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"metrics.mlflow_tracking_uri: cannot write in {probe} (for {uri})")


def check_mlflow_uri(uri: str, network: bool = True) -> None:
    """One line at start when `uri` cannot work; `network` also connects to an http(s) server."""
    if not uri:
        return
    parsed = urlparse(uri)
    scheme = parsed.scheme.lower().split("+")[0]
    if scheme not in MLFLOW_SCHEMES:
        raise UserError(f"metrics.mlflow_tracking_uri: {uri!r} is not a tracking URI; {_URI_HINT}")
    if scheme in _DB_SCHEMES and importlib.util.find_spec("sqlalchemy") is None:
        raise UserError(f"metrics.mlflow_tracking_uri: a {scheme} store needs the full mlflow package (pip install "
                        "mlflow; the mlflow-skinny client has none); or use file:///PATH or an http(s) server")
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise UserError(f"metrics.mlflow_tracking_uri: {uri!r} names host {parsed.netloc!r}; "
                            "a file store is local: file:///PATH")
        _writable_folder(Path(url2pathname(parsed.path)), uri)
    elif scheme == "sqlite":
        db = parsed.path[1:]  # sqlite:///rel.db is relative, sqlite:////abs.db absolute
        if db and db != ":memory:":
            folder = Path(db).parent
            if not folder.is_dir():  # sqlite creates the file, not its folder
                raise UserError(f"metrics.mlflow_tracking_uri: folder {folder} of {uri} does not exist")
            _writable_folder(folder, uri)
    elif scheme in ("http", "https"):
        if not parsed.hostname:
            raise UserError(f"metrics.mlflow_tracking_uri: {uri!r} names no host; {_URI_HINT}")
        if network:  # MLflow itself retries an absent server for minutes, after the actors started
            port = parsed.port or (443 if scheme == "https" else 80)
            try:
                socket.create_connection((parsed.hostname, port), timeout=CONNECT_TIMEOUT_S).close()
            except OSError as e:
                why = e.strerror or type(e).__name__
                raise UserError(f"metrics.mlflow_tracking_uri: no server answers at {parsed.hostname}:{port} "
                                f"({why}); start it, or fix the URI") from None


def _wandb_has_key() -> bool | None:
    """Whether wandb finds an API key (environment, settings file or .netrc), as wandb looks for it;
    None when this wandb does not expose that lookup (then wandb itself decides at start)."""
    try:
        from wandb.sdk import wandb_setup
        from wandb.sdk.lib import wbauth

        settings = wandb_setup.singleton().settings
        return bool(settings.api_key or wbauth.read_netrc_auth(host=settings.base_url))
    except (ImportError, AttributeError, TypeError):
        return None
    except Exception:  # a malformed key in .netrc: wandb would refuse it too
        return False


def check_logger_settings(metrics_cfg, network: bool = True) -> None:
    """Refuse, in one line before anything starts, a logger that would fail after the actors start:
    an absent package, an MLflow tracking URI that cannot work, wandb `online` without a key."""
    names = logger_names(metrics_cfg)
    for name in names:
        if name in EXTRAS and importlib.util.find_spec(EXTRAS[name][0]) is None:
            raise UserError(f"metrics.loggers: {name} is not installed; pip install '{EXTRAS[name][1]}'")
    if "mlflow" in names:
        check_mlflow_uri(metrics_cfg.mlflow_tracking_uri, network)
    if "wandb" in names and metrics_cfg.wandb_mode == "online" and _wandb_has_key() is False:
        raise UserError("metrics.wandb_mode: online needs a wandb API key (WANDB_API_KEY or `wandb login`); "
                        "or metrics.wandb_mode=offline to sync later")


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
