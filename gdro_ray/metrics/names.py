"""The Prometheus metric names gdro_ray exports: the single source of truth.

Every metric the adversary's `/metrics` endpoint serves is declared here once, as a
`MetricSpec` (name, kind, label names, help text). Three consumers read the list:

- the exporter registers exactly these metrics (and nothing else) in its own registry;
- `docs/metrics-prometheus.md` is rendered from it by `render_markdown()` (a test keeps the
  committed file in sync);
- the Grafana dashboard under `deploy/grafana/` may only query names that `exposed_names()`
  returns (a test parses every panel's PromQL).

Naming follows the Prometheus conventions: a `gdro_` prefix, base units in the name
(`_seconds`), and counters end in `_total`. prometheus-client exposes a counter declared as
`gdro_x_total` under that same name, and a histogram `gdro_y` as `gdro_y_bucket`,
`gdro_y_sum` and `gdro_y_count`; `exposed_names()` applies that mapping so consumers match
what a scrape really returns.

Label values: `bin` is the classifier's bin index as a string ("0" = hardest) or "unseen"
for prompts never visited; `stage` is one of `STAGES`; `group` is an evaluation group:
`pooled`, `worst_tier` or `tier<t>` (the held-out set's tiers).

This module is pure (no prometheus-client import), so the CLI, docs and tests can read it
without starting anything. It also fixes the scrape conventions the deploy files rely on:
the default fixed port and the file-service-discovery file the job writes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

MetricKind = Literal["gauge", "counter", "histogram"]

#: The fixed port used on clusters (`metrics.port=9464`); 0 in the config means "pick a free
#: port", which suits a laptop but not a scrape config.
DEFAULT_CLUSTER_PORT = 9464

#: Name of the Prometheus file-SD target file the job writes into `metrics.sd_dir`, a folder only
#: the job's user can write (gdro_ray/metrics/sd_file.py), not Ray's shared temp root.
ADVERSARY_SD_FILENAME = "gdro_prom_service_discovery.json"

#: Values of the `stage` label of `gdro_stage_time_seconds`, in the order a step runs them.
STAGES = ("schedule", "generate", "reward", "learn", "publish", "observe")

#: Values of the `phase` label of `gdro_learner_phase_seconds` (gdro_ray/learner/phases.py).
LEARNER_PHASES = ("fetch", "behaviour", "forward", "reference", "backward", "optimizer", "sync")

BIN = ("bin",)
EVAL_GROUP = ("group",)


@dataclass(frozen=True)
class MetricSpec:
    """One exported metric: its Prometheus name, type, label names and meaning."""

    name: str
    kind: MetricKind
    labels: tuple[str, ...]
    help: str

    def __post_init__(self) -> None:
        # Malformed specs would only surface at registration in a running job; fail at import.
        if not self.name.startswith("gdro_"):
            raise ValueError(f"metric {self.name}: must start with gdro_")
        if self.kind not in ("gauge", "counter", "histogram"):
            raise ValueError(f"metric {self.name}: unknown kind {self.kind!r}")
        if (self.kind == "counter") != self.name.endswith("_total"):
            raise ValueError(f"metric {self.name}: counters, and only counters, end in _total")

    def sample_names(self) -> tuple[str, ...]:
        """The series names a scrape returns for this metric."""
        if self.kind == "histogram":
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        return (self.name,)


METRICS: list[MetricSpec] = [
    # --- adversary: progress ---------------------------------------------------------
    MetricSpec("gdro_step", "gauge", (), "Last completed training step (0 before the first)."),
    MetricSpec("gdro_weights_version", "gauge", (),
               "Version of the policy weights last published to the samplers."),
    MetricSpec("gdro_rollouts_total", "counter", (),
               "Rollouts generated and scored since the run started (per bin: gdro_bin_rollouts)."),
    # --- adversary: per bin ----------------------------------------------------------
    MetricSpec("gdro_bin_weight", "gauge", BIN,
               "Prompt-GDRO probability q_b of the bin (sums to 1 over bins in play)."),
    MetricSpec("gdro_bin_score", "gauge", BIN,
               "Prompt-GDRO EMA intensive score S_b of the bin, before the clip."),
    MetricSpec("gdro_bin_clip_fraction", "gauge", BIN,
               "Fraction of steps so far at which the bin's score S_b sat at the clip ±C."),
    MetricSpec("gdro_bin_prompts", "gauge", BIN,
               "Prompts of the pool currently classified into the bin."),
    MetricSpec("gdro_bin_rollouts", "gauge", BIN,
               "Rollouts allocated to the bin in the last step (Rollout-GDRO n_b summed)."),
    MetricSpec("gdro_bin_share", "gauge", BIN,
               "Realised share of the last step's rollouts that went to the bin (0..1)."),
    MetricSpec("gdro_bin_pass_at_k", "gauge", BIN,
               "Mean estimated pass@k of the prompts in the bin (k = classifier.k)."),
    MetricSpec("gdro_bin_variance", "gauge", BIN,
               "Rollout-GDRO variance proxy v_b of the bin (EMA of the prompts' pi(1-pi) of estimated pass@k, "
               "or p(1-p) of the visit; floored)."),
    MetricSpec("gdro_shadow_price", "gauge", (),
               "Rollout-GDRO shadow price mu >= 0 on the mean rollout budget."),
    # --- driver / trainer ------------------------------------------------------------
    MetricSpec("gdro_step_time_seconds", "gauge", (), "Wall time of the last training step."),
    MetricSpec("gdro_stage_time_seconds", "gauge", ("stage",),
               "Wall time of each stage of the last step: " + ", ".join(STAGES) + "."),
    MetricSpec("gdro_learner_phase_seconds", "gauge", ("rank", "phase"),
               "Wall time of each phase of the last step on each learner rank: " + ", ".join(LEARNER_PHASES)
               + " (a phase that does not shrink when ranks are added is communication-bound)."),
    MetricSpec("gdro_tokens_per_second", "gauge", (),
               "Generated tokens per second of wall time over the last step."),
    MetricSpec("gdro_reward_mean", "gauge", (), "Mean verifier reward of the last step's rollouts (0..1)."),
    MetricSpec("gdro_response_length_mean", "gauge", (), "Mean response length (tokens) of the last step's rollouts."),
    MetricSpec("gdro_response_length_max", "gauge", (), "Longest response (tokens) of the last step's rollouts."),
    MetricSpec("gdro_policy_entropy", "gauge", (),
               "The policy's entropy per response token over the last step's trained rollouts, before the update "
               "(a collapse towards 0 means the policy stopped exploring)."),
    MetricSpec("gdro_truncation_rate", "gauge", (),
               "Share of the last step's rollouts cut off at sampler.max_new_tokens (a rise means the policy "
               "writes past the limit: its reward is then usually 0)."),
    MetricSpec("gdro_staleness", "gauge", (),
               "Weight-version lag of the last step's rollouts (0 = on-policy)."),
    MetricSpec("gdro_samplers_live", "gauge", (), "Sampler actors alive and taking work."),
    MetricSpec("gdro_queue_shards", "gauge", (), "Work shards queued and not yet handed to a sampler."),
    MetricSpec("gdro_shards_requeued_total", "counter", (),
               "Work shards re-queued because their sampler died or was removed."),
    MetricSpec("gdro_sampler_restarts_total", "counter", (), "Sampler actors restarted or replaced."),
    MetricSpec("gdro_reward_timeouts_total", "counter", (),
               "Verifier calls that hit sampler.reward_timeout_s (scored 0)."),
    # --- held-out evaluation (base, every eval.every steps, final) -------------------
    MetricSpec("gdro_eval_pass_at_k", "gauge", EVAL_GROUP,
               "Held-out pass@k (k = eval.k) of the last evaluation, per group."),
    MetricSpec("gdro_eval_mean_at_k", "gauge", EVAL_GROUP,
               "Held-out mean@k (fraction of correct samples) of the last evaluation, per group."),
    MetricSpec("gdro_eval_steps", "gauge", (), "Training steps done when the last evaluation ran (0 = base model)."),
    MetricSpec("gdro_eval_best", "gauge", (),
               "Best value so far of the checkpoint.keep_best metric (set once a checkpoint is kept for it)."),
]

BY_NAME: dict[str, MetricSpec] = {m.name: m for m in METRICS}
if len(BY_NAME) != len(METRICS):  # pragma: no cover - guards edits to the list above
    raise ValueError("duplicate metric name in METRICS")


def exposed_names() -> set[str]:
    """Every series name a scrape of the endpoint can return (histogram suffixes included)."""
    return {s for m in METRICS for s in m.sample_names()}


def adversary_sd_targets(host: str, port: int, labels: dict[str, str] | None = None) -> str:
    """Content of the file-SD file (JSON) that points Prometheus at the adversary endpoint.

    The format is Prometheus's `file_sd_configs` one: a list of target groups. The job writes
    it (atomically) to `<metrics.sd_dir>/ADVERSARY_SD_FILENAME` once the endpoint is bound.
    """
    # No `job` label: target-group labels would override the scrape job's own name.
    group = {"targets": [f"{host}:{port}"], "labels": {"component": "adversary", **(labels or {})}}
    return json.dumps([group], indent=2) + "\n"


def render_markdown() -> str:
    """The reference page `docs/metrics-prometheus.md`, generated from `METRICS`."""
    lines = [
        "# Prometheus metrics",
        "",
        "<!-- Generated by gdro_ray.metrics.names.render_markdown(); edit METRICS there, then run",
        "     `make docs`. -->",
        "",
        "The adversary actor serves these on `/metrics` (health on `/health`). The bind address is",
        "`metrics.host`/`metrics.port` (default `127.0.0.1`, port chosen at start and printed);",
        f"on clusters use the fixed port `metrics.port={DEFAULT_CLUSTER_PORT}` and `metrics.host=0.0.0.0`",
        "(an explicit, logged opt-in). The job also writes a Prometheus file-SD target file",
        f"`{ADVERSARY_SD_FILENAME}` in `metrics.sd_dir` (a folder only the job's user writes); see",
        "`deploy/prometheus/README.md`.",
        "",
        "Label `bin`: the classifier bin index as a string (`0` = hardest) or `unseen`.",
        f"Label `stage`: one of {', '.join(f'`{s}`' for s in STAGES)}.",
        "Label `group`: `pooled`, `worst_tier` or `tier<t>` of the held-out set (the groups of `eval` records).",
        "",
        "| name | type | labels | meaning |",
        "|---|---|---|---|",
    ]
    for m in METRICS:
        labels = ", ".join(f"`{label}`" for label in m.labels) or "—"
        lines.append(f"| `{m.name}` | {m.kind} | {labels} | {m.help} |")
    return "\n".join(lines) + "\n"

