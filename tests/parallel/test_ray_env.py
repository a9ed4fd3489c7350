"""The local Ray cluster: started from a process that touched Ray before distrec did, in a private temp
dir, and what its workers receive through the object store."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

SCRIPT = """
import ray.autoscaler._private.util  # makes Ray read its auth mode before distrec sets one
from distrec.parallel.ray_env import init_ray
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


TEMP_DIR = """
from distrec.parallel.ray_env import init_ray
ray = init_ray(None, num_cpus=1)
print("temp", ray._private.worker._global_node.get_temp_dir_path())
"""


@pytest.mark.ray
def test_the_local_cluster_has_a_private_temp_dir_removed_at_exit():
    """Not the shared /tmp/ray, where Ray meets other processes' clusters ("Found multiple active Ray
    instances"); short, as Ray's socket paths under it must fit in 107 characters."""
    out = subprocess.run([sys.executable, "-c", TEMP_DIR], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    temp = Path(next(line.split()[1] for line in out.stdout.splitlines() if line.startswith("temp ")))
    assert temp.name.startswith("distrec-ray-") and len(str(temp)) < 40
    assert not temp.exists()


@pytest.mark.ray
def test_a_sid_table_from_the_object_store_builds_a_model_without_warnings(ray_local):
    """Ray hands workers read-only arrays (zero-copy); the model copies them into its own buffers."""
    from distrec.models.methods.sid_common import SIDVocab
    from distrec.tokenize.sid_table import SIDTable

    codes = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    table = ray_local.get(ray_local.put(SIDTable.from_codes(np.arange(1, 5), codes, [2, 2])))
    assert not table.codes.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vocab = SIDVocab(table)
    assert vocab.codes[1:].tolist() == codes.tolist()


WORKER_ENV = """
import os
from distrec.parallel.ray_env import init_ray
ray = init_ray(None, num_cpus=1)
print("worker DS_ACCELERATOR", ray.get(ray.remote(lambda: os.environ.get("DS_ACCELERATOR", "unset")).remote()))
ray.shutdown()
"""


@pytest.mark.ray
def test_workers_get_ds_accelerator_only_when_the_driver_sets_it():
    """A GPU node's workers must not be told DS_ACCELERATOR=cpu (DeepSpeed would ignore the GPUs); where
    torch sees no GPU, `import_deepspeed` picks cpu in the worker itself."""
    env = {k: v for k, v in os.environ.items() if k != "DS_ACCELERATOR"}
    out = subprocess.run([sys.executable, "-c", WORKER_ENV], env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "worker DS_ACCELERATOR unset" in out.stdout
    out = subprocess.run([sys.executable, "-c", WORKER_ENV], env={**env, "DS_ACCELERATOR": "cuda"},
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "worker DS_ACCELERATOR cuda" in out.stdout
