"""Best checkpoint and early stopping on a chosen validation metric, the optimizer choice, and the
code-usage diagnostic in the validation rows. Tiny IntRR runs of the real `distrec train` stage
(plain torch, in process) on a generated catalog with a random RQ-like SID table."""

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from distrec.config import compose
from distrec.errors import ConfigError
from distrec.tokenize.sid_table import SIDTable, add_dedup_digit
from train_helpers import rows

ITEMS, USERS = 200, 150


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from distrec.stages.prepare import run

    root = tmp_path_factory.mktemp("selection")
    run(compose(["stage=prepare", "data=synthetic", f"data.synthetic.num_items={ITEMS}",
                 f"data.synthetic.num_users={USERS}", f"paths.root={root}", "progress=false"]))
    codes, extra = add_dedup_digit(np.random.default_rng(0).integers(0, 8, (ITEMS, 2)))
    SIDTable.from_codes(np.arange(1, ITEMS + 1), codes, [8, 8, extra]).save(root / "sids")
    return root


def train(root, name, *overrides) -> dict:
    from distrec.stages.train import run

    return run(compose(["stage=train", "data=synthetic", f"paths.root={root}", f"paths.train={root / name}",
                        "method=intrr", "engine=plain", "model.size=debug", "model.max_history=10",
                        "method.intrr.uid_dim=16", "method.intrr.hidden=16", "method.beam_width=10",
                        "train.global_batch_size=16", "train.max_steps=8", "train.eval_every=2",
                        "train.patience=0", "train.val_max_users=40", "eval.batch_size=40", "progress=false",
                        *overrides]))


def test_best_checkpoint_on_recall_and_code_usage_logged_with_validation(root):
    summary = train(root, "recall", "train.select_metric=recall@10", "train.optimizer=adam")
    valid = rows(root / "recall", "valid")
    assert len(valid) == 4
    best = max(valid, key=lambda r: r["recall@10"])  # the first of equal values, as the loop keeps it
    assert summary["select_metric"] == "recall@10"
    assert (summary["best_step"], summary["best_val_recall@10"]) == (best["step"], best["recall@10"])
    model_json = json.loads((root / "recall" / "model.json").read_text())
    assert model_json["select_metric"] == "recall@10" and model_json["best_val_recall@10"] == best["recall@10"]
    for r in valid:  # IntRR's code usage, in the same rows as the validation metrics
        assert r["items"] == ITEMS
        assert 1 <= r["codes_l1"] == r["paths_l1"] <= r["paths_l2"] <= r["paths_l3"] <= ITEMS
    assert "paths_l1" not in rows(root / "recall", "train")[0]


@pytest.mark.parametrize("override, key", [("train.select_metric=hit@10", "train.select_metric"),
                                           ("train.select_metric=ndcg@50", "train.select_metric"),
                                           ("train.optimizer=sgd", "train.optimizer")])
def test_unknown_metric_or_optimizer_is_refused_before_training(root, override, key):
    with pytest.raises(ConfigError, match=key):
        train(root, "refused", override)
    assert not (root / "refused" / "checkpoints").exists()


class ZeroLoss(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(2, 2, dtype=torch.float64))  # float64: 1 - 1e-7 is exact enough

    def forward(self, batch):
        return {"loss": (self.weight * 0).sum()}


@pytest.mark.parametrize("optimizer, change", [("adam", 1e-3), ("adamw", 1e-7)])
def test_adam_adds_weight_decay_to_the_gradient_adamw_decays_apart(optimizer, change):
    from distrec.train.engine import make_engine, plan_batches

    cfg = compose(["engine=plain", f"train.optimizer={optimizer}", "train.lr=1e-3", "train.weight_decay=1e-4",
                   "train.warmup_steps=0", "train.schedule=constant"])
    engine = make_engine(ZeroLoss(), cfg.train, cfg.engine, plan_batches(1, 1), 1, torch.device("cpu"))
    engine.step([({}, 1.0)])
    # Adam normalises the L2 gradient 1e-4 * w to a step of ~lr; AdamW shrinks w by lr * wd
    assert 1 - engine.model.weight.detach() == pytest.approx(torch.full((2, 2), change, dtype=torch.float64), rel=1e-2)


def test_an_unknown_optimizer_is_refused_when_the_config_is_composed():
    """The choice is typed (train.config.Optimizer): nothing runs with it, not even an engine built directly."""
    from distrec.train.engine import make_engine, plan_batches

    with pytest.raises(ConfigError, match=r"train.optimizer: Invalid value 'sgd', expected one of \[adamw, adam\]"):
        compose(["engine=plain", "train.optimizer=sgd"])
    cfg = compose(["engine=plain"])
    untyped = OmegaConf.create({**OmegaConf.to_container(cfg.train), "optimizer": "sgd"})  # past the schema
    with pytest.raises(ValueError, match="'sgd' is not a valid Optimizer"):
        make_engine(ZeroLoss(), untyped, cfg.engine, plan_batches(1, 1), 1, torch.device("cpu"))
