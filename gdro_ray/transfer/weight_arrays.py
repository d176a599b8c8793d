"""Published weights as numpy arrays in Ray's object store, read in place by every sampler.

The safetensors blob path copies the weights several times per sampler: Ray hands each one a
private `bytes` copy of the blob, the engine parses it into fresh tensors, then copies those into
its parameters. A dict of numpy arrays instead is stored by Ray out of band, and on the node that
holds it every reader maps the same shared memory (zero-copy, read-only): each sampler's only
copy is the one into its own parameters. Learner rank 0 returns the dict from a Ray call, so
the driver holds just the reference and never receives the bytes.

The arrays are in the published (compute) dtype, which is the samplers' dtype (`model.dtype`);
numpy has no bfloat16, so bf16 tensors travel as their int16 bit patterns and are viewed back.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

_AS_NUMPY = {torch.bfloat16: torch.int16}  # dtypes numpy lacks: moved as same-width integers


def to_arrays(state: dict[str, torch.Tensor], version: int) -> dict:
    """{"version", "dtypes": {name: torch dtype name}, "arrays": {name: ndarray}} (CPU, contiguous)."""
    arrays, dtypes = {}, {}
    for name, t in state.items():
        t = t.detach().cpu().contiguous()
        dtypes[name] = str(t.dtype).removeprefix("torch.")
        arrays[name] = t.view(_AS_NUMPY.get(t.dtype, t.dtype)).numpy()
    return {"version": int(version), "dtypes": dtypes, "arrays": arrays}


def is_weight_arrays(payload) -> bool:
    return isinstance(payload, dict) and "arrays" in payload and "dtypes" in payload


def nbytes(payload: dict) -> int:
    return int(sum(a.nbytes for a in payload["arrays"].values()))


def to_named_tensors(payload: dict) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs viewing the arrays (no copy): the engine copies them into its weights."""
    out = []
    with warnings.catch_warnings():  # the shared-memory arrays are read-only; the engine only reads them
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        for name, a in payload["arrays"].items():
            t = torch.from_numpy(np.asarray(a))
            want = getattr(torch, payload["dtypes"][name])
            out.append((name, t.view(want) if t.dtype != want else t))
    return out
