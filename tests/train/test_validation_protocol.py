"""Validation during training follows the test's protocol (eval.filter_history), and reports the
unfiltered ranking beside it."""

from train_helpers import rows, train


def test_validation_filters_history_when_the_protocol_does(prepared, tmp_path):
    train(prepared, tmp_path / "filtered", "engine=plain", "eval.filter_history=true")
    train(prepared, tmp_path / "plain", "engine=plain")
    filtered, plain = rows(tmp_path / "filtered", "valid"), rows(tmp_path / "plain", "valid")
    assert len(filtered) == len(plain) == 2
    for f, p in zip(filtered, plain):  # same weights (same seed): the unfiltered numbers agree
        assert f["unfiltered_ndcg@10"] == p["ndcg@10"] and f["unfiltered_recall@10"] == p["recall@10"]
        assert "unfiltered_ndcg@10" not in p
    assert any(f["recall@10"] != p["recall@10"] for f, p in zip(filtered, plain))
