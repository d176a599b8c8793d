"""Input checks shared by the controllers: each raises ValueError naming the bad field."""
from __future__ import annotations

import numpy as np


def as_int_array(values, name: str) -> np.ndarray:
    """A 1-D int64 array; floats are accepted only when finite and integral."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        if arr.size:
            raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
        return np.zeros(0, np.int64)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or infinite values")
        if np.any(arr != np.round(arr)):
            raise ValueError(f"{name} must hold whole numbers")
    return arr.astype(np.int64)


def as_float_array(values, name: str) -> np.ndarray:
    """A 1-D finite float64 array."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name} must hold numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def check_ids(values, upper: int, name: str) -> np.ndarray:
    """A 1-D int64 array of ids in [0, upper)."""
    ids = as_int_array(values, name)
    if ids.size and (ids.min() < 0 or ids.max() >= upper):
        raise ValueError(f"{name} must lie in [0, {upper}), got range [{ids.min()}, {ids.max()}]")
    return ids
