"""benchmarks/offpolicy_crossover.py: its shared device really shares (overlapping
work never finishes sooner than its sum, a lone job is not slowed), and the benchmark drives the
real sync and off-policy steps end to end. Timing is checked only by lower bounds, which a loaded
machine cannot break."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_session():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="gdro_ray_test")
    yield ray
    ray.shutdown()


def test_shared_device_is_processor_sharing(ray_session):
    ray = ray_session
    from offpolicy_crossover import SleepDevice

    dev = SleepDevice.remote(True)
    ray.get(dev.run.remote(0.01))  # the actor is up
    t0 = time.perf_counter()
    a, b = dev.run.remote(0.3), dev.run.remote(0.15)
    ray.get(b)
    tb = time.perf_counter() - t0
    ray.get(a)
    ta = time.perf_counter() - t0
    assert tb >= 0.29, tb  # both ran at half speed until b ended: 2 × 0.15
    assert ta >= 0.44, ta  # all the work, one device: 0.3 + 0.15
    assert ta < 2.0 and tb < ta  # and it did finish, in order
    t0 = time.perf_counter()
    ray.get(dev.run.remote(0.2))  # alone again: full speed
    assert 0.195 <= time.perf_counter() - t0 < 1.5


def test_benchmark_runs_the_real_steps(tmp_path):
    from offpolicy_crossover import main

    out = tmp_path / "x.json"
    assert main(["--kinds", "disjoint", "shared", "--ratios", "1", "--learn-s", "0.1", "--publish-s", "0.02",
                 "--steps", "4", "--repeats", "1", "--out", str(out)]) == 0
    rows = {r["kind"]: r for r in json.loads(out.read_text())["rows"]}
    for r in rows.values():  # the driver's structure is a floor no step can beat
        assert r["sync_step_s"] >= r["S"] + r["L"] + r["P"] - 0.01
        assert r["off_step_s"] >= r["P"] + max(r["S"], r["L"]) - 0.01
    # one shared device: overlapped sampling and learning take their sum
    assert rows["shared"]["off_step_s"] >= rows["shared"]["S"] + rows["shared"]["L"] + rows["shared"]["P"] - 0.01
