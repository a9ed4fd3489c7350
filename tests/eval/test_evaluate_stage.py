"""The `evaluate` stage end to end on real ml-100k: a tiny SASRec trained by the real `train`
stage, evaluated full-catalog; metrics agree with an independent full-score ranking; wrong data
or SID table is refused with a clear error."""

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from distrec.artifacts import dir_hash, read_table
from distrec.config import compose
from distrec.errors import ConfigError

TINY = ["model.size=debug", "engine=plain", "train.global_batch_size=64", "train.max_steps=8",
        "train.warmup_steps=2", "train.eval_every=4", "train.patience=0", "train.val_max_users=100",
        "eval.batch_size=256", "progress=false"]


def stage(name, root, *overrides):
    import importlib

    cfg = compose([f"stage={name}", "data=ml100k", f"paths.root={root}", *TINY, *overrides])
    return importlib.import_module(f"distrec.stages.{name}").run(cfg)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root):
    root = tmp_path_factory.mktemp("evaluate")
    stage("prepare", root, f"data.path={data_root / 'ml-100k'}")
    stage("train", root)
    return root


def test_metrics_json_predictions_and_protocol(trained, capsys):
    report = stage("evaluate", trained)
    assert "recall" in capsys.readouterr().out  # the printed table
    saved = json.loads((trained / "eval" / "metrics.json").read_text())
    assert saved["metrics"] == pytest.approx(report["metrics"])
    p = saved["protocol"]
    assert p["split"] == "test" and p["ks"] == [1, 5, 10, 20] and p["ranking"] == "full-catalog"
    assert p["ties"] == "conservative" and p["checkpoint_selection"] == "best validation ndcg@10"
    assert p["dataset"] == "ml100k" and p["data_hash"] == dir_hash(trained / "data" / "sequences")
    assert (trained / "eval" / "manifest.json").exists()

    pred = read_table(trained / "eval" / "predictions").to_pydict()
    m = saved["metrics"]
    assert len(pred["user_id"]) == m["users"] == 943  # every ml-100k user has a test item
    assert all(len(items) == 20 and min(items) >= 1 for items in pred["items"])
    ranks = np.array(pred["rank"])
    assert m["recall@10"] == pytest.approx((ranks < 10).mean())
    assert m["ndcg@10"] == pytest.approx(np.where(ranks < 10, 1 / np.log2(ranks + 2), 0).mean())
    assert m["invalid_id_rate"] == 0.0 and 0 < m["coverage@20"] <= 1


def test_metrics_match_an_independent_full_score_ranking(trained):
    from distrec.data.batches import SequenceData, collate_eval, eval_rows
    from distrec.eval.metrics import ranks_from_scores
    from distrec.train.export import TrainedModel

    handle = TrainedModel(trained / "train")
    model, info = handle.load("best"), handle.info
    data = SequenceData.from_arrow(pq.read_table(trained / "data" / "sequences"))
    rows, pos = eval_rows(data, "test")
    batch = collate_eval(data, rows, pos, info["model"]["max_history"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ranks = ranks_from_scores(model.score_all(batch), batch["target"]).numpy()
    m = json.loads((trained / "eval" / "metrics.json").read_text())["metrics"]
    for k in (1, 5, 10, 20):
        assert m[f"recall@{k}"] == pytest.approx((ranks < k).mean())


def test_max_users_evaluates_a_recorded_random_sample(trained, capsys):
    out = trained / "eval_sample"
    report = stage("evaluate", trained, "eval.max_users=100", "eval.sample_seed=3", f"paths.eval={out}")
    saved = json.loads((out / "metrics.json").read_text())["protocol"]
    assert saved["user_sample"] == report["protocol"]["user_sample"] == {"users": 100, "of": 943, "seed": 3}
    assert "100 of 943 users (seeded sample)" in capsys.readouterr().out
    users = read_table(out / "predictions").column("user_id").to_pylist()
    assert len(users) == 100 and users != list(range(1, 101)) and max(users) > 800  # not the first 100 ids
    # validation during training (train.val_max_users=100) records its sample in every validation row
    rows = [json.loads(line) for line in (trained / "train" / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in rows if r["split"] == "valid"]
    assert valid and all((r["users"], r["users_of"], r["sample_seed"]) == (100, 943, 0) for r in valid)
    full = stage("evaluate", trained, f"paths.eval={trained / 'eval_full'}")
    assert full["protocol"]["user_sample"] is None


def test_valid_split_and_history_filter(trained):
    out = trained / "eval_valid"
    report = stage("evaluate", trained, "eval.split=valid", "eval.filter_history=true", f"paths.eval={out}")
    assert report["protocol"]["split"] == "valid" and report["protocol"]["filter_history"] is True
    assert report["metrics"]["users"] == 943


def test_wrong_data_or_sid_table_is_refused(trained, tmp_path):
    from distrec.tokenize.sid_table import SIDTable

    train_dir = tmp_path / "train"
    shutil.copytree(trained / "train", train_dir)
    info = json.loads((train_dir / "model.json").read_text())
    (train_dir / "model.json").write_text(json.dumps({**info, "data_hash": "0123456789abcdef"}))
    with pytest.raises(ConfigError, match="paths.data"):
        stage("evaluate", trained, f"paths.train={train_dir}", f"paths.eval={tmp_path / 'eval'}")
    # a model recorded as trained on a SID table other than the one at paths.sids
    n = info["num_items"]
    SIDTable.from_codes(np.arange(1, n + 1), np.stack([np.arange(n) % 8, np.arange(n) // 8], 1), [8, 256]).save(
        tmp_path / "sids")
    (train_dir / "model.json").write_text(json.dumps({**info, "sid_hash": "fedcba9876543210",
                                                      "sids_dir": str(tmp_path / "sids")}))
    with pytest.raises(ConfigError, match="SID table"):
        stage("evaluate", trained, f"paths.train={train_dir}", f"paths.sids={tmp_path / 'sids'}",
              f"paths.eval={tmp_path / 'eval'}")
    assert not (tmp_path / "eval").exists()  # nothing half-written


def test_history_hits_agree_with_seen_at_1(trained):
    """bench/history_hits.py reads the saved predictions against the evaluator's own histories: its
    share of top-1 history items is the evaluator's seen@1, split by how far back the item is."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from history_hits import history_hits

    out = trained / "eval_hits"
    report = stage("evaluate", trained, "eval.split=valid", f"paths.eval={out}")
    hits = history_hits(out, trained / "data")
    assert hits["split"] == "valid" and hits["users"] == report["metrics"]["users"]
    assert hits["top1_in_history"] == pytest.approx(report["metrics"]["seen@1"], abs=1e-4)
    assert hits["top1_in_history"] > 0  # ml-100k users have long histories: the tiny model hits some
    assert sum(hits["top1_in_history_by_steps_back"].values()) == pytest.approx(hits["top1_in_history"], abs=1e-3)
    assert 0 <= hits["last_item_in_top10"] <= 1
