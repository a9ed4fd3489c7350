"""The run summary and the training curve: a resumed run's summary covers every attempt, and
`curve.png` is redrawn at each validation. Tiny SASRec runs of the real `distrec train` stage
(plain torch, in process) on a generated catalog."""

import pytest

from distrec.config import compose

BATCH = 32


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from distrec.stages.prepare import run

    root = tmp_path_factory.mktemp("summary")
    run(compose(["stage=prepare", "data=synthetic", "data.synthetic.num_items=200", "data.synthetic.num_users=150",
                 f"paths.root={root}", "progress=false"]))
    return root


def train(root, *overrides) -> dict:
    from distrec.stages.train import run

    return run(compose(["stage=train", "data=synthetic", f"paths.root={root}", "method=sasrec", "engine=plain",
                        "model.size=debug", f"train.global_batch_size={BATCH}", "train.eval_every=3",
                        "train.patience=0", "eval.batch_size=64", "progress=false", *overrides]))


def test_the_summary_of_a_resumed_run_covers_every_attempt(root, capsys):
    first = train(root, "train.max_steps=3")
    assert first["attempts"] == 1
    second = train(root, "train.max_steps=6")  # resumes the finished run and trains on
    assert second["steps"] == 6 and second["attempts"] == 2
    assert second["samples_per_s"] * second["train_seconds"] == pytest.approx(6 * BATCH)  # both attempts' steps
    assert second["train_seconds"] > first["train_seconds"]
    assert "in 2 attempts" in capsys.readouterr().out


def test_curve_is_redrawn_at_each_validation(tmp_path):
    from distrec.train.logs import CURVE, MetricsLog

    log = MetricsLog(tmp_path, tensorboard=False, curve_metric="recall@10")
    log.log({"step": 1, "split": "train", "loss": 2.0})
    assert not (tmp_path / CURVE).exists()
    log.log({"step": 2, "split": "valid", "recall@10": 0.1})
    first = (tmp_path / CURVE).read_bytes()
    log.log({"step": 3, "split": "train", "loss": 1.5})
    log.log({"step": 4, "split": "valid", "recall@10": 0.2})
    assert first[:4] == b"\x89PNG" and (tmp_path / CURVE).read_bytes() != first
    log.close()
