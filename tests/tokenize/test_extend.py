"""`distrec tokenize --extend`: items added after training get SIDs from the frozen codebooks; no earlier
item's code changes, the vocabulary stays, and a trained model recommends the new items."""

import json

import numpy as np
import pyarrow as pa
import pytest

from distrec.artifacts import read_table, write_table
from distrec.cli import stage_flags
from distrec.config import compose
from distrec.tokenize.extend import extended_table, extends, new_item_codes
from distrec.tokenize.quantizers.rq_kmeans import RQKMeans
from distrec.tokenize.sid_table import SIDTable, add_dedup_digit, reassign_last_level


def clustered(n, seed=0, dim=8):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(6, dim))
    return (centres[rng.integers(0, 6, n)] + 0.05 * rng.normal(size=(n, dim))).astype(np.float32)


def parent_table(x, dedup, q):
    codes = q.encode(x)
    if dedup == "digit":
        codes, size = add_dedup_digit(codes)
        return SIDTable.from_codes(np.arange(1, len(x) + 1), codes, q.codebook_sizes + [size], "digit")
    if dedup == "balanced":
        codes, _ = reassign_last_level(codes, lambda rows: q.last_level_distances(x[rows]), q.codebook_sizes[-1])
    return SIDTable.from_codes(np.arange(1, len(x) + 1), codes, q.codebook_sizes, dedup)


@pytest.fixture(scope="module")
def quantizer():
    return RQKMeans(levels=2, codebook_size=8, iters=5, points_per_centroid=32, progress=False).fit(clustered(400))


@pytest.fixture(scope="module")
def spread():
    """Vectors without clusters and a quantizer of 16 x 16 codes: no prefix holds more items than codes."""
    x = np.random.default_rng(3).normal(size=(80, 8)).astype(np.float32)
    return x, RQKMeans(levels=2, codebook_size=16, iters=5, points_per_centroid=16, progress=False).fit(x)


@pytest.mark.parametrize("dedup", ["digit", "balanced", "none"])
def test_earlier_codes_stay_and_new_items_are_placed(quantizer, spread, dedup):
    x, n = clustered(400), 30
    if dedup != "digit":
        (x, quantizer), n = spread, 10
    parent = parent_table(x, dedup, quantizer)
    rng = np.random.default_rng(1)
    new = np.concatenate([x[:n], x[rng.integers(0, len(x), n)] + 0.3 * rng.normal(size=(n, 8)).astype(np.float32)])
    codes, placed = new_item_codes(parent, quantizer, new)  # the first n are exact copies: their tuples are taken
    table = extended_table(parent, codes, {})
    assert np.array_equal(table.codes[:len(x) + 1], parent.codes) and extends(table, parent.content_hash, len(x))
    assert table.codebook_sizes == parent.codebook_sizes and table.vocab_size == parent.vocab_size
    assert placed["collisions"] >= n
    if dedup == "none":  # shared tuples are allowed (no trie): the copies share their original's
        assert np.array_equal(codes[:n], parent.codes[1:n + 1])
        return
    assert table.num_collisions() == 0 and len(table.trie().children) == table.levels
    if dedup == "digit":  # a copy keeps its original's tuple and takes the next de-dup digit
        moved = (codes[:, :-1] != quantizer.encode(new)).any(1)  # only when its tuple's digits were all taken
        assert placed["moved"] == moved.sum()
        assert (codes[:n][~moved[:n], -1] > parent.codes[1:n + 1][~moved[:n], -1]).all()


def test_a_full_dedup_digit_moves_the_item_instead_of_growing_the_vocabulary(quantizer):
    x = clustered(400)
    parent = parent_table(x, "digit", quantizer)
    fullest = np.bincount(np.unique(parent.codes[1:, :-1], axis=0, return_inverse=True)[1].ravel()).argmax()
    rows = np.flatnonzero((parent.codes[1:, :-1] == np.unique(parent.codes[1:, :-1], axis=0)[fullest]).all(1))
    assert len(rows) == parent.codebook_sizes[-1]  # every digit value of this tuple is taken
    codes, placed = new_item_codes(parent, quantizer, x[rows[:3]])
    table = extended_table(parent, codes, {})
    assert placed["moved"] == 3 and table.num_collisions() == 0
    assert (codes[:, -2] != parent.codes[rows[0] + 1, -2]).all()  # another last-level code, same prefix
    assert (codes[:, 0] == parent.codes[rows[0] + 1, 0]).all()
    assert table.vocab_size == parent.vocab_size


def test_an_edited_table_is_not_an_extension(quantizer):
    x = clustered(400)
    parent = parent_table(x, "digit", quantizer)
    codes, _ = new_item_codes(parent, quantizer, clustered(10, seed=2))
    table = extended_table(parent, codes, {})
    table.codes[5, 0] = (table.codes[5, 0] + 1) % 8  # an earlier item's code changed
    assert not extends(SIDTable(table.codes, table.codebook_sizes), parent.content_hash, 400)


def test_the_extend_flag_extends_paths_sids_in_place():
    assert stage_flags("tokenize", ["--extend", "data=beauty"]) == ["tokenizer.extend=${paths.sids}", "data=beauty"]
    assert stage_flags("train", ["--extend"]) == ["--extend"]  # only tokenize has it


def first_items(embed_dir, n, out):
    """A copy of the embed/ artifact holding items 1..n only (what the catalog was before it grew)."""
    import shutil

    shutil.copytree(embed_dir, out)
    table = read_table(embed_dir / "item_embeddings")
    shutil.rmtree(out / "item_embeddings")
    write_table(table.filter(pa.compute.less_equal(table.column("item_id"), n)), out / "item_embeddings", 2)


def stage(name, root, *overrides):
    import importlib

    cfg = compose([f"stage={name}", "data=synthetic", "data.synthetic.num_items=600", "data.synthetic.num_users=400",
                   f"paths.root={root}", "progress=false", "embed=tfidf", "embed.dim=16", "tokenizer.levels=2",
                   "tokenizer.codebook_size=8", "tokenizer.kmeans_iters=5", "tokenizer.points_per_centroid=16",
                   *overrides])
    return importlib.import_module(f"distrec.stages.{name}").run(cfg)


TINY_TIGER = ["method=tiger", "model=t5", "model.size=debug", "model.max_history=8", "engine=plain",
              "train.global_batch_size=32", "train.max_steps=2", "train.warmup_steps=1", "train.eval_every=2",
              "train.patience=0", "train.val_max_users=50"]


@pytest.fixture(scope="module")
def grown(tmp_path_factory):
    """A catalog of 600 items whose SID table (and TIGER model) covered only the first 500: then extended in place."""
    root = tmp_path_factory.mktemp("extend")
    stage("prepare", root)
    stage("embed", root)
    first_items(root / "embed", 500, root / "embed_500")
    stage("tokenize", root, f"paths.embeddings={root / 'embed_500'}")
    before = SIDTable.load(root / "sids")
    return root, before


def test_extend_in_place_keeps_every_earlier_code_and_the_parent(grown, capsys):
    root, before = grown
    stage("tokenize", root, "tokenizer.extend=${paths.sids}")
    assert "100 new items after the 500" in capsys.readouterr().out
    after = SIDTable.load(root / "sids")
    assert after.num_items == 600 and np.array_equal(after.codes[:501], before.codes)  # no earlier SID changed
    assert after.num_collisions() == 0 and after.codebook_sizes == before.codebook_sizes
    kept = root / f"sids.{before.content_hash}"
    assert after.parent == {"content_hash": before.content_hash, "num_items": 500, "path": str(kept)}
    assert SIDTable.load(kept).content_hash == before.content_hash  # the parent version is still there
    report = json.loads((root / "sids" / "quality.json").read_text())
    assert report["new_items"] == 100 and report["earlier_items_same_code"] == 1.0
    manifest = json.loads((root / "sids" / "manifest.json").read_text())
    assert manifest["inputs"]["parent"] == before.content_hash
    # extending again finds no new items, and says so
    from distrec.errors import DataError

    with pytest.raises(DataError, match="no new items"):
        stage("tokenize", root, "tokenizer.extend=${paths.sids}")


@pytest.fixture(scope="module")
def trained_500(grown, tmp_path_factory):
    """TIGER trained on the 500-item table (and 500-item data: the grown catalog's sequences name items the
    table lacks), with the grown catalog's table extended to 600 items in place."""
    root, before = grown
    run = tmp_path_factory.mktemp("trained_500")
    before.save(run / "sids_500")
    stage("prepare", run, "data.synthetic.num_items=500", f"paths.data={run / 'data_500'}")
    stage("train", run, *TINY_TIGER, f"paths.data={run / 'data_500'}", f"paths.sids={run / 'sids_500'}")
    if SIDTable.load(root / "sids").num_items == 500:
        stage("tokenize", root, "tokenizer.extend=${paths.sids}")
    return run


def test_a_trained_model_recommends_the_new_items(grown, trained_500, tmp_path):
    """TIGER trained on the 500-item table loads with the 600-item extension; its trie reaches the new items."""
    import shutil

    import torch

    from distrec.train.export import TrainedModel

    root, _ = grown
    trained = TrainedModel(trained_500 / "train")
    extended = tmp_path / "sids_600"
    shutil.copytree(root / "sids", extended)
    model = trained.load("last", extended)
    assert trained.new_items(trained.sid_table(extended)) == 100
    new_item = 550
    history = torch.tensor([[0] * 6 + [new_item, new_item]])  # a new item in the history is read through its SID
    ids, _ = model.recommend({"input_ids": history, "user_ids": torch.zeros(1, dtype=torch.long)}, 600)
    assert (ids > 500).any()  # the beam reaches items added after training
    assert model.sid.num_items == 600
    # recommend/serve: the Predictor keeps room for them when asked (recommend.new_item_share, serve.new_item_share)
    from distrec.inference.predictor import Predictor

    predictor = Predictor.load(trained_500 / "train", sids_dir=extended, checkpoint="last", new_item_share=0.5)
    asked, recommend = [], predictor.model.recommend
    predictor.model.recommend = lambda b, k, **kw: asked.append((k, kw)) or recommend(b, k, **kw)
    items, _ = predictor.recommend([[3, 4], [new_item]], k=10)
    assert predictor.identity["new_items"] == 100 and ((items > 500).sum(1) >= 5).all()
    assert all(len(set(row)) == len(row) for row in items.tolist())  # an item found by both beams: once
    # a beam over the whole catalog as wide as the list (+ history slack), and one over the new items' sub-trie:
    # no 50 x k beam
    width = 10 + 8  # k + model.max_history (excluded history items)
    assert asked == [(width, {}), (9, {"items_from": 501})]


def test_evaluate_on_the_grown_catalog_reports_the_cold_start_users(grown, trained_500, tmp_path):
    import shutil

    from distrec.data.dataset import load_prepared
    from distrec.errors import ConfigError
    from distrec.train.export import MODEL_JSON, TrainedModel

    root, _ = grown
    data_500 = trained_500 / "data_500"
    report = stage("evaluate", trained_500, *TINY_TIGER, f"paths.data={root / 'data'}", f"paths.sids={root / 'sids'}")
    _, _, targets = load_prepared(root / "data").eval_examples("test")
    cold = report["cold_start"]
    assert report["model"]["decoding"] == "beam"  # what eval.decoding=auto ran for TIGER
    assert cold["users"] == int((targets > 500).sum()) > 0 and cold["new_items"] == 100
    assert set(cold["metrics"]) == set(cold["popularity"]) and "recall@10" in cold["metrics"]
    # eval.new_item_share: at least 2 of every top-20 list are items added after training
    shared = stage("evaluate", trained_500, *TINY_TIGER, f"paths.data={root / 'data'}", f"paths.sids={root / 'sids'}",
                   "eval.new_item_share=0.1", "eval.ks=[20]")
    assert shared["protocol"]["new_item_share"] == 0.1
    lists = read_table(trained_500 / "eval" / "predictions").column("items").to_pylist()
    assert all(sum(i > 500 for i in items) >= 2 for items in lists)
    # the data it was trained on is no longer the catalog of the grown table
    with pytest.raises(ConfigError, match="has 500"):
        stage("evaluate", trained_500, *TINY_TIGER, f"paths.data={data_500}", f"paths.sids={root / 'sids'}")
    # a method with a parameter per item cannot take items it never saw
    intrr = tmp_path / "intrr_train"
    shutil.copytree(trained_500 / "train", intrr)
    info = json.loads((intrr / MODEL_JSON).read_text())
    info["method"]["name"] = "intrr"
    (intrr / MODEL_JSON).write_text(json.dumps(info))
    with pytest.raises(ConfigError, match="retrain it"):
        TrainedModel(intrr).load("last", root / "sids")


def write_catalog(folder, items: int, users: int, seed: int = 0):
    """A normalized dataset of `items` titled items ("i0".."i{items-1}") and `users` random sequences."""
    rng = np.random.default_rng(seed)
    words = [f"w{k}" for k in range(60)]
    folder.mkdir(parents=True)
    with open(folder / "items.jsonl", "w") as f:
        for i in range(items):
            title = " ".join(np.random.default_rng(i).choice(words, 4))  # an item's text never changes
            f.write(json.dumps({"item_id": f"i{i}", "title": title}) + "\n")
    with open(folder / "sequences.jsonl", "w") as f:
        for u in range(users):
            f.write(json.dumps({"user_id": u, "items": [f"i{k}" for k in rng.integers(0, items, 6)]}) + "\n")
    return ["data.format=normalized", f"data.path={folder}", "data.name=grown"]


def test_a_catalog_prepared_again_with_new_items_extends_its_earlier_table(tmp_path):
    """The user's path: prepare, embed, tokenize; later the catalog has grown: prepare it again keeping the
    earlier ids (data.item_ids_from), embed (fitted on the earlier items: their vectors do not move) and
    tokenize --extend: every earlier item re-encodes to its code, the new ones get codes."""
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    stage("prepare", v1, *write_catalog(tmp_path / "raw1", 300, 200))
    stage("embed", v1, "data.name=grown", "embed.min_df=1")
    stage("tokenize", v1, "data.name=grown")
    raw2 = write_catalog(tmp_path / "raw2", 340, 220, seed=1)  # i300..i339 are new (and i10 sorts before i2)
    stage("prepare", v2, *raw2, f"data.item_ids_from={v1 / 'data'}")
    stage("embed", v2, "data.name=grown", "embed.min_df=1")
    before, after = read_table(v1 / "embed" / "item_embeddings"), read_table(v2 / "embed" / "item_embeddings")
    n = before.num_rows  # the items someone interacted with in v1; the others of i0..i299 are new in v2 too
    assert after.num_rows == 340 and json.loads((v2 / "embed" / "manifest.json").read_text())["counts"]["fit_items"] == n
    np.testing.assert_allclose(np.stack(after.column("vector").to_numpy(zero_copy_only=False)[:n]),
                               np.stack(before.column("vector").to_numpy(zero_copy_only=False)), atol=1e-6)
    stage("tokenize", v2, "data.name=grown", f"tokenizer.extend={v1 / 'sids'}", f"paths.sids={v2 / 'sids'}")
    report = json.loads((v2 / "sids" / "quality.json").read_text())
    assert report["new_items"] == 340 - n and report["earlier_items_same_code"] == 1.0
    assert np.array_equal(SIDTable.load(v2 / "sids").codes[:n + 1], SIDTable.load(v1 / "sids").codes)
