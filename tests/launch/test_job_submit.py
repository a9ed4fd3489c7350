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
                          "http://127.0.0.1:1", "--pip", "--", "distrec", "train", "data=beauty",
                          "paths.root=/shared/runs/beauty"], capture_output=True, text=True, check=True).stdout
    args = shlex.split(out)
    env = json.loads(args[args.index("--runtime-env-json") + 1])
    # a package of the tracked files (gone after the dry run), not the checkout itself
    assert env["working_dir"] != str(REPO) and env["py_modules"] == [str(Path(env["working_dir"]) / "distrec")]
    assert any(d.startswith("torch==") for d in env["pip"])
    assert args[args.index("--") + 1:] == ["python", "-m", "distrec", "train", "data=beauty",
                                           "paths.root=/shared/runs/beauty", "cluster=job"]


def test_submit_refuses_artifact_paths_in_the_uploaded_copy():
    """The job runs in a copy of the checkout that Ray deletes when it ends: relative artifact paths
    (the default runs/<name>) would write there and be lost, and find no earlier stage's artifacts."""
    script = [sys.executable, str(REPO / "launch" / "submit.py"), "--dry-run", "--address", "http://127.0.0.1:1", "--"]
    for command, named in ((["distrec", "train", "data=beauty"], "paths.root=runs/beauty, paths.data=runs/beauty/data"),
                           (["distrec", "evaluate", "paths.root=/shared/r", "paths.train=runs/t"], "paths.train=runs/t"),
                           (["distrec", "sweep", "--cfg", "job", "paths.root=/shared/r", "sweep.out_dir=s"],
                            "sweep.out_dir=s")):
        done = subprocess.run([*script, *command], capture_output=True, text=True)
        assert done.returncode == 2 and named in done.stderr and "set paths.root to an absolute" in done.stderr, \
            done.stderr
        assert "ray job submit" not in done.stdout and "Traceback" not in done.stderr
    done = subprocess.run([*script, "distrec", "run", "paths.root=/shared/r"], capture_output=True, text=True,
                          check=True)
    assert "job submit" in done.stdout and "paths.root=/shared/r" in done.stdout  # absolute: submitted


def git_repo(root: Path) -> Path:
    """A checkout with tracked files (one edited since `git add`), untracked secrets and ignored runs."""
    files = {"distrec/__init__.py": "", "README.md": "old", ".gitignore": "runs/\n*.log\n",
             "pyproject.toml": (REPO / "pyproject.toml").read_text(),
             "launch/submit.py": (REPO / "launch" / "submit.py").read_text()}
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "add", "."], check=True)
    (root / "README.md").write_text("edited")
    for name in (".env", "keys/id_rsa", "notes.txt", "runs/x/weights.pt", "train.log"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("secret")
    return root


def test_only_tracked_files_and_named_paths_are_shipped(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("submit", REPO / "launch" / "submit.py")
    submit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(submit)
    repo, dest = git_repo(tmp_path / "repo"), tmp_path / "package"
    left_out = submit.package(repo, dest, ["notes.txt", "runs/x"])  # an untracked file, an ignored directory
    shipped = sorted(str(f.relative_to(dest)) for f in dest.rglob("*") if f.is_file())
    assert shipped == [".gitignore", "README.md", "distrec/__init__.py", "launch/submit.py", "notes.txt",
                       "pyproject.toml", "runs/x/weights.pt"]
    assert (dest / "README.md").read_text() == "edited"  # as on disk
    assert sorted(left_out) == [".env", "keys/"]  # untracked, not named (ignored files are not listed)


def test_submit_names_what_it_leaves_out_and_refuses_bad_arguments(tmp_path):
    repo = git_repo(tmp_path / "repo")
    script = [sys.executable, str(repo / "launch" / "submit.py"), "--dry-run"]
    done = subprocess.run([*script, "--", "distrec", "train", "paths.root=/r"], capture_output=True, text=True,
                          check=True)
    assert "not shipped, as git does not track them" in done.stderr and ".env, keys/" in done.stderr
    for bad, error in ((["--env", "FOO"], "argument --env: expected KEY=VALUE, got 'FOO'"),
                       (["--include", str(repo / "missing")], "missing does not exist"),
                       (["--include", str(tmp_path)], "is not inside the checkout")):
        done = subprocess.run([*script, *bad, "--", "distrec", "train", "paths.root=/r"], capture_output=True,
                              text=True)
        assert done.returncode == 2 and error in done.stderr and "Traceback" not in done.stderr, done.stderr
    done = subprocess.run([*script, "--env", "A=b=c", "--", "distrec", "train", "paths.root=/r"], capture_output=True,
                          text=True, check=True)
    assert '"A": "b=c"' in done.stdout
