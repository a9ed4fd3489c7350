"""A real sweep: points as Ray tasks running `distrec train` + `distrec evaluate` subprocesses.

One scenario covers restart and failure (each point costs real processes, so they share it):
the sweep is interrupted after its first point finished, re-run, and must skip that point,
retry the failing one and report it.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[2]
TINY = ["data.synthetic.num_items=300", "data.synthetic.num_users=200", "model.size=debug",
        "train=debug", "train.max_steps=3", "engine=plain", "eval.batch_size=512"]
# point 1 trains; point 2 cannot build its model (32 dims over 3 heads) and fails inside its job
POINTS = "+sweep.points=[{model.n_heads:2},{model.n_heads:3}]"


def sweep_command(out_dir):
    return [sys.executable, "-m", "distrec", "sweep", POINTS, f"sweep.out_dir={out_dir}",
            "sweep.max_concurrent=1", "sweep.retries=1", "cluster.num_cpus=2", *TINY]


@pytest.mark.ray
def test_interrupted_sweep_resumes_and_reports_failed_point(tmp_path):
    out = tmp_path / "sweep"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(sweep_command(out), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 300
        while not list(out.glob("points/*/done.json")):
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.time() < deadline, "first point did not finish in 300 s"
            time.sleep(1)
        first.send_signal(signal.SIGINT)  # interrupt the sweep (SIGINT stops a Ray driver cleanly)
        try:
            first.wait(60)
        except subprocess.TimeoutExpired:
            first.kill()
            first.wait()
    (done,) = out.glob("points/*/done.json")
    finished = done.parent
    stamps = {p: p.stat().st_mtime_ns for p in (done, finished / "train" / "manifest.json",
                                                finished / "eval" / "metrics.json")}

    second = subprocess.run(sweep_command(out), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "1 finished before (skipped)" in second.stdout + second.stderr
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # the finished point was not re-run

    rows = {r["point_id"]: r for r in pq.read_table(out / "results.parquet").to_pylist()}
    assert len(rows) == 2
    ok = rows[finished.name]
    assert ok["status"] == "ok" and ok["model.n_heads"] == 2
    assert ok["params_non_embedding"] > 0 and ok["flops_per_token"] > 0 and ok["tokens_seen"] > 0
    assert ok["train_flops"] == pytest.approx(ok["flops_per_token"] * ok["tokens_seen"])
    assert 0 <= ok["test_ndcg@10"] <= 1 and ok["fidelity"] is None and ok["train_loss"] > 0
    (bad,) = [r for r in rows.values() if r["status"] == "failed"]
    assert bad["model.n_heads"] == 3 and bad["attempts"] == 2  # retried once, then reported
    assert "divisible" in bad["error"]  # the tail of the failing job's own log
    report = (out / "report.md").read_text()
    assert "1 finished, 1 failed" in report and bad["point_id"] in report and "divisible" in report
    assert "FAILED" in second.stdout and json.loads((out / "sweep.json").read_text())["points"]
