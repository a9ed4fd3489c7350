"""Starting a local Ray cluster from a process that touched Ray before distrec did."""

import os
import subprocess
import sys

import pytest

SCRIPT = """
import ray.autoscaler._private.util  # makes Ray read its auth mode before distrec sets one
from distrec.dist.ray_env import init_ray
ray = init_ray(None, num_cpus=1)
print("value", ray.get(ray.put(41)) + 1)
ray.shutdown()
"""


@pytest.mark.ray
def test_local_cluster_starts_after_ray_was_already_imported(tmp_path):
    # A clean home (no ~/.ray/auth_token) and no RAY_AUTH_MODE: what a fresh CI machine has.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env["HOME"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "value 42" in out.stdout
