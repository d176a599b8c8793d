"""pass@k estimators.

pass@k of a prompt whose rollouts succeed independently with probability p is 1 − (1 − p)^k.

* From n rollouts with c correct, the unbiased estimator is 1 − C(n−c, k)/C(n, k): the chance
  that k of the n rollouts, drawn without replacement, contain a correct one. It needs n ≥ k.
  The binomial ratio is evaluated as the product Π_{i<k} (n−c−i)/(n−i), whose factors all lie
  in [0, 1], so nothing overflows and no large binomial is ever formed.
* Under a Beta(α, β) belief about p, the posterior mean of pass@k is
  1 − E[(1−p)^k] = 1 − B(α, β+k)/B(α, β) = 1 − Π_{i<k} (β+i)/(α+β+i), again a product of k
  factors in (0, 1). The classifier uses it (under its fitted pool prior) for every prompt.

All array functions are vectorised over prompts and loop only over the k factors.
"""
from __future__ import annotations

import numpy as np


def _check_counts(n: int, c: int, k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got k={k}")
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n rollouts with c correct; raises ValueError unless n >= k."""
    n, c, k = int(n), int(c), int(k)
    _check_counts(n, c, k)
    if n < k:
        raise ValueError(f"pass@k needs n >= k rollouts, got n={n} < k={k}")
    if n - c < k:  # every k-subset contains a correct rollout
        return 1.0
    all_fail = 1.0
    for i in range(k):
        all_fail *= (n - c - i) / (n - i)
    return 1.0 - all_fail


def pass_at_k_array(n: np.ndarray, c: np.ndarray, k: int) -> np.ndarray:
    """Vectorised unbiased pass@k (float64); nan where n < k. Assumes 0 <= c <= n."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got k={k}")
    n = np.asarray(n, dtype=np.float64)
    c = np.asarray(c, dtype=np.float64)
    n, c = np.broadcast_arrays(n, c)
    valid = n >= k
    safe_n = np.where(valid, n, float(k))  # keeps every denominator n − i >= 1
    failures = np.where(valid, safe_n - c, float(k))
    all_fail = np.ones(n.shape, dtype=np.float64)
    for i in range(k):
        # A factor reaches 0 once i = n − c, which zeroes the product as it should; later
        # factors may go negative, hence the clamp.
        all_fail *= np.maximum((failures - i) / (safe_n - i), 0.0)
    out = 1.0 - all_fail
    out[~valid] = np.nan
    return out


def beta_pass_at_k(alpha: np.ndarray, beta: np.ndarray, k: int) -> np.ndarray:
    """Mean of 1 − (1−p)^k for p ~ Beta(alpha, beta) (alpha, beta > 0), vectorised."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got k={k}")
    alpha = np.asarray(alpha, dtype=np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    alpha, beta = np.broadcast_arrays(alpha, beta)
    all_fail = np.ones(alpha.shape, dtype=np.float64)
    for i in range(k):
        all_fail *= (beta + i) / (alpha + beta + i)
    return 1.0 - all_fail


def mean_at_k(n: np.ndarray, c: np.ndarray) -> np.ndarray:
    """mean@k: the fraction of correct rollouts c/n (nan where n == 0)."""
    n = np.asarray(n, dtype=np.float64)
    c = np.asarray(c, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, c / np.where(n > 0, n, 1.0), np.nan)
