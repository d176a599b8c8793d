"""benchmarks/vs_trl.py bookkeeping: steady-state summaries, ratios, identical prompts on both sides.

Fast (no Ray, no TRL): the benchmark itself is run by hand, never timed in tests.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def vs_trl():
    spec = importlib.util.spec_from_file_location("vs_trl", ROOT / "benchmarks" / "vs_trl.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["vs_trl"] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


def _steps(times, tokens=100):
    return [{"step_time_s": t, "tokens": tokens, "stage_time_s": {"generate": t / 2}} for t in times]


def test_summarize_drops_warmup_steps(vs_trl):
    s = vs_trl.summarize(_steps([10.0, 1.0, 2.0, 1.0]), skip=1)
    assert s["measured_steps"] == 3
    assert s["tokens_per_s"] == pytest.approx(300 / 4.0, abs=0.1)
    assert s["steps_per_min"] == pytest.approx(60 * 3 / 4.0, abs=0.01)
    assert s["median_step_s"] == 1.0
    assert s["mean_stage_s"]["generate"] == pytest.approx(4.0 / 3 / 2, abs=1e-3)


def test_compare_ratios_against_best_trl_row_and_pairs_repeats(vs_trl):
    sides = {
        "TRL (1 thr)": [{"steps": _steps([9, 1.0, 1.0])}, {"steps": _steps([9, 2.0, 2.0])}],
        "TRL (2 thr)": [{"steps": _steps([9, 4.0, 4.0])}, {"steps": _steps([9, 1.0, 1.0])}],
        "ours (vllm)": [{"steps": _steps([9, 0.5, 0.5])}, {"steps": _steps([9, 0.5, 0.5])}],
    }
    rows = {r["side"]: r for r in vs_trl.compare("m", sides, skip=1, repeats=2)}
    # pooled: TRL 1 thr 400 tokens / 6 s beats TRL 2 thr 400 / 10 s
    assert rows["ours (vllm)"]["ratio_tokens_per_s"] == pytest.approx(200 / (400 / 6), abs=0.01)
    # paired: repeat 1 against TRL 1 thr (100 tok/s), repeat 2 against TRL 2 thr (100 tok/s)
    assert rows["ours (vllm)"]["paired_ratio_by_repeat"] == [2.0, 2.0]
    assert rows["TRL (2 thr)"]["paired_ratio_by_repeat"] == [0.25, 1.0]


def test_both_sides_get_the_same_prompt_strings(vs_trl, tmp_path):
    case = vs_trl.Case("toy-standin", "unused", "", 2, 1, 2, 2, 8, 1e-4, 12)
    data = vs_trl.write_data(case, tmp_path)
    from gdro_ray.data.eval_sets import load_train_set
    from gdro_ray.data.toy_task import make_train_pool

    ours = [e["prompt"] for e in load_train_set(data["train"])]
    trl = [json.loads(line)["prompt"] for line in Path(data["trl_prompts"]).read_text().splitlines()]
    assert ours == trl == [e["prompt"] for e in make_train_pool(size=12, seed=0)]
    assert len(Path(data["eval"]).read_text().splitlines()) == 2
