"""Test helper: a real Prometheus server (Debian's package) scraping given targets every second."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
HAVE_PROMETHEUS = shutil.which("prometheus") is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def prometheus(tmp_path: Path, targets: list[str], job: str = "gdro_adversary"):
    """Start Prometheus with deploy/prometheus/prometheus-static.yml, its `job` pointed at targets.

    Yields `query(expr) -> list` (the instant-query result through the HTTP API).
    """
    static = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus-static.yml").read_text())
    static["global"].update(scrape_interval="1s", scrape_timeout="1s")
    jobs = [j for j in static["scrape_configs"] if j["job_name"] == job]
    jobs[0]["static_configs"][0]["targets"] = targets  # the file's fixed port may be taken here
    static["scrape_configs"] = jobs
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(yaml.safe_dump(static))
    port = _free_port()
    log_path = tmp_path / "prometheus.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)

    def query(expr: str) -> list:
        url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", (expr, body)
        return body["data"]["result"]

    def wait_for(expr: str, points: int = 2, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if len(query(f"{expr}[1m]")[0]["values"]) >= points:
                    return
            except (OSError, IndexError):
                pass
            assert time.monotonic() < deadline and proc.poll() is None, log_path.read_text()
            time.sleep(0.5)

    query.wait_for = wait_for
    try:
        yield query
    finally:
        proc.terminate()
        proc.wait(timeout=10)
