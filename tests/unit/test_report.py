"""`gdro-ray report` renders the curriculum plots from real run records (simulator runs)."""
import struct
import subprocess
import sys

import pytest

from gdro_ray.metrics.report import lead_lag, load_run, render


@pytest.fixture(scope="module")
def sim_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    p = subprocess.run([sys.executable, "-m", "gdro_ray.cli.main", "simulate", "steps=15", "batch_size=64",
                        "sim.num_prompts=800", "sim.eval_prompts=200", f"out={out}",
                        "--algorithms", "grpo,both"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return [out / "grpo", out / "both"]


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_report_renders_pngs_and_markdown(sim_runs, tmp_path):
    out = render([str(d) for d in sim_runs], str(tmp_path / "rep"))
    pngs = sorted(out.glob("*.png"))
    names = {p.name for p in pngs}
    assert {"pass_at_k.png", "lead_lag.png", "reward.png", "bin_weights_both.png", "rollouts_grpo.png",
            "eval.png"} <= names  # eval.png: the simulator's evaluation steps
    for p in pngs:
        w, h = _png_size(p)
        assert w == 800 and h >= 400, (p.name, w, h)
        assert p.stat().st_size > 5000  # a real plot, not an empty canvas
    md = (out / "report.md").read_text()
    assert "| grpo |" in md and "| both |" in md and "![lead_lag](lead_lag.png)" in md


def test_lead_lag_matches_definition(sim_runs):
    rec = load_run(sim_runs[1])["records"]
    gap = lead_lag(rec)
    assert len(gap) == len(rec)
    r = rec[-1]
    q, s = r["bin_weights"][:-1], r["bin_share"][:-1]
    qs, ss = sum(x or 0 for x in q), sum(x or 0 for x in s)
    want = sum(i * (x or 0) for i, x in enumerate(q)) / qs - sum(i * (x or 0) for i, x in enumerate(s)) / ss
    assert gap[-1] == pytest.approx(want, abs=1e-9)


def test_report_on_non_run_dir_fails_clearly(tmp_path):
    p = subprocess.run([sys.executable, "-m", "gdro_ray.cli.main", "report", str(tmp_path)],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "no metrics.jsonl" in p.stderr
