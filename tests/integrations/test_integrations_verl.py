"""GDRO inside verl. verl 0.7.1 installs on CPU here (in its own venv, benchmarks/.venv-verl, see
tests/_verl_env.py), so the sampler and the Rollout-GDRO repeat are checked against verl's real
classes by tests/_verl_checks.py, run with pytest inside that venv. What needs no verl is here."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from _verl_env import ROOT, is_built, verl_python


class _Batch:
    """The two attributes of verl's DataProto that `update` reads (for the no-verl test only)."""

    def __init__(self, uids, rows, scores):
        self.non_tensor_batch = {"uid": np.array(uids, dtype=object),
                                 "extra_info": np.array([{"index": r} for r in rows], dtype=object),
                                 "acc": np.array(scores, dtype=float)}
        self.batch = None


def test_sampler_without_verl_reads_options_and_reports_groups():
    from gdro_ray.integrations.verl import GDROCurriculumSampler

    cfg = {"train_batch_size": 4, "seed": 1, "sampler": {"gdro": {"rollout_n": 2, "overrides": ["classifier.k=2"]}}}
    s = GDROCurriculumSampler(range(10), cfg)
    rows = list(iter(s))
    assert len(rows) == len(s) == 8 and s.blocks_in_epoch == 0  # two blocks, pass over
    s2 = GDROCurriculumSampler(range(10), cfg)
    it = iter(s2)
    block = [next(it) for _ in range(4)]
    uids = [f"u{i}" for i in range(4) for _ in range(2)]
    s2.update(_Batch(uids[::-1], [r for r in block for _ in range(2)][::-1], [1, 0] * 4))
    assert s2.records[-1]["reward_mean"] == 0.5 and s2.records[-1]["rollouts"] == 8
    with pytest.raises(ValueError, match="rollout_n: required"):
        GDROCurriculumSampler(range(10), {"train_batch_size": 4, "sampler": {}})


@pytest.mark.slow
@pytest.mark.skipif(not is_built(), reason="verl's venv benchmarks/.venv-verl is absent: build it once with "
                                           "`.venv/bin/python tests/_verl_env.py` (≈ 20 s, downloads verl 0.7.1)")
def test_against_verls_real_classes():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run([str(verl_python()), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        str(Path(ROOT) / "tests" / "_verl_checks.py")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    assert " passed" in p.stdout and "failed" not in p.stdout
