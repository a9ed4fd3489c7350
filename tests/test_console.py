"""What a user sees: `distrec` run as a subprocess on a small generated catalog (no datasets needed).

Each validation gets a line (on rank 0 only), training says how long it will take, every stage ends
with a line saying what it wrote and where, the evaluation table has a popularity baseline, figures
are rounded, errors are printed once, and third-party start-up noise is gone. And pytest says how
many real-data tests it skipped.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

TINY = ["experiment=quickstart", "data.synthetic.num_items=600", "data.synthetic.num_users=400",
        "tokenizer.codebook_size=16", "model.size=debug", "train.max_steps=12", "train.eval_every=6"]
# what third-party libraries printed on every run before distrec silenced them at their source
NOISE = ["AVX512", "-laio", "Setting accelerator to CPU", "not writable", "Failed to query",
         "PreemptionWatcher", "Found multiple active Ray instances", "Reporting training result"]


def distrec(*args, timeout=600):
    # a user's environment: no DS_ACCELERATOR, no OpenMP settings
    env = {k: v for k, v in os.environ.items() if k not in ("DS_ACCELERATOR", "OMP_WAIT_POLICY")}
    return subprocess.run([sys.executable, "-m", "distrec", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("console")
    out = distrec("run", *TINY, f"paths.root={root}", "progress=false")
    assert out.returncode == 0, out.stderr[-3000:]
    return root, out


def test_validation_lines_estimate_and_where_each_stage_wrote(run):
    root, out = run
    lines = out.stdout.splitlines()
    valid = [line for line in lines if line.startswith("valid step")]
    assert len(valid) == 2
    assert re.fullmatch(r"valid step 6/12: ndcg@10 0\.\d{4}  recall@10 0\.\d{4}  \|  best ndcg@10 0\.\d{4} at "
                        r"step 6  \|  ETA \d+ s", valid[0]), valid[0]
    assert any(re.match(r"train: 12 steps \(12 epochs\), about \d+ s at [\d.]+ s/step plus a validation every 6 "
                        r"steps$", line) for line in lines), out.stdout
    outputs = {"prepare": "data", "embed": "embed", "tokenize": "sids", "train": "train", "evaluate": "eval", "run": ""}
    for stage, directory in outputs.items():
        assert any(line.startswith(f"{stage}: ") and line.endswith(f" -> {root / directory}".rstrip("/"))
                   for line in lines), (stage, out.stdout)
    assert lines[-1].startswith("run: ")
    assert re.search(r"best valid ndcg@10\s+0\.\d{4} at step \d+\n", out.stdout)  # rounded (JSON keeps all digits)
    assert out.stdout.count("(popularity baseline)") == 2  # recall and NDCG rows


def test_no_third_party_noise(run):
    _, out = run
    for noise in NOISE:
        assert noise not in out.stdout + out.stderr, noise


def test_curve_png_beside_metrics_jsonl(run):
    root, _ = run
    assert (root / "train" / "metrics.jsonl").exists()
    assert (root / "train" / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_popularity_baseline_ranks_by_training_count(run):
    """Recomputed independently: the conservative rank of each test target among all items by count."""
    from distrec.data.dataset import load_prepared

    root, _ = run
    report = json.loads((root / "eval" / "metrics.json").read_text())
    assert report["protocol"]["filter_history"] is False  # the quickstart's protocol
    data = load_prepared(root / "data")
    counts = data.item_counts()
    _, _, targets = data.eval_examples("test")
    ranks = np.array([(counts[1:] >= counts[t]).sum() - 1 for t in targets])
    popularity = report["baselines"]["popularity"]
    for k in (1, 5, 10, 20):
        assert popularity[f"recall@{k}"] == pytest.approx((ranks < k).mean())
        assert popularity[f"ndcg@{k}"] == pytest.approx(np.where(ranks < k, 1 / np.log2(ranks + 2), 0).mean())


@pytest.mark.ray
def test_ray_training_prints_each_validation_once_without_noise(run):
    root, _ = run
    out = distrec("train", *TINY, f"paths.root={root}", f"paths.train={root / 'ray_train'}", "engine=zero2",
                  "engine.num_workers=2")
    assert out.returncode == 0, out.stderr[-3000:]
    assert len([line for line in out.stdout.splitlines() if "valid step" in line]) == 2  # rank 0 only
    for noise in NOISE:
        assert noise not in out.stdout + out.stderr, noise


def test_a_cli_error_is_printed_once(tmp_path):
    out = distrec("evaluate", f"paths.root={tmp_path}", timeout=120)
    assert out.returncode == 1
    assert (out.stdout + out.stderr).count("model.json: file does not exist") == 1, out.stdout + out.stderr
    assert out.stderr.startswith("distrec evaluate: error: ")


def test_openmp_threads_wait_passively():
    """Spinning OpenMP threads (libgomp's default) slowed training ~10x on busy cores; the CLI sets the
    policy before torch loads."""
    code = ("import os; from distrec.cli import main; main(['prepare', '--cfg', 'job']); "
            "print('policy', os.environ.get('OMP_WAIT_POLICY'))")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "policy PASSIVE" in out.stdout, out.stderr[-2000:]


def test_pytest_says_how_many_real_data_tests_it_skipped():
    """A clean clone has no datasets: pytest ends with one line saying how many tests that left out and
    how to run them (tests/conftest.py)."""
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "DISTREC_DATA": "/nonexistent/datasets"}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "recorded",
                          "tests/golden/test_golden_curves.py"], cwd=repo, env=env, capture_output=True, text=True,
                         timeout=300)
    lines = [line for line in out.stdout.splitlines() if "real-data tests skipped" in line]
    assert len(lines) == 1, out.stdout[-3000:]
    assert re.match(r"\d+ real-data tests skipped: no datasets at /nonexistent/datasets\. To run them, point "
                    r"DISTREC_DATA at", lines[0])
