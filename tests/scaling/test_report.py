"""The sweep report from result markers: tables, per-curve fits, frontier, plots, failed points."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from distrec.scaling.report import analyze


def write_point(sweep, pid, row, losses=None):
    d = sweep / "points" / pid
    (d / "train").mkdir(parents=True)
    if losses:
        (d / "train" / "metrics.jsonl").write_text("".join(
            json.dumps({"step": s, "split": "train", "loss": l}) + "\n" for s, l in losses))
    status = row.get("status", "ok")
    (d / ("done.json" if status == "ok" else "failed.json")).write_text(
        json.dumps({"point_id": pid, "run_dir": str(d), **row}))


def test_report_fits_each_backbone_and_the_frontier(tmp_path):
    sweep = tmp_path / "sweep"
    laws = {"transformer": (50.0, 0.3, 2.0), "hstu": (80.0, 0.4, 1.5)}
    for backbone, (a, b, c) in laws.items():
        for d in (32, 64, 128, 256, 512):
            n = 12 * d * d  # non-embedding parameters of a 1-layer block
            tokens = 1e5
            write_point(sweep, f"{backbone}-{d}", {
                "model.d_model": d, "backbone": backbone, "method": "sasrec", "steps": 10,
                "params_non_embedding": n, "flops_per_token": 6.0 * n, "tokens_seen": tokens,
                "train_flops": 6.0 * n * tokens, "loss": a * n ** -b + c, "train_loss": a * n ** -b + c,
                "test_ndcg@10": 0.1 - 0.5 * n ** -0.3, "status": "ok"},
                losses=[(s, (a * n ** -b + c) * (1 + 1.0 / s)) for s in range(1, 11)])
    write_point(sweep, "broken", {"model.d_model": 1024, "status": "failed", "attempts": 2,
                                  "error": "distrec train failed (exit 1):\nout of memory"})
    result = analyze(sweep, ["model.d_model"])

    rows = pq.read_table(sweep / "results.parquet").to_pylist()
    assert len(rows) == 11 and sum(r["status"] == "failed" for r in rows) == 1
    assert pq.read_table(sweep / "curves.parquet").num_rows == 100
    fits = json.loads((sweep / "fits.json").read_text())
    per_backbone = fits["loss vs params_non_embedding"]
    for backbone, (a, b, c) in laws.items():
        fit = per_backbone[f"sasrec/{backbone}"]
        assert fit["b"] == pytest.approx(b, rel=0.05) and fit["c"] == pytest.approx(c, rel=0.05)
    assert "test_ndcg@10 vs params_non_embedding" in fits
    frontier = fits["frontier: train loss vs FLOPs"]  # one envelope per backbone: their losses differ
    assert set(frontier) == {"sasrec/transformer", "sasrec/hstu"} and all(f["n_points"] >= 3 for f in frontier.values())
    for name in ("loss_vs_params_non_embedding.png", "test_ndcg_10_vs_train_flops.png", "frontier.png"):
        assert name in result["plots"] and (sweep / "plots" / name).stat().st_size > 10_000
    report = (sweep / "report.md").read_text()
    assert "10 finished, 1 failed" in report and "out of memory" in report and "broken" in report
    assert np.isfinite(per_backbone["sasrec/hstu"]["ci"]["b"]).all()
