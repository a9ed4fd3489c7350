"""The launch path for real: launch/local_cluster.sh starts a Ray head on 127.0.0.1,
launch/submit.py sends a tiny SASRec training to it with `ray job submit` (the code travels in the
job's runtime env, the job joins the cluster with `cluster=job` and trains under Ray Train with one
worker), the job SUCCEEDS, its model evaluates, and the head is stopped."""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from distrec.config import compose

REPO = Path(__file__).resolve().parents[2]
DATA = ["data=synthetic", "data.synthetic.num_items=300", "data.synthetic.num_users=200", "progress=false"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def head():
    ray_dir = Path(tempfile.mkdtemp(prefix="dr-", dir="/tmp"))  # Ray's socket paths must stay < 108 bytes
    env = {**os.environ, "RAY": str(Path(sys.executable).with_name("ray")), "DISTREC_RAY_DIR": str(ray_dir), "RAY_PORT": str(free_port()),
           "RAY_DASHBOARD_PORT": str(free_port()), "RAY_CLIENT_PORT": str(free_port()),
           "RAY_AGENT_PORT": str(free_port())}
    script = str(REPO / "launch" / "local_cluster.sh")
    try:
        started = subprocess.run([script, "start", "--num-cpus", "2"], env=env, capture_output=True, text=True,
                                 timeout=600)
        assert started.returncode == 0, started.stdout + started.stderr
        yield f"http://127.0.0.1:{env['RAY_DASHBOARD_PORT']}"
    finally:
        stopped = subprocess.run([script, "stop"], env=env, capture_output=True, text=True, timeout=120)
        assert "stopped" in stopped.stdout or "not running" in stopped.stdout
        assert not (ray_dir / "head.pid").exists()
        shutil.rmtree(ray_dir, ignore_errors=True)


@pytest.mark.ray
def test_submitted_training_job_succeeds(head, tmp_path):
    from distrec.stages.prepare import run as prepare

    prepare(compose(["stage=prepare", f"paths.root={tmp_path}", *DATA]))
    job = ["distrec", "train", f"paths.root={tmp_path}", *DATA, "model.size=debug", "train=debug",
           "train.max_steps=4", "train.eval_every=4", "eval.batch_size=512", "engine=local",
           "engine.num_workers=1", "engine.cpus_per_worker=0.5"]
    done = subprocess.run([sys.executable, str(REPO / "launch" / "submit.py"), "--address", head, "--", *job],
                          capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    log = done.stdout[-3000:] + done.stderr[-3000:]
    assert done.returncode == 0, log
    # `ray job submit` ends with "Job '<id>' succeeded" (the job status is SUCCEEDED)
    assert re.search(r"Job '\S+' succeeded|SUCCEEDED", output), log
    assert (tmp_path / "train" / "model.json").exists() and (tmp_path / "train" / "manifest.json").exists()

    from distrec.stages.evaluate import run as evaluate

    report = evaluate(compose(["stage=evaluate", f"paths.root={tmp_path}", *DATA]))
    assert report["metrics"]["users"] > 0 and report["metrics"]["invalid_id_rate"] == 0.0


def test_submit_dry_run_builds_the_runtime_env():
    import json
    import shlex

    out = subprocess.run([sys.executable, str(REPO / "launch" / "submit.py"), "--dry-run", "--address",
                          "http://127.0.0.1:1", "--pip", "--", "distrec", "train", "data=beauty"],
                         capture_output=True, text=True, check=True).stdout
    args = shlex.split(out)
    env = json.loads(args[args.index("--runtime-env-json") + 1])
    assert env["working_dir"] == str(REPO) and env["py_modules"] == [str(REPO / "distrec")]
    assert {".venv", "runs", ".git"} <= set(env["excludes"])
    assert any(d.startswith("torch==") for d in env["pip"])
    assert args[args.index("--") + 1:] == ["python", "-m", "distrec", "train", "data=beauty", "cluster=job"]
