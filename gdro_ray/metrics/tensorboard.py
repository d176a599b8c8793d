"""TensorBoard event files for a training run (`metrics.loggers: [tensorboard]`, or `metrics.tensorboard: true`).

The tag flattening here (`record_scalars`, `eval_scalars`) is shared by every logger
(`loggers.py`: wandb and MLflow log the same names).

The step record (docs/metrics.md) is the single source: every numeric field becomes one scalar
at global step `record["step"] + 1` (the number of optimizer steps done, so it lines up with
`eval/*` written at 0 for the base model and at the last step for the final one). Per-group lists
become one scalar per group under `bins/<field>/<group>` with groups named `bin0` … `binN` and
`unseen`, so TensorBoard's scalar view overlays the bins of one field. `null` entries (an empty
bin's pass@k) are skipped rather than written as NaN. Nested dicts (stage timings) are flattened
with `/`. Files go to `<run_dir>/tensorboard/`; a resumed run appends to the same folder, and
TensorBoard keeps the latest value per step.
"""
from __future__ import annotations

import math
from pathlib import Path

# Per-group list fields that are plotted; the rest of the lists (group ids of a batch, …) are not
# per-group quantities and are skipped.
_GROUP_FIELDS = ("bin_weights", "bin_share", "bin_scores", "bin_variance", "bin_pass_at_k", "bin_prompts",
                 "bin_batch_prompts", "bin_rollouts", "bin_clip_fraction", "bin_adv_weight", "bin_progress")


def group_names(n: int) -> list[str]:
    """Names of the n groups of a record: the bins hardest first, then `unseen`."""
    return [f"bin{i}" for i in range(n - 1)] + ["unseen"]


def record_scalars(record: dict) -> dict[str, float]:
    """Flatten one step record into TensorBoard tags → finite float values."""
    out: dict[str, float] = {}

    def put(tag: str, value) -> None:
        if isinstance(value, bool) or value is None:
            return
        if isinstance(value, (int, float)) and math.isfinite(float(value)):
            out[tag] = float(value)

    for key, value in record.items():
        if key == "step":
            continue
        if isinstance(value, dict):
            for sub, v in value.items():
                put(f"{key}/{sub}", v)
        elif isinstance(value, list):
            if key in _GROUP_FIELDS:
                for name, v in zip(group_names(len(value)), value):
                    put(f"bins/{key}/{name}", v)
        else:
            put(key, value)
    return out


def eval_scalars(result: dict) -> dict[str, float]:
    """Tags for one evaluation result (gdro_ray.eval.evaluate): every numeric field of its
    `pooled`, `worst_tier` and `per_tier` groups, e.g. `eval/pooled/pass_at_k`, `eval/tier3/mean_at_k`."""
    from gdro_ray.metrics.eval_names import flat_metrics

    return {f"eval/{name}": v for name, v in flat_metrics(result, stats=None).items()}


class TensorBoardWriter:
    """Thin wrapper around `torch.utils.tensorboard.SummaryWriter` fed with step records."""

    def __init__(self, run_dir: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:  # tensorboard is a base dependency; a broken env gets one clear line
            from gdro_ray.errors import UserError
            raise UserError(f"metrics.loggers: tensorboard needs the `tensorboard` package ({e})") from None
        self.log_dir = Path(run_dir) / "tensorboard"
        self._writer = SummaryWriter(log_dir=str(self.log_dir))

    def write_record(self, record: dict) -> None:
        if record.get("type") == "eval":  # an eval record of metrics.jsonl: its scalars come via write_eval
            return
        step = int(record["step"]) + 1
        for tag, value in record_scalars(record).items():
            self._writer.add_scalar(tag, value, step)
        self._writer.flush()

    def write_eval(self, result: dict, step: int) -> None:
        for tag, value in eval_scalars(result).items():
            self._writer.add_scalar(tag, value, step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
