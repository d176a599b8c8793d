"""`ray start --head` + `ray job submit -- gdro-ray train …` against a local head, with Ray's token auth on.

This is how users run on a cluster (docs/deploy.md): the job's driver joins the cluster through
RAY_ADDRESS, and CLI clients (`ray job submit`, `gdro-ray status`) authenticate with the cluster's
token. The head binds only 127.0.0.1. Before the training job, submissions without the token are
shown refused (REST API: 401 without, 403 with a wrong token; `ray job submit` from a client without
the token file, under either RAY_AUTH_MODE) and one with it accepted.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def _ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _http(method: str, url: str, token: str | None = None, body: dict | None = None) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _submission_needs_the_token(api: str, env: dict, token: str, tmp_path: Path) -> None:
    """Job submission on a token-auth head: refused without the token (REST and `ray job submit`), accepted with it."""
    marker = tmp_path / "ran_without_token"
    entry = {"entrypoint": f"touch {marker}"}
    assert _http("POST", f"{api}/api/jobs/", None, entry)[0] == 401
    assert _http("POST", f"{api}/api/jobs/", "not-the-token", entry)[0] == 403
    stranger = tmp_path / "stranger"  # a client without ~/.ray/auth_token
    stranger.mkdir()
    for mode in ("token", "disabled"):
        p = subprocess.run([str(BIN / "ray"), "job", "submit", "--no-wait", "--address", api, "--", "touch", str(marker)],
                           env=dict(env, HOME=str(stranger), RAY_AUTH_MODE=mode), capture_output=True, text=True,
                           timeout=120)
        assert p.returncode != 0 and "AuthenticationError" in p.stdout + p.stderr, (mode, p.stdout[-2000:], p.stderr[-2000:])
    status, jobs = _http("GET", f"{api}/api/jobs/", token)
    assert status == 200 and json.loads(jobs) == []  # none of the refused submissions was recorded
    status, created = _http("POST", f"{api}/api/jobs/", token, {"entrypoint": "true"})
    assert status == 200 and json.loads(created)["submission_id"]
    time.sleep(1)
    assert not marker.exists()


def test_ray_job_submit_runs_training_with_token_auth(tmp_path):
    from _tiny import save_tiny

    model = save_tiny(tmp_path / "model", seed=0)
    home = tmp_path / "home"  # Ray writes the cluster token to ~/.ray/auth_token: keep it out of the real home
    home.mkdir()
    from gdro_ray.utils.env import short_private_tmp

    short = short_private_tmp("rj")  # Ray's head and its dashboard put Unix sockets in both temp roots
    env = dict(os.environ, HOME=str(home), RAY_AUTH_MODE="token", PATH=f"{BIN}:{os.environ['PATH']}",
               RAY_TMPDIR=short, TMPDIR=short)
    gcs, dash, client, metrics, agent, agent_grpc, rt_agent = _ports(7)
    subprocess.run([str(BIN / "ray"), "get-auth-token", "--generate"], env=env, check=True, capture_output=True)
    assert (home / ".ray" / "auth_token").is_file()
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={gcs}", "--num-cpus=4", "--include-dashboard=true",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--ray-client-server-port={client}",
         f"--metrics-export-port={metrics}", f"--dashboard-agent-listen-port={agent}",
         f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={rt_agent}",
         "--disable-usage-stats"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with socket.create_connection(("127.0.0.1", dash), timeout=1):
                    break
            except OSError:
                assert head.poll() is None and time.monotonic() < deadline, head.stdout.read()
                time.sleep(1)
        _submission_needs_the_token(f"http://127.0.0.1:{dash}", env, (home / ".ray" / "auth_token").read_text().strip(),
                                    tmp_path)
        run = tmp_path / "run"
        job = subprocess.run(
            [str(BIN / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{dash}", "--",
             "gdro-ray", "train", f"model.path={model}", "steps=2", "batch_size=8", "sampler.num_samplers=1",
             "learner.world_size=1", "data.eval=dapo-fixture", "sampler.eval_k=1", "metrics.tensorboard=true", f"out={run}"],
            env=env, capture_output=True, text=True, timeout=480)
        assert "succeeded" in job.stdout, job.stdout[-3000:] + job.stderr[-3000:]
        lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        records = [r for r in lines if r.get("type") != "eval"]
        assert [r["step"] for r in records] == [0, 1]
        assert [(r["label"], r["steps_done"]) for r in lines if r.get("type") == "eval"] == [("base", 0), ("final", 2)]
        assert (run / "checkpoints" / "latest").is_file()
        # metrics.tensorboard=true: the event files hold the step records and both evaluations.
        from _tensorboard import read_scalars
        tb = read_scalars(run / "tensorboard")
        assert [s for s, _ in tb["reward_mean"]] == [1, 2]
        assert [v for _, v in tb["reward_mean"]] == pytest.approx([r["reward_mean"] for r in records])
        assert [s for s, _ in tb["eval/pooled/mean_at_k"]] == [0, 2]
        # Without the token the cluster refuses clients: the CLI must say so, not hang.
        bad = subprocess.run([str(BIN / "gdro-ray"), "status", "--address", f"127.0.0.1:{gcs}"],
                             env=dict(env, RAY_AUTH_MODE="disabled"), capture_output=True, text=True, timeout=120)
        assert bad.returncode != 0
        assert bad.stderr.strip().count("\n") == 0 and "token" in bad.stderr, bad.stderr[-2000:]
    finally:
        head.terminate()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
