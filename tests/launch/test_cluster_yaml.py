"""cluster.yaml is a valid Ray cluster-launcher config with what distrec needs: a head that runs no
work, autoscaling GPU worker types, torch pinned (as in pyproject) and installed before distrec
with its `gpu` extra on GPU nodes, usage stats off."""

import re
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster():
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def test_valid_against_rays_own_schema(cluster):
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(cluster)
    validate_config(prepare_config(cluster))  # with Ray's provider defaults filled in


def test_required_keys_and_provider(cluster):
    for key in ("cluster_name", "max_workers", "provider", "auth", "available_node_types", "head_node_type",
                "setup_commands", "head_start_ray_commands", "worker_start_ray_commands", "file_mounts"):
        assert key in cluster, key
    assert cluster["provider"]["type"] in ("aws", "gcp")
    assert cluster["provider"]["region"]
    assert cluster["head_node_type"] in cluster["available_node_types"]


def test_node_types_and_resources(cluster):
    types = cluster["available_node_types"]
    head = types[cluster["head_node_type"]]
    assert head["max_workers"] == 0 and head["resources"].get("GPU", 0) == 0
    workers = {name: t for name, t in types.items() if name != cluster["head_node_type"]}
    gpu_types = {name: t for name, t in workers.items() if t["resources"].get("GPU", 0) > 0}
    assert gpu_types, "no GPU worker type"
    for name, t in workers.items():
        assert isinstance(t["resources"]["CPU"], int) and t["resources"]["CPU"] > 0, name
        assert 0 == t["min_workers"] <= t["max_workers"], f"{name}: workers must autoscale from zero"
        assert t["node_config"]["InstanceType" if cluster["provider"]["type"] == "aws" else "machineType"]
    for name, t in gpu_types.items():
        assert t["resources"]["CPU"] >= t["resources"]["GPU"], f"{name}: at least a CPU per GPU worker"
        assert any("distrec[gpu]" in c for c in t["worker_setup_commands"]), f"{name}: needs the gpu extra"
    assert sum(t["max_workers"] for t in workers.values()) >= cluster["max_workers"] > 0


def test_torch_pinned_first_as_in_pyproject(cluster):
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pin = next(d for d in deps if re.match(r"torch\b", d))
    commands = cluster["setup_commands"]
    torch_at = next(i for i, c in enumerate(commands) if "torch" in c)
    assert pin in commands[torch_at], f"setup must install {pin}"
    distrec_at = next(i for i, c in enumerate(commands) if "distrec" in c)
    assert torch_at < distrec_at, "torch must be installed before distrec"


def test_ray_started_on_matching_ports_without_usage_stats(cluster):
    head = " ".join(cluster["head_start_ray_commands"])
    worker = " ".join(cluster["worker_start_ray_commands"])
    port = re.search(r"--head --port=(\d+)", head).group(1)
    assert f"--address=$RAY_HEAD_IP:{port}" in worker
    assert "--disable-usage-stats" in head and "--disable-usage-stats" in worker
    assert "~/ray_bootstrap_config.yaml" in head  # the autoscaler reads the config from there
