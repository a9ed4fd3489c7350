"""Validation during training follows the test's protocol (eval.filter_history), and reports the
unfiltered ranking beside it."""

import pytest
from train_helpers import rows, train

from distrec.config import compose
from distrec.errors import ConfigError


def test_validation_filters_history_when_the_protocol_does(prepared, tmp_path):
    train(prepared, tmp_path / "filtered", "engine=plain", "eval.filter_history=true")
    train(prepared, tmp_path / "plain", "engine=plain")
    filtered, plain = rows(tmp_path / "filtered", "valid"), rows(tmp_path / "plain", "valid")
    assert len(filtered) == len(plain) == 2
    for f, p in zip(filtered, plain):  # same weights (same seed): the unfiltered numbers agree
        assert f["unfiltered_ndcg@10"] == p["ndcg@10"] and f["unfiltered_recall@10"] == p["recall@10"]
        assert "unfiltered_ndcg@10" not in p
    # filtering moves targets up: NDCG sees it (Recall@10 of the sampled 200 users can stay the same)
    assert all(f["ndcg@10"] >= p["ndcg@10"] for f, p in zip(filtered, plain))
    assert any(f["ndcg@10"] > p["ndcg@10"] for f, p in zip(filtered, plain))


def test_include_valid_trains_on_the_validation_item_and_never_validates(prepared, tmp_path):
    summary = train(prepared, tmp_path / "meta", "engine=plain", "train.include_valid=true", "train.max_steps=2")
    base = train(prepared, tmp_path / "base", "engine=plain", "train.max_steps=2")
    assert rows(tmp_path / "meta", "valid") == [] and summary["best_step"] is None
    assert summary["train_samples"] > base["train_samples"]  # one more labelled item per user
    from distrec.stages.evaluate import run

    cfg = compose(["stage=evaluate", "data=ml100k", f"paths.root={prepared}", f"paths.train={tmp_path / 'meta'}",
                   f"paths.eval={tmp_path / 'eval'}", "eval.split=valid", "progress=false"])
    with pytest.raises(ConfigError, match="trained on the validation items"):
        run(cfg)
    report = run(compose(["stage=evaluate", "data=ml100k", f"paths.root={prepared}", f"paths.train={tmp_path / 'meta'}",
                          f"paths.eval={tmp_path / 'eval'}", "eval.max_users=50", "progress=false"]))
    assert report["protocol"]["checkpoint_selection"].startswith("last step (train.include_valid")
    assert report["model"]["decoding"] == "full_catalog"
