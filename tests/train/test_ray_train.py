"""Ray Train + DeepSpeed with real worker processes and gloo: same losses for any worker count,
ZeRO-3 memory partitioning, recovery from a killed worker, and refusing impossible placements."""

import json
import os
import shutil
import signal
import threading
import time

import pytest

from distrec.errors import ConfigError, DataError
from train_helpers import losses, rows, train

pytestmark = [pytest.mark.ray, pytest.mark.distributed]


@pytest.fixture(scope="module")
def ray_runs(prepared, ray_local, local_runs):
    """2-worker ZeRO-2 and ZeRO-3 runs beside the in-process 1-worker DeepSpeed ZeRO-0 run."""
    out, _, one = local_runs
    runs = {"one": one, "zero2_2w": train(prepared, out / "zero2_2w", "engine=zero2"),
            "zero3_1w": train(prepared, out / "zero3_1w", "engine=local", "engine.zero_stage=3"),
            "zero3_2w": train(prepared, out / "zero3_2w", "engine=zero3")}
    return out, runs


def test_one_and_two_workers_give_the_same_losses(ray_runs):
    """ZeRO-0, 2 and 3 on 1 and 2 workers: the same curve (fp32, no dropout) to 1e-5. ZeRO-3 builds the
    model partitioned (zero.Init) with the same initial weights and validates it partitioned."""
    out, runs = ray_runs
    one, two, three_1w, three = (losses(out / name) for name in ("ds", "zero2_2w", "zero3_1w", "zero3_2w"))
    assert len(one) == len(two) == len(three) == 12
    for curve in (two, three_1w, three):
        assert curve == pytest.approx(one, rel=1e-5, abs=1e-6)
    for name in ("zero3_1w", "zero3_2w"):
        assert rows(out / name, "valid")[-1]["users"] == 200
        assert rows(out / name, "valid")[-1]["ndcg@10"] == pytest.approx(rows(out / "ds", "valid")[-1]["ndcg@10"])
    assert runs["zero2_2w"]["world_size"] == 2 and runs["zero2_2w"]["micro_batch"] == 32
    # validation ran on both ranks and was reduced over all (200) users
    assert rows(out / "zero2_2w", "valid")[-1]["users"] == 200
    assert rows(out / "zero2_2w", "valid")[-1]["ndcg@10"] == pytest.approx(rows(out / "ds", "valid")[-1]["ndcg@10"])


def test_zero3_partitions_parameters_and_optimizer_state(ray_runs):
    _, runs = ray_runs
    full = runs["one"]["memory_bytes_per_worker"][0]  # ZeRO-0: the same per worker for any count
    for part in runs["zero3_2w"]["memory_bytes_per_worker"]:
        assert part["param_bytes"] <= 0.55 * full["param_bytes"]
        assert part["param_optimizer_bytes"] <= 0.55 * full["param_optimizer_bytes"]


def test_a_killed_worker_is_recovered_and_the_run_matches(prepared, ray_local, ray_runs, tmp_path):
    out, _ = ray_runs
    run_dir = tmp_path / "ft"
    killed = []

    def kill_rank1_after_first_checkpoint():
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            pid_file = run_dir / "workers" / "rank-1.pid"
            if pid_file.exists() and list(run_dir.glob("ray/checkpoint_*/state.json")):
                pid = int(pid_file.read_text())
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.1)

    killer = threading.Thread(target=kill_rank1_after_first_checkpoint, daemon=True)
    killer.start()
    summary = train(prepared, run_dir, "engine=zero2", "engine.max_failures=1", "train.checkpoint_every=2")
    killer.join(timeout=1)
    assert killed, "no worker was killed"
    assert int((run_dir / "workers" / "rank-1.pid").read_text()) != killed[0]  # a new worker took over
    assert summary["steps"] == 12
    assert [r["step"] for r in rows(run_dir)] == list(range(1, 13))
    assert losses(run_dir) == pytest.approx(losses(out / "zero2_2w"), rel=1e-5, abs=1e-6)


def test_more_workers_than_the_cluster_has_cpus_is_refused(prepared, ray_local, tmp_path):
    with pytest.raises(ConfigError, match="needs 4 CPUs"):
        train(prepared, tmp_path / "big", "engine=zero2", "engine.num_workers=8")
    assert not (tmp_path / "big" / "checkpoints").exists()


def copy_run(src, run_dir):
    """A copy of a finished 12-step Ray run; returns its latest checkpoint (Ray's snapshot names it)."""
    shutil.copytree(src, run_dir)
    snapshot = json.loads((run_dir / "ray" / "checkpoint_manager_snapshot.json").read_text())
    latest = run_dir / "ray" / snapshot["latest_checkpoint_result"]["checkpoint_dir_name"]
    assert json.loads((latest / "state.json").read_text())["step"] == 12
    return latest


def test_a_corrupt_checkpoint_stops_the_run_once_and_its_hint_resumes_it(prepared, ray_local, ray_runs, tmp_path):
    """Under Ray Train a corrupt checkpoint is the user's error: not retried (engine.max_failures=2), and
    following the printed hint (delete the checkpoint directory) resumes from the previous one."""
    out, _ = ray_runs
    run_dir = tmp_path / "corrupt"
    latest = copy_run(out / "zero2_2w", run_dir)
    for f in (latest / "engine").rglob("*.pt"):
        f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(DataError, match="cannot be loaded") as info:  # not Ray's error after 2 retries
        train(prepared, run_dir, "engine=zero2", "engine.max_failures=2")
    message = str(info.value)
    assert message.startswith(f"{latest}/engine/") and "delete the checkpoint directory that holds it" in message
    shutil.rmtree(latest)  # what the hint says
    summary = train(prepared, run_dir, "engine=zero2", "engine.max_failures=2")
    assert summary["steps"] == 12
    assert losses(run_dir) == pytest.approx(losses(out / "zero2_2w"), rel=1e-5, abs=1e-6)


def test_a_zero3_checkpoint_resumes_to_the_same_curve(prepared, ray_local, ray_runs, tmp_path):
    """The 2-worker ZeRO-3 run cut back to its step-6 checkpoint and resumed: the same losses and
    the same consolidated weights at the end."""
    import torch
    from safetensors.torch import load_file

    out, _ = ray_runs
    run_dir = tmp_path / "z3_resume"
    latest = copy_run(out / "zero3_2w", run_dir)
    shutil.rmtree(latest)  # back to the step-6 checkpoint
    summary = train(prepared, run_dir, "engine=zero3")
    assert summary["steps"] == 12 and summary["attempts"] == 2
    assert losses(run_dir) == losses(out / "zero3_2w")
    resumed, uninterrupted = (load_file(d / "weights" / "last.safetensors") for d in (run_dir, out / "zero3_2w"))
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)