"""Turn a controller's state_dict into plain JSON-able Python (numpy arrays become lists).

Every controller's `load_state_dict` re-casts lists to the dtypes it needs, so
`load_state_dict(json.loads(json.dumps(to_jsonable(state_dict()))))` restores it exactly
(floats survive JSON's shortest repr; float32 values widen to float64 and cast back unchanged).
"""
from __future__ import annotations

import numpy as np


def to_jsonable(obj):
    """Recursively convert numpy arrays/scalars and tuples to lists and Python scalars."""
    if isinstance(obj, dict):
        return {str(key): to_jsonable(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(value) for value in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
