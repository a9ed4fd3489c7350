"""`distrec recommend` for real: tiny SASRec (item ids) and RPG (semantic IDs) models trained by the real
train stage on a generated catalog; real parquet in and out, a real local Ray cluster. Each user's list
is `Predictor.recommend` on that user's history; the Ray Data path writes the same rows as the
in-process one; bad input stops with a DataError naming the file and the user."""

import importlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distrec.artifacts import read_table
from distrec.config import compose
from distrec.errors import ConfigError, DataError
from distrec.inference.predictor import Predictor

ITEMS, USERS, K = 300, 200, 10
TRAIN = ["model.size=debug", "model.max_history=30", "engine=plain", "engine.precision=fp32", "train.max_steps=4",
         "train.global_batch_size=32", "train.warmup_steps=1", "train.eval_every=2", "train.patience=0",
         "train.val_max_users=24", "progress=false"]
METHODS = {"sasrec": ["method=sasrec"], "rpg": ["method=rpg", "method.beam_width=10"]}


@pytest.fixture(scope="module")
def root(synthetic_sid_catalog):
    root = synthetic_sid_catalog("recommend", ITEMS, USERS)
    for method, overrides in METHODS.items():
        stage("train", root, method, *TRAIN, *overrides)
    return root


def stage(name, root, method, *overrides):
    cfg = compose([f"stage={name}", "data=synthetic", f"paths.root={root}", f"paths.train={root / method}",
                   f"paths.sids={root / 'sids_long'}", f"paths.recommendations={root / 'out' / method}",
                   f"recommend.k={K}", "progress=false", *overrides])
    return importlib.import_module(f"distrec.stages.{name}").run(cfg)


def recommend(root, method, name, *overrides) -> tuple[dict, dict]:
    """Run the stage into out/<name>; (its rows as columns, its manifest)."""
    out = root / "out" / name
    stage("recommend", root, method, f"paths.recommendations={out}", *overrides)
    return read_table(out / "recommendations").to_pydict(), json.loads((out / "manifest.json").read_text())


def predictor(root, method) -> Predictor:
    return Predictor.load(root / method, sids_dir=root / "sids_long", data_dir=root / "data", max_k=K)


def sequences(root) -> dict:
    return read_table(root / "data" / "sequences", columns=["user_id", "raw_user_id", "items"]).to_pydict()


def write_histories(path, **columns):
    pq.write_table(pa.table(columns), path)
    return path


@pytest.mark.parametrize("method", list(METHODS))
def test_every_user_gets_the_predictors_top_k_after_their_whole_history(root, method):
    rows, manifest = recommend(root, method, f"{method}_all")
    seq, p = sequences(root), predictor(root, method)
    assert rows["user_id"] == seq["user_id"] and rows["raw_user_id"] == seq["raw_user_id"]  # every user, in order
    ids, scores = p.recommend(seq["items"], K, seq["user_id"])
    assert rows["items"] == ids.tolist()
    np.testing.assert_allclose(np.array(rows["scores"]), scores, rtol=1e-5, atol=1e-6)
    for history, items, raw in zip(seq["items"], rows["items"], rows["raw_items"]):
        assert len(items) == K and not set(items) & set(history)  # the history is left out
        assert raw == p.raw(np.array(items)).tolist()
    assert all(np.all(np.diff(s) <= 0) for s in rows["scores"])  # best first
    model = manifest["model"]
    assert model["method"] == method and model["model_hash"] == p.identity["model_hash"]
    assert model["decoding"] == p.identity["decoding"] and model["sid_hash"] == p.identity["sid_hash"]
    assert model["decoding"] == {"sasrec": "full_catalog", "rpg": "holistic"}[method]  # what "auto" ran
    assert (model["sid_hash"] is None) == (method == "sasrec")
    assert manifest["counts"] == {"users": USERS, "empty_history": 0, "short_lists": 0, "k": K}
    assert manifest["users_per_s"] > 0 and manifest["timings_s"]["recommend"] > 0


def test_an_input_file_in_raw_ids_with_max_users_and_an_empty_history(root, tmp_path, caplog):
    seq, p = sequences(root), predictor(root, "sasrec")
    histories = [seq["items"][0], [], seq["items"][2][:3], seq["items"][3]]
    path = write_histories(tmp_path / "in.parquet", user_id=pa.array([7, 8, 9, 10], pa.int64()),
                           raw_user_id=["u7", "u8", "u9", "u10"],
                           items=[p.raw(np.array(h, np.int64)).tolist() for h in histories])
    rows, manifest = recommend(root, "sasrec", "raw", f"recommend.input={path}", "recommend.raw_ids=true",
                               "recommend.max_users=3", "recommend.batch_size=2")
    assert rows["user_id"] == [7, 8, 9] and rows["raw_user_id"] == ["u7", "u8", "u9"]
    ids, _ = p.recommend([histories[0], histories[2]], K, [7, 9])
    assert rows["items"] == [ids[0].tolist(), [], ids[1].tolist()]  # the empty history: written, with no items
    assert rows["raw_items"][2] == p.raw(ids[1]).tolist() and rows["scores"][1] == []
    assert manifest["counts"]["empty_history"] == 1 and manifest["empty_history_users"] == [8]
    assert "1 of 3 users have an empty history" in caplog.text


def test_max_users_zero_writes_an_empty_table(root):
    rows, manifest = recommend(root, "sasrec", "none", "recommend.max_users=0")
    assert rows["user_id"] == [] and manifest["counts"]["users"] == 0


def test_bad_input_stops_with_the_file_and_the_user(root, tmp_path):
    def run(path, *overrides):
        recommend(root, "sasrec", "bad", f"recommend.input={path}", *overrides)

    missing = write_histories(tmp_path / "missing.parquet", user_id=[1], history=[[1, 2]])
    with pytest.raises(DataError, match=r"missing.parquet: missing column\(s\) \['items'\]"):
        run(missing)
    unknown = write_histories(tmp_path / "unknown.parquet", user_id=[1, 2], items=[[1, 2], [3, ITEMS + 5]])
    with pytest.raises(DataError, match=rf"unknown.parquet: user 2: item id\(s\) \[{ITEMS + 5}\] outside the catalog"):
        run(unknown)
    raw = write_histories(tmp_path / "raw.parquet", user_id=[1, 2], items=[["nope"], []])
    with pytest.raises(DataError, match=r"raw.parquet: user 1: 1 unknown raw item id\(s\): \['nope'\]"):
        run(raw, "recommend.raw_ids=true")
    with pytest.raises(DataError, match="items is a list of string, not a list of integers"):
        run(raw)
    named = write_histories(tmp_path / "named.parquet", user_id=["a"], items=[[1]])
    with pytest.raises(DataError, match="user_id is string, not integers"):
        run(named)
    with pytest.raises(DataError, match="no parquet file of histories"):
        run(tmp_path / "nothing")
    with pytest.raises(ConfigError, match="recommend.k"):
        recommend(root, "sasrec", "bad", f"recommend.k={ITEMS + 1}")
    assert not (root / "out" / "bad").exists()  # nothing half-written


@pytest.mark.ray
@pytest.mark.parametrize("method", ["sasrec", pytest.param("rpg", marks=pytest.mark.slow)])
def test_two_ray_workers_write_what_this_process_writes(root, method, tmp_path, ray_local):
    seq = read_table(root / "data" / "sequences", columns=["user_id", "raw_user_id", "items"])
    for i in range(3):  # three files: Ray Data hands each actor its own blocks
        pq.write_table(seq.slice(i * 70, 70), tmp_path / f"part-{i}.parquet")
    common = [f"recommend.input={tmp_path}", "recommend.max_users=150", "recommend.batch_size=32"]
    here, _ = recommend(root, method, f"{method}_here", *common)
    on_ray, manifest = recommend(root, method, f"{method}_ray", *common, "recommend.num_workers=2")
    order = np.argsort(on_ray["user_id"])  # Ray keeps the input's order, but its files may come in another
    on_ray = {k: [v[i] for i in order] for k, v in on_ray.items()}
    scores = on_ray.pop("scores"), here.pop("scores")  # batches cut elsewhere: float sums in another order
    assert on_ray == here
    np.testing.assert_allclose(np.array(scores[0]), np.array(scores[1]), rtol=1e-5, atol=1e-6)
    assert here["user_id"] == seq.column("user_id").to_pylist()[:150]
    assert manifest["counts"]["users"] == 150 and manifest["num_workers"] == 2
    assert manifest["timings_s"]["ray_start"] < manifest["timings_s"]["recommend"]


@pytest.mark.ray
def test_an_unknown_item_in_a_ray_worker_is_the_same_error(root, tmp_path, ray_local):
    path = write_histories(tmp_path / "unknown.parquet", user_id=[1, 2], items=[[1, 2], [0, 3]])
    with pytest.raises(DataError, match=r"unknown.parquet: user 2: item id\(s\) \[0\] outside the catalog") as error:
        recommend(root, "sasrec", "bad_ray", f"recommend.input={path}", "recommend.num_workers=2")
    assert type(error.value) is DataError and str(error.value).endswith("(or drop the user)")  # not Ray's wrapper
