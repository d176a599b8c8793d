"""Prometheus exporter for the adversary actor: `/metrics` and `/health` on one small HTTP server.

It owns a private registry (never the process-global one, so several runs or tests in one
process cannot collide) built from `gdro_ray.metrics.names.METRICS`, the single list of
exported names. Binding all interfaces is an explicit opt-in (`metrics.host=0.0.0.0`), logged.
"""
from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from gdro_ray.metrics.names import METRICS
from gdro_ray.protocol import DriverReport, EvalRecord

log = logging.getLogger("gdro_ray.metrics")

# record field -> per-bin gauge
_PER_BIN = {
    "bin_weights": "gdro_bin_weight",
    "bin_scores": "gdro_bin_score",
    "bin_prompts": "gdro_bin_prompts",
    "bin_rollouts": "gdro_bin_rollouts",
    "bin_pass_at_k": "gdro_bin_pass_at_k",
    "bin_variance": "gdro_bin_variance",
    "bin_share": "gdro_bin_share",
    "bin_clip_fraction": "gdro_bin_clip_fraction",
}


def group_labels(num_groups: int) -> list[str]:
    """Bin labels in record order: '0' (hardest) … 'B-1' (easiest), then 'unseen'."""
    return [str(i) for i in range(num_groups - 1)] + ["unseen"]


class Exporter:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, health=None):
        self.registry = CollectorRegistry()
        self.m = {}
        for spec in METRICS:
            cls = {"gauge": Gauge, "counter": Counter, "histogram": Histogram}[spec.kind]
            self.m[spec.name] = cls(spec.name.removesuffix("_total") if spec.kind == "counter" else spec.name,
                                    spec.help, labelnames=tuple(spec.labels), registry=self.registry)
        self._health = health or (lambda: {"ok": True})
        self._counters: dict[str, float] = {}
        if host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("metrics endpoint binds %s: reachable from other hosts (explicit opt-in)", host)
        self.server = ThreadingHTTPServer((host, port), self._handler())
        self.host, self.port = host, self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="gdro-metrics", daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def _handler(self):
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server API)
                if self.path.startswith("/metrics"):
                    body, ctype, code = generate_latest(exporter.registry), CONTENT_TYPE_LATEST, 200
                elif self.path.startswith("/health"):
                    body, ctype, code = json.dumps(exporter._health()).encode(), "application/json", 200
                else:
                    body, ctype, code = b"not found: try /metrics or /health\n", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # keep scrapes out of the job log
                pass

        return Handler

    def set(self, name: str, value: float, **labels) -> None:
        metric = self.m[name]
        (metric.labels(**labels) if labels else metric).set(float(value))

    def inc_to(self, name: str, total: float, **labels) -> None:
        """Advance a counter to an absolute total (counters only go up)."""
        key = name + json.dumps(labels, sort_keys=True)
        delta = float(total) - self._counters.get(key, 0.0)
        if delta > 0:
            metric = self.m[name]
            (metric.labels(**labels) if labels else metric).inc(delta)
            self._counters[key] = float(total)

    def update_adversary(self, record: dict, rollouts_total: float, weights_version: int) -> None:
        labels = group_labels(len(record["bin_weights"]))
        for field, name in _PER_BIN.items():
            for lab, v in zip(labels, record.get(field, [])):
                if v is not None and v == v:  # skip None/NaN (empty bins)
                    self.set(name, v, bin=lab)
        self.set("gdro_step", record["step"])
        self.set("gdro_shadow_price", record.get("shadow_price", 0.0))
        self.set("gdro_weights_version", weights_version)
        self.inc_to("gdro_rollouts_total", rollouts_total)

    def update_driver(self, report: DriverReport) -> None:
        """The driver's report of a step: its gauges, and the run totals as counters."""
        simple = {"step_time_s": "gdro_step_time_seconds", "tokens_per_s": "gdro_tokens_per_second",
                  "reward_mean": "gdro_reward_mean", "samplers": "gdro_samplers_live", "staleness": "gdro_staleness",
                  "response_len_mean": "gdro_response_length_mean", "response_len_max": "gdro_response_length_max",
                  "truncation_rate": "gdro_truncation_rate", "entropy": "gdro_policy_entropy"}
        for key, name in simple.items():
            if getattr(report, key) is not None and name in self.m:
                self.set(name, getattr(report, key))
        for stage, secs in report.stages.items():
            self.set("gdro_stage_time_seconds", secs, stage=stage)
        for rank, phases in enumerate(report.learner_phases or []):
            for phase, secs in (phases or {}).items():
                self.set("gdro_learner_phase_seconds", secs, rank=str(rank), phase=phase)
        for key, name in {"requeued": "gdro_shards_requeued_total", "restarts": "gdro_sampler_restarts_total",
                          "reward_timeouts": "gdro_reward_timeouts_total"}.items():
            if getattr(report, key) is not None:
                self.inc_to(name, getattr(report, key))

    def update_queue(self, queued_shards: int) -> None:
        """Shards waiting for a sampler right now."""
        self.set("gdro_queue_shards", queued_shards)

    def update_eval(self, record: EvalRecord) -> None:
        """An evaluation's record (gdro_ray/service/validation.py): its `<group>/<stat>` metrics as gauges."""
        for key, value in (record.metrics or {}).items():
            group, _, stat = key.partition("/")
            name = {"pass_at_k": "gdro_eval_pass_at_k", "mean_at_k": "gdro_eval_mean_at_k"}.get(stat)
            if name:
                self.set(name, value, group=group)
        self.set("gdro_eval_steps", record.steps_done)
        best = record.best
        if best and best.get("best_value") is not None:
            self.set("gdro_eval_best", best["best_value"])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
