"""Step lines for `train`: a live status line with ETA on a terminal, plain lines otherwise."""
from __future__ import annotations

import sys
import time


def _fmt_bins(values) -> str:
    return "[" + " ".join(str(int(v)) for v in values) + "]"


def step_line(record: dict, steps: int) -> str:
    st = record.get("stage_time_s", {})
    stages = " ".join(f"{k} {v:.2f}s" for k, v in st.items() if k in ("schedule", "sample", "learn", "observe", "publish"))
    return (f"step {record['step'] + 1:>4}/{steps} | reward {record.get('reward_mean', 0):.3f} | "
            f"pass {record.get('pass_rate', 0):.3f} | rollouts/bin {_fmt_bins(record.get('bin_rollouts', []))} | "
            f"μ {record.get('shadow_price', 0):.4f} | {record.get('tokens_per_s', 0):.0f} tok/s | {stages}")


class Progress:
    def __init__(self, steps: int, start: int = 0, stream=None):
        self.steps, self.start, self.t0 = steps, start, time.time()
        self.stream = stream or sys.stdout
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def update(self, step: int, record: dict) -> None:
        line = step_line(record, self.steps)
        if self.tty:
            done = step - self.start
            eta = (time.time() - self.t0) / max(done, 1) * (self.steps - step)
            self.stream.write(f"\r\033[K{line} | ETA {eta:4.0f}s")
            if step >= self.steps:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def summary(self, base: dict | None, final: dict, tier_names: dict[str, str] | None = None) -> None:
        from gdro_ray.metrics.tables import eval_comparison

        if self.tty:
            self.stream.write("\n")
        self.stream.write(eval_comparison(base, final, tier_names) + "\n")
        self.stream.flush()
