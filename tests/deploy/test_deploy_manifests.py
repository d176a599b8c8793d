"""Deploy files are valid for the tools that read them and agree with the project.

- KubeRay RayCluster/RayJob: validated against the operator's real CRD schemas
  (`../shared/schemas/kuberay/`), made strict the way `kubectl apply --validate=strict` is
  (unknown fields rejected), with the `x-kubernetes-*` extensions enforced (list-map key
  uniqueness, sets, int-or-string, int32 ranges); then against the project: the entrypoint
  parses with the real CLI parser, its overrides load with `load_config`, the preset exists,
  GPU/CPU sizes fit the config's actors, ports and images follow the conventions.
- Ray cluster launcher YAML: Ray's own `prepare_config` + `validate_config`.
- Runtime env: parsed like `ray job submit --runtime-env` and built into a `RuntimeEnv`.
- Prometheus: `promtool check config` (skipped without promtool), the adversary file-SD file.
Images and pinned sets: tests/deploy/test_deploy_images.py.
"""
from __future__ import annotations

import copy
import functools
import json
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement

from gdro_ray.cli.main import COMMANDS, build_parser
from gdro_ray.config.loader import load_config, preset_names
from gdro_ray.metrics import names

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = Path(__file__).resolve().parents[3] / "shared" / "schemas" / "kuberay"
DEPLOY = ROOT / "deploy"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
IMAGE_RE = re.compile(rf"^(?:[^\s/]+/)*gdro-ray:{re.escape(VERSION)}-(?P<flavour>cpu|gpu)$")
MANIFESTS = {"RayCluster": DEPLOY / "kuberay" / "raycluster.yaml", "RayJob": DEPLOY / "kuberay" / "rayjob.yaml"}
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}
needs_crds = pytest.mark.skipif(not CRD_DIR.is_dir(), reason=f"KubeRay CRDs not found at {CRD_DIR} "
                                "(CI keeps a copy of shared/ beside the clone)")


def _yaml(path: Path):
    # The CRDs are 1-2 MB: libyaml's loader reads them about 6x faster than the pure-Python one.
    return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


# --- Kubernetes structural-schema validation ------------------------------------------

def _strict(schema):
    """Copy of a CRD schema that rejects unknown fields, as strict server-side validation does."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) if k in ("items", "additionalProperties", "anyOf", "allOf", "oneOf", "not") else v
           for k, v in schema.items() if k != "properties"}
    if "properties" in schema:
        out["properties"] = {k: _strict(v) for k, v in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if schema.get("x-kubernetes-int-or-string") and "anyOf" not in schema:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.get("nullable") and "type" in schema:
        out["type"] = [schema["type"], "null"]
    return out


def _list_type(validator, list_type, instance, schema):
    """x-kubernetes-list-type: `map` items are unique by their list-map-keys, `set` items unique."""
    if not validator.is_type(instance, "array"):
        return
    if list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        seen = set()
        for item in instance:
            # protocol defaults to TCP for ports; other absent keys compare as None.
            key = tuple(item.get(k, "TCP" if k == "protocol" else None) for k in keys)
            if key in seen:
                yield jsonschema.ValidationError(f"duplicate entry for list-map keys {keys}: {key}")
            seen.add(key)
    elif list_type == "set" and len({json.dumps(i, sort_keys=True) for i in instance}) != len(instance):
        yield jsonschema.ValidationError("duplicate items in a list of type set")


_formats = jsonschema.FormatChecker()
_formats.checks("int32")(lambda v: not isinstance(v, int) or -2**31 <= v < 2**31)
_formats.checks("int64")(lambda v: not isinstance(v, int) or -2**63 <= v < 2**63)
K8sValidator = jsonschema.validators.extend(jsonschema.Draft7Validator, {"x-kubernetes-list-type": _list_type})


@functools.cache
def _crd_validator(kind: str):
    crd = _yaml(CRD_DIR / CRD_FILES[kind])
    assert crd["spec"]["names"]["kind"] == kind
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
    return crd["spec"]["group"] + "/" + version["name"], K8sValidator(
        _strict(version["schema"]["openAPIV3Schema"]), format_checker=_formats)


def _errors(kind: str, doc: dict) -> list[str]:
    api_version, validator = _crd_validator(kind)
    errs = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
    if doc.get("apiVersion") != api_version:
        errs.append(f"apiVersion {doc.get('apiVersion')!r} != {api_version!r}")
    if doc.get("kind") != kind:
        errs.append(f"kind {doc.get('kind')!r} != {kind!r}")
    # Names become Service/Pod name prefixes: DNS-1035 labels, short enough for the suffixes.
    name = doc.get("metadata", {}).get("name", "")
    if not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 47:
        errs.append(f"metadata.name {name!r} is not a DNS-1035 label of at most 47 characters")
    return errs


def _cluster_spec(kind: str, doc: dict) -> dict:
    return doc["spec"] if kind == "RayCluster" else doc["spec"]["rayClusterSpec"]


def _containers(spec: dict):
    for group in [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]:
        for c in group["template"]["spec"]["containers"]:
            yield group, c


def _entrypoint_config(entrypoint: str):
    argv = shlex.split(entrypoint)
    assert argv[:2] == ["gdro-ray", "train"], argv
    assert argv[1] in COMMANDS
    assert PYPROJECT["project"]["scripts"]["gdro-ray"] == "gdro_ray.cli.main:main"
    args = build_parser().parse_args(argv[1:])
    overrides = list(args.overrides)
    if args.config and "=" in args.config:  # the CLI's own rule: key=value is not a file
        overrides.insert(0, args.config)
        args.config = None
    return load_config(args.config, overrides)


@needs_crds
@pytest.mark.parametrize("kind", MANIFESTS)
def test_manifest_valid_against_kuberay_crd(kind):
    assert _errors(kind, _yaml(MANIFESTS[kind])) == []


@needs_crds
def test_crd_validation_catches_mistakes():
    doc = _yaml(MANIFESTS["RayCluster"])
    broken = [  # (expected message fragment, mutation)
        ("'enableInTreeAutoScaling' was unexpected", lambda d: d["spec"].__setitem__("enableInTreeAutoScaling", True)),
        ("is not of type 'integer'", lambda d: d["spec"]["workerGroupSpecs"][0].__setitem__("maxReplicas", "1")),
        ("'groupName' is a required property", lambda d: d["spec"]["workerGroupSpecs"][1].pop("groupName")),
        ("'32 GiB' does not match", lambda d: d["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
         ["resources"]["limits"].__setitem__("memory", "32 GiB")),
        ("duplicate entry for list-map keys", lambda d: d["spec"]["headGroupSpec"]["template"]["spec"]
         ["containers"][0]["ports"].append({"name": "again", "containerPort": 8080})),
        ("is not a 'int32'", lambda d: d["spec"]["workerGroupSpecs"][0].__setitem__("maxReplicas", 2**31)),
        ("'Fast' is not one of", lambda d: d["spec"]["autoscalerOptions"].__setitem__("upscalingMode", "Fast")),
        ("not a DNS-1035 label", lambda d: d["metadata"].__setitem__("name", "Gdro_Ray")),
    ]
    for expected, mutate in broken:
        bad = copy.deepcopy(doc)
        mutate(bad)
        errs = _errors("RayCluster", bad)
        assert len(errs) == 1 and expected in errs[0], (expected, errs)


def test_rayjob_runs_the_cluster_spec_of_raycluster():
    job, cluster = _yaml(MANIFESTS["RayJob"]), _yaml(MANIFESTS["RayCluster"])
    assert job["spec"]["rayClusterSpec"] == cluster["spec"]


@pytest.mark.parametrize("kind", MANIFESTS)
def test_manifest_agrees_with_project(kind):
    doc = _yaml(MANIFESTS[kind])
    spec = _cluster_spec(kind, doc)
    ray_pin = next(Requirement(r) for r in PYPROJECT["project"]["dependencies"] if r.startswith("ray"))
    assert spec["rayVersion"] in ray_pin.specifier
    assert spec["enableInTreeAutoscaling"] is True
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert len(groups) == len(spec["workerGroupSpecs"])
    for g in groups.values():
        assert g["minReplicas"] <= g.get("replicas", g["minReplicas"]) <= g["maxReplicas"], g["groupName"]
    for _, c in _containers(spec):
        m = IMAGE_RE.match(c["image"])
        assert m, f"image {c['image']!r} does not follow [REGISTRY/]gdro-ray:{VERSION}-cpu|gpu"
        assert (ROOT / "docker" / f"Dockerfile.{m['flavour']}").is_file()
        gpus = int(c["resources"].get("limits", {}).get("nvidia.com/gpu", 0))
        assert not gpus or m["flavour"] == "gpu", f"{c['name']}: GPU pod on a CPU image"
    head = spec["headGroupSpec"]
    assert int(head["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu", 0)) == 0
    ports = {p["name"]: p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]}
    assert ports["gdro-metrics"] == names.DEFAULT_CLUSTER_PORT
    assert str(ports["metrics"]) == head["rayStartParams"]["metrics-export-port"]
    ann = head["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and int(ann["prometheus.io/port"]) == names.DEFAULT_CLUSTER_PORT
    for g in groups.values():
        wports = {p["name"]: p["containerPort"] for c in g["template"]["spec"]["containers"] for p in c["ports"]}
        assert str(wports["metrics"]) == g["rayStartParams"]["metrics-export-port"]
        assert g["template"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    claims = {d["metadata"]["name"] for d in yaml.safe_load_all((DEPLOY / "kuberay" / "storage.yaml").read_text())}
    for group in [head, *groups.values()]:
        for vol in group["template"]["spec"].get("volumes", []):
            if "persistentVolumeClaim" in vol:
                assert vol["persistentVolumeClaim"]["claimName"] in claims


def _pod_limits(group) -> tuple[float, int]:
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    return float(limits["cpu"]), int(limits.get("nvidia.com/gpu", 0))


def test_rayjob_entrypoint_is_a_valid_training_run():
    job = _yaml(MANIFESTS["RayJob"])
    cfg = _entrypoint_config(job["spec"]["entrypoint"])
    assert cfg.preset == "qwen3-1.7b-dapo" and cfg.preset in preset_names()
    assert cfg.metrics.host == "0.0.0.0" and cfg.metrics.port == names.DEFAULT_CLUSTER_PORT
    spec = job["spec"]["rayClusterSpec"]
    head_mounts = [m["mountPath"] for m in spec["headGroupSpec"]["template"]["spec"]["containers"][0]["volumeMounts"]]
    assert any(Path(cfg.out).is_relative_to(m) for m in head_mounts), "run dir not on a mounted volume"
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    # The learner ranks fit one learner pod (NCCL inside a node); samplers fit the sampler group.
    cpu, gpu = _pod_limits(groups["learner-gpu"])
    assert gpu >= cfg.learner.world_size * cfg.learner.num_gpus
    assert cpu >= cfg.learner.world_size * cfg.learner.num_cpus
    cpu, gpu = _pod_limits(groups["sampler-gpu"])
    assert gpu >= cfg.sampler.num_gpus > 0 and cpu >= cfg.sampler.num_cpus
    per_pod = int(gpu // cfg.sampler.num_gpus)
    assert groups["sampler-gpu"]["maxReplicas"] * per_pod >= cfg.sampler.max_samplers
    assert groups["sampler-gpu"]["minReplicas"] < groups["sampler-gpu"]["maxReplicas"]  # autoscaled
    _check_runtime_env(yaml.safe_load(job["spec"]["runtimeEnvYAML"]))


def test_bad_entrypoint_override_is_rejected():
    from gdro_ray.config.loader import ConfigError

    with pytest.raises(ConfigError):
        _entrypoint_config("gdro-ray train preset=qwen3-1.7b-dapo metrics.prot=9464")


# --- Ray: runtime env and cluster launcher ---------------------------------------------

def _check_runtime_env(env: dict) -> None:
    from ray.runtime_env import RuntimeEnv

    public = {k for k in RuntimeEnv.known_fields if not k.startswith("_")}
    assert set(env) <= public, f"keys Ray does not know: {set(env) - public}"
    RuntimeEnv(**env)  # Ray's own per-field validation (types, pip/uv/conda exclusivity, ...)
    for module in env.get("py_modules", []):
        assert "://" in module or (ROOT / module).exists(), f"py_modules entry {module} missing"


def test_runtime_env_file_is_valid_for_ray_job_submit():
    from ray.dashboard.modules.dashboard_sdk import parse_runtime_env_args

    env = parse_runtime_env_args(runtime_env=str(DEPLOY / "runtime-env.yaml"))
    assert env.get("env_vars") and all(isinstance(v, str) for v in env["env_vars"].values())
    _check_runtime_env(env)
    with pytest.raises(AssertionError):
        _check_runtime_env({**env, "envvars": {}})


def test_cluster_launcher_config_valid_for_ray_up():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = _yaml(DEPLOY / "cluster-launcher" / "gdro-gpu.yaml")
    validate_config(prepare_config(copy.deepcopy(raw)))  # ray-schema.json + node-type rules
    bad = copy.deepcopy(raw)
    bad["available_node_types"]["sampler_gpu"]["resources"]["GPU"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(bad))
    assert IMAGE_RE.match(raw["docker"]["image"])["flavour"] == "gpu"
    types = raw["available_node_types"]
    assert types[raw["head_node_type"]]["resources"].get("GPU", 0) == 0
    cfg = load_config(preset="qwen3-1.7b-dapo")
    learner, sampler = types["learner_gpu"], types["sampler_gpu"]
    assert learner["resources"]["GPU"] >= cfg.learner.world_size * cfg.learner.num_gpus
    assert sampler["max_workers"] * sampler["resources"]["GPU"] >= cfg.sampler.max_samplers * cfg.sampler.num_gpus
    assert sampler["min_workers"] < sampler["max_workers"]
    setup = " ".join(raw["setup_commands"])
    assert "constraints-gpu.txt" in setup and "[gpu]" in setup
    mounts = dict(raw["file_mounts"])
    # every node gets the client's token file, and starts Ray with token auth (docs/deploy.md §3)
    assert mounts.pop("~/.ray/auth_token") == "~/.ray/auth_token"
    assert all((ROOT / src).resolve() == ROOT for src in mounts.values())
    for cmd in raw["head_start_ray_commands"] + raw["worker_start_ray_commands"]:
        assert "ray start" not in cmd or "RAY_AUTH_MODE=token ray start" in cmd, cmd


# --- Prometheus --------------------------------------------------------------------------

PROM_CONFIGS = ["prometheus-static.yml", "prometheus-ray-sd.yml"]
needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                                    reason="promtool not installed (apt-get install prometheus)")


def _promtool(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", "check", "config", str(path)], capture_output=True, text=True, timeout=60)


@needs_promtool
@pytest.mark.parametrize("name", PROM_CONFIGS)
def test_promtool_accepts_scrape_config(name):
    r = _promtool(DEPLOY / "prometheus" / name)
    assert r.returncode == 0, r.stdout + r.stderr


@needs_promtool
def test_promtool_accepts_the_adversary_sd_file(tmp_path):
    sd = tmp_path / names.ADVERSARY_SD_FILENAME
    sd.write_text(names.adversary_sd_targets("10.1.2.3", names.DEFAULT_CLUSTER_PORT, {"run": "r"}))
    cfg = tmp_path / "p.yml"
    cfg.write_text(yaml.safe_dump({"scrape_configs": [{"job_name": "a", "file_sd_configs": [{"files": [str(sd)]}]}]}))
    r = _promtool(cfg)
    assert r.returncode == 0 and "WARNING" not in r.stdout + r.stderr, r.stdout + r.stderr
    sd.write_text('[{"targets": "10.1.2.3:9464"}]')  # malformed: targets must be a list
    assert _promtool(cfg).returncode != 0


def test_scrape_configs_point_at_the_documented_endpoints():
    static = _yaml(DEPLOY / "prometheus" / "prometheus-static.yml")
    jobs = {j["job_name"]: j for j in static["scrape_configs"]}
    assert f"127.0.0.1:{names.DEFAULT_CLUSTER_PORT}" in jobs["gdro_adversary"]["static_configs"][0]["targets"]
    sd = _yaml(DEPLOY / "prometheus" / "prometheus-ray-sd.yml")
    files = {j["job_name"]: [Path(f).name for c in j["file_sd_configs"] for f in c["files"]] for j in sd["scrape_configs"]}
    assert files["gdro_adversary"] == [names.ADVERSARY_SD_FILENAME]
    assert files["ray"] == ["prom_metrics_service_discovery.json"]
    cluster = _yaml(MANIFESTS["RayCluster"])["spec"]
    port_names = {p["name"] for _, c in _containers(cluster) for p in c["ports"]}
    head_labels = cluster["headGroupSpec"]["template"]["metadata"]["labels"] | {"ray.io/node-type": "head"}
    for mon in yaml.safe_load_all((DEPLOY / "prometheus" / "podmonitor.yaml").read_text()):
        assert mon["kind"] == "PodMonitor"
        assert set(mon["spec"]["selector"]["matchLabels"].items()) <= set(head_labels.items())
        assert {e["port"] for e in mon["spec"]["podMetricsEndpoints"]} <= port_names
