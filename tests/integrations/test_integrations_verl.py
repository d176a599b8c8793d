"""GDRO inside verl ≥ 0.9 (the v1 trainer). What needs no verl is checked here; the adapter against
verl 0.9.1's real classes (its trainer, ReplayBuffer, agent-loop worker, TransferQueue, dataset)
is checked by tests/_verl_checks.py, run with pytest inside verl's own venv (benchmarks/.venv-verl,
tests/_verl_env.py), which `make side-envs` builds and `make test` requires."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _verl_env import REQUIRE_ENV, ROOT, is_built, verl_python

from gdro_ray.integrations.verl_v1 import VerlCurriculum, check_verl_version, rewards_by_uid


def test_version_guard_is_one_line_naming_the_versions():
    assert check_verl_version("0.9.1") == "0.9.1" and check_verl_version("0.9.0") == "0.9.0"
    for bad in ("0.7.1", "0.8.0", "0.10.0", "0.10.0.dev0", "1.0.0"):
        with pytest.raises(RuntimeError) as e:
            check_verl_version(bad)
        msg = str(e.value)
        assert "\n" not in msg and ">=0.9.0,<0.10.0" in msg and "0.9.1" in msg and bad in msg


def test_rewards_by_uid_keeps_each_sessions_final_output():
    keys = ["a_0_0", "a_0_1", "a_1_0", "b_2_0"]
    assert rewards_by_uid(keys, [0.0, 1.0, 0.5, 1.0]) == {"a": {0: 1.0, 1: 0.5}, "b": {2: 1.0}}


def test_blocks_out_groups_back_with_a_refill_and_a_failed_rollout():
    vc = VerlCurriculum.create(20, 4, 3, {"algorithm": "both", "overrides": ["classifier.k=2",
                                                                            "rollout_gdro.n_min=2",
                                                                            "rollout_gdro.n_max=5"]})
    uids = [f"u{i}" for i in range(4)]
    rows, counts = vc.next_prompts(4, uids)
    assert len(rows) == 4 and sum(counts) == 4 * 3
    more_rows, more_counts = vc.next_prompts(2, ["r0", "r1"])  # a refill grows the outstanding block
    assert len(more_rows) == 2 and vc.curriculum.pending[0].batch_size == 6
    # every group but one finished; u0 lost one rollout; r1 was dropped before any output
    groups = {u: {s: float(s % 2) for s in range(n)} for u, n in zip(uids, counts)}
    del groups["u0"][0]
    groups["r0"] = {s: 1.0 for s in range(more_counts[0])}
    vc.collect(groups, ["r1"])
    vc.collect({"stranger": {0: 1.0}})  # not ours (validation): ignored
    rec = vc.finish_block()
    assert rec["prompts"] == 6 and rec["rollouts"] == sum(counts) + sum(more_counts)
    assert rec["rollouts_observed"] == sum(counts) - 1 + more_counts[0]
    assert not vc.curriculum.pending and vc.metrics()["gdro/step"] == 1.0
    state = vc.state_dict()
    vc2 = VerlCurriculum.create(20, 4, 3, {"algorithm": "both", "overrides": ["classifier.k=2",
                                                                             "rollout_gdro.n_min=2",
                                                                             "rollout_gdro.n_max=5"]})
    vc2.load_state_dict(state)
    assert vc2.next_prompts(4, uids) == vc.next_prompts(4, uids)


def test_options_are_checked_at_start():
    with pytest.raises(ValueError, match="unknown GDRO option"):
        VerlCurriculum.create(8, 4, 2, {"rollout_n": 4})
    vc = VerlCurriculum.create(8, 4, 2)
    with pytest.raises(ValueError, match="data.train_batch_size=4"):
        vc.next_prompts(3, ["a", "b", "c"])


def test_importing_the_adapter_needs_no_verl():
    code = ("import sys, gdro_ray.integrations.verl_v1 as m; "
            "assert 'verl' not in sys.modules and 'transfer_queue' not in sys.modules; print(m.SUPPORTED)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.skipif(not is_built() and not os.environ.get(REQUIRE_ENV),
                    reason="verl's venv benchmarks/.venv-verl is absent: `make side-envs` builds it (verl 0.9.1)")
def test_against_verls_real_classes():
    assert is_built(), f"{REQUIRE_ENV} is set but benchmarks/.venv-verl is missing or stale: run `make side-envs`"
    env = dict(os.environ, OMP_NUM_THREADS="1", RAY_AUTH_MODE="disabled", VERL_USE_EXTERNAL_PLUGINS="none")
    p = subprocess.run([str(verl_python()), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        str(Path(ROOT) / "tests" / "_verl_checks.py")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-6000:] + p.stderr[-2000:]
    assert " passed" in p.stdout and "failed" not in p.stdout and "skipped" not in p.stdout
