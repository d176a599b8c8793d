"""The adversary actor: one per job, named, owning the classifier, both controllers and the data order.

It is a thin shell around the pure `Adversary`: it hands out step schedules, takes back results,
keeps the latest step record, serves Prometheus `/metrics` + `/health`, and is the rendezvous
point other processes of the job find by name (`gdro-ray status`, `gdro-ray scale`).
"""
from __future__ import annotations

import time

from gdro_ray.algorithms.schedule import StepSchedule
from gdro_ray.protocol import DriverReport, EvalRecord, SampleRecord, StatusReport

ACTOR_NAME = "gdro_adversary"
NAMESPACE = "gdro_ray"


def _write_service_discovery(exporter, sd_dir: str) -> str:
    """Point Prometheus's file_sd at this endpoint (deploy/prometheus/prometheus-ray-sd.yml), from a
    folder only the job's user can write (gdro_ray/metrics/sd_file.py), never Ray's shared temp root."""
    from gdro_ray.metrics.sd_file import write_sd_file

    host = exporter.host
    if host in ("0.0.0.0", "::"):
        import ray

        host = ray.util.get_node_ip_address()
    return write_sd_file(host, exporter.port, sd_dir)


class AdversaryService:
    def __init__(self, cfg_dict: dict, num_prompts: int, metrics_host: str = "127.0.0.1",
                 metrics_port: int = 0, enable_metrics: bool = True, run_dir: str = ""):
        from gdro_ray.algorithms.adversary import Adversary
        from gdro_ray.config.loader import _build, validate
        from gdro_ray.config.schema import Config

        self.cfg = validate(_build(Config, cfg_dict))
        self.adv = Adversary.from_config(self.cfg, num_prompts)
        self.run_dir = run_dir
        self.last_record: dict | None = None
        self.last_eval: EvalRecord | None = None
        self.last_samples: list[SampleRecord] = []
        self.driver_report: DriverReport | None = None
        self.queued_shards: int | None = None
        self.rollouts_total = 0
        self.weights_version = 0
        self.desired_samplers = self.cfg.sampler.num_samplers
        self.started = time.time()
        self.exporter = None
        if enable_metrics:
            from gdro_ray.metrics.exporter import Exporter

            self.exporter = Exporter(metrics_host, metrics_port, health=self.health)
            if self.cfg.metrics.service_discovery:
                self.sd_file = _write_service_discovery(self.exporter, self.cfg.metrics.sd_dir)

    # ---- the schedule/observe protocol ----------------------------------------------------
    # The schedule object itself crosses Ray (numpy arrays pickle as buffers). It stays pending
    # here, so `observe` names the step it answers rather than sending the schedule back.
    def schedule(self) -> StepSchedule:
        return self.adv.schedule()

    def schedule_ahead(self) -> StepSchedule:
        """The next step's schedule before the current one is observed (one-step off-policy)."""
        return self.adv.schedule_ahead()

    def extend(self, count: int) -> StepSchedule:
        """Grow the pending schedule by `count` prompts (a dynamic-sampling refill round)."""
        return self.adv.extend(count)

    def observe(self, step: int, rewards: list, surrogate: list[float] | None, weights_version: int) -> dict:
        """The results of pending step `step`: per prompt its rewards in [0, 1] (slot order), the
        learner's per-prompt surrogate losses (or None), and the weights version they produced."""
        import numpy as np

        sched = self.adv.pending_schedule()
        if sched is None or sched.step != int(step):
            pending = "none" if sched is None else f"step {sched.step}"
            raise ValueError(f"observe: results for step {step}, the pending schedule is {pending}")
        record = self.adv.observe(sched, [np.asarray(r, dtype=float) for r in rewards],
                                  None if surrogate is None else np.asarray(surrogate, dtype=float))
        self.rollouts_total += int(record["rollouts"])
        self.weights_version = weights_version
        self.last_record = record
        if self.exporter:
            self.exporter.update_adversary(record, self.rollouts_total, weights_version)
        return record

    # ---- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        from gdro_ray.algorithms.state import to_jsonable

        return to_jsonable({"adversary": self.adv.state_dict(), "rollouts_total": self.rollouts_total})

    def load_state_dict(self, state: dict) -> None:
        self.adv.load_state_dict(state["adversary"])
        self.rollouts_total = int(state.get("rollouts_total", 0))

    def metrics(self) -> dict:
        return self.adv.metrics()

    # ---- driver, status and scaling -------------------------------------------------------
    def report_driver(self, report: DriverReport) -> None:
        """The driver's measurements of the step just done, for the gauges and `gdro-ray status`."""
        self.driver_report = report
        if self.exporter:
            self.exporter.update_driver(report)

    def report_queue(self, queued_shards: int) -> None:
        """Shards waiting for a sampler right now (pushed by the pool while a step samples)."""
        self.queued_shards = int(queued_shards)
        if self.exporter:
            self.exporter.update_queue(int(queued_shards))

    def report_eval(self, record: EvalRecord) -> None:
        """The latest held-out evaluation (an `eval` record of metrics.jsonl), for gauges and status."""
        self.last_eval = record
        if self.exporter:
            self.exporter.update_eval(record)

    def report_samples(self, records: list[SampleRecord]) -> None:
        """The newest sample completions (`gdro_ray/metrics/samples.py`), for `gdro-ray status`."""
        self.last_samples = list(records)

    def request_samplers(self, n: int) -> int:
        lim = self.cfg.sampler.max_samplers
        if not 1 <= n <= lim:
            raise ValueError(f"--samplers must be in [1, {lim}] (sampler.max_samplers), got {n}")
        self.desired_samplers = n
        return n

    def get_desired_samplers(self) -> int:
        return self.desired_samplers

    def metrics_address(self) -> str:
        return self.exporter.address if self.exporter else ""

    def health(self) -> dict:
        return {"ok": True, "step": self.adv.metrics().get("step", 0), "uptime_s": time.time() - self.started}

    def status(self) -> StatusReport:
        return StatusReport(
            run_dir=self.run_dir, algorithm=self.cfg.algorithm, metrics_address=self.metrics_address(),
            record=self.last_record, driver=self.driver_report, queued_shards=self.queued_shards,
            desired_samplers=self.desired_samplers, weights_version=self.weights_version,
            rollouts_total=self.rollouts_total, eval=self.last_eval, samples=list(self.last_samples))

    def close(self) -> None:
        if self.exporter:
            self.exporter.close()
