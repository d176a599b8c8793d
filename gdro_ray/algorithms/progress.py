"""Learning progress per prompt and per group: is the model getting better where it fails?

Per prompt we keep the success rate c/n of its last visit and the step of that visit. A later
visit at a later step gives a measurement: the signed change of the visit success rate, Δ, over
the steps elapsed, g. Per group and step the progress rate is Σ Δ / Σ g over the group's prompts
measured that step (a ratio estimator: visits far apart carry more of the change and weigh
more), and the group's progress is an EMA (rate β) of those rates. The signed values are
averaged first; whoever wants "only positive progress" clips the average, never the single
measurements, since a per-prompt max(0, ·) would count binomial noise as progress.

Why the raw visit rates and not the classifier's posterior mean p̂. p̂ is shrunk towards the
pool's prior mean, so its change between visits carries a regression term: every hard prompt's
p̂ falls and every easy prompt's rises as its evidence grows, even when nothing is learned. The
difference of two visits' raw rates has expectation zero without learning.

Why per step elapsed. A group that is drawn twice as often shows half the change per visit; per
visit, progress would push the draw back towards uniform (the same feedback the batch share
causes in Prompt-GDRO's resample mode). Per step it is a property of the group, not of how often
it was drawn. Two visits in the same step (a repeated prompt) measure nothing and are skipped.
"""
from __future__ import annotations

import numpy as np

from gdro_ray.algorithms.validation import as_int_array, check_ids


class ProgressTracker:
    """Signed learning progress of prompts and groups; see the module docstring."""

    def __init__(self, num_prompts: int, num_groups: int, beta: float = 0.12):
        if int(num_prompts) < 1 or int(num_groups) < 1:
            raise ValueError(f"need num_prompts >= 1 and num_groups >= 1, got {num_prompts}, {num_groups}")
        if not 0 < beta <= 1:
            raise ValueError(f"beta must be in (0, 1], got {beta}")
        self.num_prompts, self.num_groups, self.beta = int(num_prompts), int(num_groups), float(beta)
        self._last_rate = np.full(self.num_prompts, np.nan, np.float32)
        self._last_step = np.zeros(self.num_prompts, np.int32)  # steps < 2^31
        self.progress = np.zeros(self.num_groups, np.float64)
        self._initialized = np.zeros(self.num_groups, bool)
        self.measurements = 0

    def observe(self, step: int, prompt_ids, group_ids, n, c) -> tuple[np.ndarray, np.ndarray]:
        """Record one visit per entry (a repeated id is several visits, in order) at `step`.

        Returns per entry the change Δ of the visit rate since the prompt's previous visit and the
        steps g elapsed since it; Δ is NaN where there is no measurement (first visit, or an
        earlier visit in the same step). Updates the groups present with a measurement.
        """
        ids = check_ids(prompt_ids, self.num_prompts, "prompt_ids")
        groups = check_ids(group_ids, self.num_groups, "group_ids")
        n, c = as_int_array(n, "n"), as_int_array(c, "c")
        if not (ids.shape == groups.shape == n.shape == c.shape):
            raise ValueError("prompt_ids, group_ids, n and c need equal lengths")
        if n.size and (n.min() < 1 or c.min() < 0 or np.any(c > n)):
            raise ValueError("need n >= 1 and 0 <= c <= n for every visit")
        step = int(step)
        rate = c / n
        delta = np.full(ids.size, np.nan)
        gap = np.zeros(ids.size, np.int64)
        # Only a prompt's first visit in this call can measure (its later ones are at the same
        # step); its last visit is what the next call compares with.
        uniq, first = np.unique(ids, return_index=True)
        last = ids.size - 1 - np.unique(ids[::-1], return_index=True)[1]
        prev = self._last_rate[uniq].astype(np.float64)
        elapsed = step - self._last_step[uniq].astype(np.int64)
        ok = np.isfinite(prev) & (elapsed > 0)
        delta[first[ok]] = rate[first[ok]] - prev[ok]
        gap[first[ok]] = elapsed[ok]
        self._last_rate[uniq], self._last_step[uniq] = rate[last], step
        measured = np.isfinite(delta)
        if measured.any():
            g = groups[measured]
            total_delta = np.bincount(g, weights=delta[measured], minlength=self.num_groups)
            total_gap = np.bincount(g, weights=gap[measured].astype(np.float64), minlength=self.num_groups)
            present = total_gap > 0
            value = total_delta[present] / total_gap[present]
            first = ~self._initialized[present]
            old = self.progress[present]
            self.progress[present] = np.where(first, value, (1.0 - self.beta) * old + self.beta * value)
            self._initialized[present] = True
            self.measurements += int(measured.sum())
        return delta, gap

    def group_progress(self) -> np.ndarray:
        """Each group's progress per step; NaN for a group never measured."""
        return np.where(self._initialized, self.progress, np.nan)

    def metrics(self) -> dict:
        return {"progress": [None if not np.isfinite(v) else float(v) for v in self.group_progress()],
                "measurements": self.measurements}

    def state_bytes_per_prompt(self) -> float:
        return (self._last_rate.nbytes + self._last_step.nbytes) / self.num_prompts

    def _config(self) -> dict:
        return {"num_prompts": self.num_prompts, "num_groups": self.num_groups}

    def state_dict(self) -> dict:
        return {"config": self._config(), "last_rate": self._last_rate.copy(), "last_step": self._last_step.copy(),
                "progress": self.progress.copy(), "initialized": self._initialized.copy(),
                "measurements": self.measurements}

    def load_state_dict(self, state: dict) -> None:
        if dict(state["config"]) != self._config():
            raise ValueError(f"progress state was saved with {dict(state['config'])}, this one has {self._config()}")
        # JSON carries NaN as null: back to NaN before the cast
        rate = np.array([np.nan if v is None else v for v in state["last_rate"]], np.float32)
        loaded = {"last_rate": (rate, (self.num_prompts,)),
                  "last_step": (np.array(state["last_step"], np.int32), (self.num_prompts,)),
                  "progress": (np.array(state["progress"], np.float64), (self.num_groups,)),
                  "initialized": (np.array(state["initialized"], bool), (self.num_groups,))}
        for key, (value, shape) in loaded.items():
            if value.shape != shape:
                raise ValueError(f"progress state field {key!r} has shape {value.shape}, expected {shape}")
        self._last_rate, self._last_step = loaded["last_rate"][0], loaded["last_step"][0]
        self.progress, self._initialized = loaded["progress"][0], loaded["initialized"][0]
        self.measurements = int(state["measurements"])
