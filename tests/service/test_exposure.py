"""Nothing listens beyond loopback unless a deploy file opts in explicitly."""
from pathlib import Path

import yaml

from gdro_ray.config import load_config
from gdro_ray.config.loader import preset_names

ROOT = Path(__file__).resolve().parents[2]


def test_every_preset_serves_metrics_on_loopback_by_default():
    for name in preset_names():
        assert load_config(overrides=[f"preset={name}"]).metrics.host == "127.0.0.1", name


def test_cluster_entrypoints_opt_in_to_all_interfaces_explicitly():
    """Where Prometheus scrapes from another pod or host, the entrypoint says metrics.host=0.0.0.0 itself."""
    job = yaml.safe_load((ROOT / "deploy" / "kuberay" / "rayjob.yaml").read_text())
    assert "metrics.host=0.0.0.0" in job["spec"]["entrypoint"]


def _shell_blocks(text: str) -> list[list[str]]:
    """Fenced bash blocks of a markdown file, as lists of lines."""
    blocks, cur = [], None
    for line in text.splitlines():
        if line.startswith("```"):
            if cur is None and line.strip() == "```bash":
                cur = []
            elif cur is not None:
                blocks.append(cur)
                cur = None
        elif cur is not None:
            cur.append(line)
    return blocks


def test_every_documented_cluster_command_uses_token_auth():
    """Each `ray start` / `ray job submit` a user is told to run has RAY_AUTH_MODE=token,
    set on its line or exported earlier in its block; none opts out."""
    checked = 0
    for doc in (ROOT / "README.md", ROOT / "docs" / "deploy.md"):
        for block in _shell_blocks(doc.read_text()):
            exported = False
            for line in block:
                exported |= line.strip().startswith("export RAY_AUTH_MODE=token")
                if "ray start" in line or "ray job submit" in line:
                    checked += 1
                    assert exported or "RAY_AUTH_MODE=token" in line, f"{doc.name}: {line}"
    assert checked >= 6
    for path in [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(p for p in (ROOT / "deploy").rglob("*")
                                                                     if p.is_file())]:
        assert "RAY_AUTH_MODE=disabled ray" not in path.read_text(errors="replace"), path


def test_kuberay_clusters_require_the_token_from_a_named_secret():
    cluster = yaml.safe_load((ROOT / "deploy" / "kuberay" / "raycluster.yaml").read_text())["spec"]
    job = yaml.safe_load((ROOT / "deploy" / "kuberay" / "rayjob.yaml").read_text())["spec"]["rayClusterSpec"]
    for spec in (cluster, job):
        assert spec["authOptions"] == {"mode": "token", "secretName": "gdro-ray-auth"}
    assert "gdro-ray-auth" in (ROOT / "docs" / "deploy.md").read_text()


def test_status_refused_by_a_token_cluster_says_so_in_one_line(monkeypatch):
    """`gdro-ray status/scale` against a token-auth cluster without the token: one line, not Ray's traceback."""
    import pytest
    import ray
    import ray.exceptions

    from gdro_ray.errors import UserError
    from gdro_ray.service.connect import find_adversary

    def refuse(**kwargs):
        raise ray.exceptions.AuthenticationError("Authentication required: Unauthorized")

    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(UserError) as e:
        find_adversary("ray://127.0.0.1:1")
    assert "token" in str(e.value) and "\n" not in str(e.value)
