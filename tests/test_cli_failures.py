"""The CLI when a stage fails or is stopped: a refused command leaves no `runs/<name>/` behind, an
allocation failure is a clear message, SIGTERM ends a stage with one line and exit code 143 after its
clean-ups, and a killed stage's temporary directory is removed by the next run."""

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distrec.config import compose

TINY_DATA = ["data.synthetic.num_items=2000", "data.synthetic.num_users=1000", "progress=false"]


def distrec(*args, cwd, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "distrec", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    """A small generated catalog, prepared (runs/<root>/data)."""
    from distrec.stages.prepare import run

    root = tmp_path_factory.mktemp("synthetic")
    run(compose(["stage=prepare", f"paths.root={root}", *TINY_DATA]))
    return root


def test_a_refused_command_leaves_no_run_directory(tmp_path):
    rc, _, err = finish(distrec("train", "+train.max_step=5", f"paths.root={tmp_path / 'typo'}", cwd=tmp_path))
    assert rc == 1 and "did you mean 'train.max_steps'?" in err and "Traceback" not in err
    assert not (tmp_path / "typo").exists()  # not even runs/<name>/logs


def test_a_failed_stage_keeps_the_run_directory_it_shares(synthetic, tmp_path):
    before = sorted(synthetic.rglob("*"))
    rc, _, err = finish(distrec("train", f"paths.root={synthetic}", "train.max_steps=0", cwd=tmp_path))
    assert rc == 1 and "train.max_steps=0 must be >= 1" in err
    assert sorted(synthetic.rglob("*")) == before  # its own log went (and the logs/ it made), nothing else


def test_an_allocation_failure_names_its_size_and_what_to_lower(synthetic, tmp_path):
    def limit_memory():  # a host with 3 GiB more than the interpreter and its libraries take
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))

    rc, _, err = finish(distrec("train", f"paths.root={synthetic}", f"paths.train={tmp_path / 'big'}", "engine=plain",
                                "model.d_model=65536", "model.n_heads=1", "progress=false", cwd=tmp_path,
                                preexec_fn=limit_memory))
    assert rc == 1, err[-2000:]
    assert "out of memory: one allocation of" in err and "GiB failed (limit 6.00 GiB (ulimit -v)" in err
    assert "model.d_model" in err and "Traceback" not in err
    assert not (tmp_path / "big").exists()


def wait_until(proc, ready, seconds: float, every: float = 0.2) -> None:
    """Poll until ready() is true, the process has ended or `seconds` have passed."""
    deadline = time.time() + seconds
    while not ready() and time.time() < deadline and proc.poll() is None:
        time.sleep(every)


def test_sigterm_ends_training_with_one_line_and_code_143(synthetic, tmp_path):
    train_dir = tmp_path / "train"
    proc = distrec("train", f"paths.root={synthetic}", f"paths.train={train_dir}", "engine=plain",
                   "model.size=debug", "train.max_steps=100000", "train.eval_every=5", "progress=false", cwd=tmp_path)
    wait_until(proc, lambda: list(train_dir.glob("checkpoints/step-*")), 240)
    proc.send_signal(signal.SIGTERM)
    rc, _, err = finish(proc, timeout=120)
    assert rc == 143, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("distrec train: stopped by SIGTERM")
    assert "Traceback" not in err


def test_sigterm_removes_the_half_written_artifact_and_a_killed_ones_is_removed_later(tmp_path):
    root = tmp_path / "big"
    proc = distrec("prepare", f"paths.root={root}", "data.synthetic.num_items=400000", "data.synthetic.num_users=2000",
                   "data.synthetic.shard_items=20000", "progress=false", cwd=tmp_path)
    wait_until(proc, lambda: list(root.glob(".data.tmp-*/items/part-*")), 240, every=0.05)
    assert proc.poll() is None, "prepare finished before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    rc, _, err = finish(proc)
    assert rc == 143 and "stopped by SIGTERM" in err, err[-3000:]
    assert not list(root.glob(".data.tmp-*")) and not (root / "data").exists()

    # a SIGKILLed stage cleans nothing: the next run removes what dead processes of this host left
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = os.uname().nodename
    stale = [root / f".data.tmp-{dead.pid}", root / f".data.tmp-{host}-{dead.pid}"]
    kept = [root / f".data.tmp-{host}-{os.getpid()}", root / f".data.tmp-otherhost-{dead.pid}"]
    for d in stale + kept:
        (d / "items").mkdir(parents=True)
    rc, _, err = finish(distrec("prepare", f"paths.root={root}", *TINY_DATA, cwd=tmp_path))
    assert rc == 0, err[-3000:]
    assert [d.exists() for d in stale + kept] == [False, False, True, True]
    assert (root / "data" / "manifest.json").exists()


@pytest.mark.ray
def test_sigterm_under_ray_exits_cleanly_without_a_stack_dump(synthetic, tmp_path):
    """Ray's core worker installs a C++ SIGTERM handler that dumps a stack and aborts (exit 134)."""
    train_dir = tmp_path / "ray_train"
    proc = distrec("train", f"paths.root={synthetic}", f"paths.train={train_dir}", "engine=local",
                   "engine.num_workers=1", "model.size=debug", "train.max_steps=100000", "train.eval_every=5",
                   "progress=false", "cluster.num_cpus=1", cwd=tmp_path)
    wait_until(proc, lambda: list(train_dir.glob("ray/checkpoint_*/state.json")), 400, every=0.5)
    proc.send_signal(signal.SIGTERM)
    rc, _, err = finish(proc, timeout=120)
    assert rc == 143, err[-3000:]
    assert "stopped by SIGTERM" in err and "SIGTERM received" not in err


def test_an_unreachable_cluster_address_fails_within_seconds(tmp_path):
    """Ray tries a GCS that does not answer for minutes; a port that refuses, and one that accepts
    but never answers, are both a clear ConfigError within seconds."""
    with socket.socket() as refused:
        refused.bind(("127.0.0.1", 0))
        free_port = refused.getsockname()[1]
    silent = socket.socket()  # accepts connections (the kernel's backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    script = ("import sys\nfrom distrec.parallel.config import ClusterConfig\nfrom distrec.parallel.ray_env import init_ray\n"
              "from distrec.errors import ConfigError\n"
              "try:\n    init_ray(ClusterConfig(address=sys.argv[1]))\nexcept ConfigError as e:\n    print(e)\n")
    try:
        for port in (free_port, silent.getsockname()[1]):
            start = time.time()
            out = subprocess.run([sys.executable, "-c", script, f"127.0.0.1:{port}"], capture_output=True, text=True,
                                 timeout=300, cwd=tmp_path)
            assert out.stdout.startswith(f"cluster.address=127.0.0.1:{port}: "), out.stderr[-3000:]
            assert "start the cluster first" in out.stdout and time.time() - start < 30
    finally:
        silent.close()
