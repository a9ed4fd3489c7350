"""The CPU driver for Meta's HSTU research code (bench/parity/hstu_meta.py) runs a few steps, and
the training/eval rows Meta's DatasetV2 builds from the driver's CSV are distrec's own (same
training prefix, same validation target, same history window).

Slow: needs a local extract of meta-recsys/generative-recommenders (runs/peer/generative-recommenders
or $DISTREC_META_SRC), gin-config, and our fbgemm stand-ins (/work/shared/reference/peer).
Uses the prepared ML-1M split at runs/hstu_ml1m/data ($DISTREC_PARITY_DATA) when present (first 256
users), else a small synthetic split.
"""

import importlib.util
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[2]
META_SRC = Path(os.environ.get("DISTREC_META_SRC", REPO / "runs" / "peer" / "generative-recommenders"))
PEER = Path("/work/shared/reference/peer")
ML1M = Path(os.environ.get("DISTREC_PARITY_DATA", REPO / "runs" / "hstu_ml1m" / "data"))

pytestmark = pytest.mark.slow


def _driver():
    spec = importlib.util.spec_from_file_location("hstu_meta_driver", REPO / "bench" / "parity" / "hstu_meta.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def meta_ready():
    if not (META_SRC / "generative_recommenders" / "research").is_dir():
        pytest.skip(f"Meta's research code is not extracted at {META_SRC} (git -C "
                    "/work/.mirror/meta-recsys+generative-recommenders/repo archive HEAD | tar -x -C that dir, "
                    "or set DISTREC_META_SRC)")
    if not (PEER / "hstu_peer_bench.py").exists():
        pytest.skip(f"fbgemm stand-ins not found at {PEER}/hstu_peer_bench.py")
    pytest.importorskip("gin", reason="gin-config (Meta's config library) is not installed: pip install gin-config")
    pytest.importorskip("pandas")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    if (ML1M / "sequences").exists():
        return ML1M
    rng = np.random.default_rng(0)
    users, items, vpos, tpos = [], [], [], []
    for u in range(1, 257):
        # at most 202 items, as `data.max_history=202` leaves them: the training prefix then fits one
        # 200-position window in both codes (longer prefixes: Meta trains on the newest window only,
        # distrec on the oldest window plus one single-label window per later position)
        n = int(rng.integers(8, 203))
        # a catalog of 3,000: Meta's eval takes the top min(2500, catalog) after dropping up to 211
        # history ids from the top 2500 + 211, so smaller catalogs fail in its candidate_index
        seq = rng.choice(np.arange(1, 3001), size=n, replace=False).tolist() + ([3000] if u == 1 else [])
        seq = list(dict.fromkeys(seq))
        users.append(u), items.append(seq), vpos.append(len(seq) - 2), tpos.append(len(seq) - 1)
    table = pa.table({"user_id": pa.array(users, pa.int64()), "items": pa.array(items, pa.list_(pa.int64())),
                      "valid_pos": pa.array(vpos, pa.int32()), "test_pos": pa.array(tpos, pa.int32())})
    out = tmp_path_factory.mktemp("seq_data")
    (out / "sequences").mkdir()
    pq.write_table(table, out / "sequences" / "part-00000.parquet")
    return out


def test_meta_rows_match_distrec_split(meta_ready, data_dir, tmp_path):
    """Meta's DatasetV2 over the driver's CSV: training row = distrec's training window (inputs and
    next-item targets), eval row = distrec's validation history and target."""
    import torch

    from distrec.data.batches import SequenceData, build_train_index, collate_eval, collate_train, eval_rows

    drv = _driver()
    csv = tmp_path / "sasrec_format.csv"
    drv.write_meta_csv(data_dir, csv, seed=0, max_users=64)
    drv.load_meta(META_SRC, PEER)
    from generative_recommenders.research.data.dataset import DatasetV2

    train = DatasetV2(ratings_file=str(csv), padding_length=201, ignore_last_n=1, chronological=True)
    evals = DatasetV2(ratings_file=str(csv), padding_length=201, ignore_last_n=0, chronological=True)

    data = SequenceData.from_arrow(pq.read_table(data_dir / "sequences"))
    row_of = {int(u): i for i, u in enumerate(data.user_ids)}
    index = build_train_index(data, 200)
    assert index.label_all.all(), "a training prefix is longer than one window (data.max_history > 202?)"
    sample_of = {int(r): s for s, r in enumerate(index.user_row) if index.label_all[s]}
    valid_rows, valid_pos = eval_rows(data, "valid")
    vpos_of = dict(zip(valid_rows.tolist(), valid_pos.tolist()))
    for i in range(len(train)):
        t, e = train[i], evals[i]
        assert t["user_id"] == e["user_id"]
        r = row_of[int(t["user_id"])]
        # Meta trains on history + target (the target is scattered after the history in train_fn)
        n = int(t["history_lengths"])
        meta_seq = t["historical_ids"][:n].tolist() + [int(t["target_ids"])]
        b = collate_train(data, index, np.array([sample_of[r]]), 200)
        inp, tgt = b["input_ids"][0], b["target_ids"][0]
        ours = inp[inp > 0].tolist() + [int(tgt[-1])]
        assert meta_seq == ours
        assert tgt[tgt > 0].tolist() == ours[1:]  # every position labelled with its next item, as Meta's loss
        # Meta's eval: history (newest 200) -> last item = distrec's validation history -> validation item
        m = int(e["history_lengths"])
        ev = collate_eval(data, np.array([r]), np.array([vpos_of[r]]), 200)
        hist = ev["input_ids"][0]
        assert e["historical_ids"][:m].tolist() == hist[hist > 0].tolist()
        assert int(e["target_ids"]) == int(ev["target"][0])
        assert torch.all(e["historical_ids"][m:] == 0)


def test_meta_driver_runs_a_few_steps(meta_ready, data_dir, tmp_path):
    out = tmp_path / "curve.json"
    res = _driver().main(["--data", str(data_dir), "--steps", "4", "--eval-every", "2", "--seed", "0",
                          "--threads", "1", "--max-users", "256", "--out", str(out), "--work", str(tmp_path / "w"),
                          "--meta-src", str(META_SRC), "--peer", str(PEER)])
    saved = json.loads(out.read_text())
    assert saved["curve"] == res["curve"]
    assert [r["step"] for r in saved["curve"]] == [2, 4]
    assert saved["config"]["item_embedding_dim"] == 50 and saved["config"]["num_negatives"] == 128
    assert saved["config"]["hstu_encoder.num_blocks"] == 2 and saved["config"]["temperature"] == 0.05
    for row in saved["curve"]:
        assert row["users"] == 256
        for k in ("hr@10", "ndcg@10", "hr@50", "mrr"):
            assert 0.0 <= row[k] <= 1.0
        assert row["ndcg@10"] <= row["hr@10"] <= row["hr@50"]
        assert math.isfinite(row["train_loss"]) and row["train_loss"] > 0
    # the loss falls over the first steps (it starts near 8: cosines of random vectors / 0.05)
    assert saved["curve"][-1]["train_loss_mean"] < saved["curve"][0]["train_loss_mean"]
