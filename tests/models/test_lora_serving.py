"""benchmarks/lora_serving.py on the toy model: vLLM's own LoRA adapters and the merged weights the
service publishes are the same policy (greedy tokens and log-probs agree), and that policy is not
the base model's, so the agreement can fail."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_adapter_serving_is_the_merged_policy(tmp_path):
    out = tmp_path / "lora_serving.json"
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    p = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "lora_serving.py"), "--models", "toy", "--rounds", "1", "--versions", "2", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=400,
        env=env,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    rows = {r["arm"]: r for r in json.loads(out.read_text())["results"]}
    assert set(rows) == {"merged", "adapter"}
    for r in rows.values():
        assert r["token_agreement"] == 1.0 and r["max_logprob_gap"] < 1e-3
        assert r["base_token_agreement"] < 0.5  # the adapters move the policy away from the base
        assert r["generate_s"] > 0 and r["tokens_per_s"] > 0
    # the adapter arm moves the adapters only, the merged arm the whole model
    assert rows["adapter"]["publish_mb"] < rows["merged"]["publish_mb"] / 5


def test_unknown_model_is_refused_in_one_line(tmp_path):
    p = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "lora_serving.py"), "--models", "nope", "--out", str(tmp_path / "x.json")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode != 0 and "--models: 'nope' is not one of" in p.stderr
    assert not (tmp_path / "x.json").exists()
