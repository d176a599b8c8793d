"""Equal-count bin edges: the classifier's `equal_count` binning.

Equal-width edges on pass@k resolve only the hard tail of a pool whose prompts mostly succeed
now and then (per-rollout p ≥ 0.25 is pass@8 ≥ 0.9: one bin). Edges at quantiles of the
prompts' own estimated success rates give every bin about the same number of prompts, so the
groups follow wherever the pool's mass is, and move with it when the edges are refreshed.

Bins are half-open intervals [e_{b−1}, e_b) of the value, so prompts with equal values always
share a bin. With distinct values the counts of the B bins differ by at most one; a block of
tied values stays whole, so that bin is larger by the block (and a bin whose lower and upper
edge coincide is empty). Edges are non-decreasing.
"""
from __future__ import annotations

import numpy as np


def quantile_edges(values, num_bins: int) -> np.ndarray:
    """num_bins − 1 non-decreasing interior edges placing the sorted `values` into equal-count bins.

    Edge b is the value at sorted position ⌊b·P/B⌋, the first member of bin b, so that
    `np.searchsorted(edges, v, side="right")` puts sorted position j into bin ⌊j·B/P⌋ (when the
    values are distinct).
    """
    v = np.sort(np.asarray(values, dtype=np.float64).reshape(-1))
    num_bins = int(num_bins)
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    if v.size == 0:
        raise ValueError("quantile_edges needs at least one value")
    if not np.all(np.isfinite(v)):
        raise ValueError("quantile_edges needs finite values")
    positions = (np.arange(1, num_bins) * v.size) // num_bins
    return v[positions]


def assign_bins(values, edges) -> np.ndarray:
    """Bin of each value: the number of edges at or below it (bin 0 below the first edge)."""
    return np.searchsorted(np.asarray(edges, dtype=np.float64), np.asarray(values, dtype=np.float64),
                           side="right").astype(np.int64)
