"""Nothing listens beyond loopback unless a deploy file opts in explicitly (#16 §2)."""
from pathlib import Path

import yaml

from gdro_ray.config import load_config
from gdro_ray.config.loader import preset_names

ROOT = Path(__file__).resolve().parent.parent


def test_every_preset_serves_metrics_on_loopback_by_default():
    for name in preset_names():
        assert load_config(overrides=[f"preset={name}"]).metrics.host == "127.0.0.1", name


def test_cluster_entrypoints_opt_in_to_all_interfaces_explicitly():
    """Where Prometheus scrapes from another pod or host, the entrypoint says metrics.host=0.0.0.0 itself."""
    job = yaml.safe_load((ROOT / "deploy" / "kuberay" / "rayjob.yaml").read_text())
    assert "metrics.host=0.0.0.0" in job["spec"]["entrypoint"]
