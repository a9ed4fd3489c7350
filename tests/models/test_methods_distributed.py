"""ACERec and IntRR through the real `distrec train` stage with DeepSpeed under Ray Train (2 gloo
workers): ACERec under ZeRO-2 (Transformer) and ZeRO-3 (HSTU), IntRR under ZeRO-2 (HSTU) and ZeRO-3
(Transformer). Debug-size models on a small generated catalog with random SID tables, one step each:
these check that the models run distributed (gradients, partitioned parameters, validation on both
ranks), not what they learn. Only the ACERec ZeRO-2 run is in the default test run (each run took
3.5-5 minutes on the saturated shared machine); the other three are `slow`."""

import json

import numpy as np
import pytest

from distrec.config import compose

pytestmark = [pytest.mark.ray, pytest.mark.distributed]

ITEMS, USERS = 300, 200


@pytest.fixture(scope="module")
def root(synthetic_sid_catalog):
    return synthetic_sid_catalog("methods_dist", ITEMS, USERS)


def train_one_step(root, sids: str, name: str, *overrides) -> dict:
    from distrec.stages.train import run

    cfg = compose(["stage=train", "data=synthetic", f"paths.root={root}", f"paths.sids={root / sids}",
                   f"paths.train={root / name}", "engine.num_workers=2", "model.size=debug",
                   "model.max_history=10", "train.max_steps=1", "train.global_batch_size=8",
                   "train.warmup_steps=0", "train.val_max_users=16", "eval.batch_size=16",
                   "progress=false", *overrides])
    return run(cfg)


def check(summary: dict) -> None:
    assert summary["steps"] == 1 and summary["world_size"] == 2
    assert np.isfinite(summary["final_loss"])
    assert summary["valid"]["users"] == 16  # validation ran on both ranks and was reduced


def test_acerec_zero2_transformer(root, ray_local):
    check(train_one_step(root, "sids_long", "acerec_z2", "engine=zero2", "method=acerec", "model=transformer",
                         "method.acerec.k=2", "method.acerec.isa_weight=0.1", "method.acerec.recon_weight=0.03"))
    # the loss's parts are logged, reduced over both ranks as the loss is
    row = [r for r in map(json.loads, (root / "acerec_z2" / "metrics.jsonl").read_text().splitlines())
           if r["split"] == "train"][-1]
    assert row["loss"] == pytest.approx(row["mtp"] + 0.1 * row["isa"] + 0.03 * row["recon"], rel=1e-5)


@pytest.mark.slow
def test_intrr_zero2_hstu(root, ray_local):
    check(train_one_step(root, "sids_rq", "intrr_z2_hstu", "engine=zero2", "method=intrr", "model=hstu",
                         "method.intrr.uid_dim=32", "method.intrr.hidden=32", "method.beam_width=10"))


@pytest.mark.slow
def test_acerec_zero3_hstu(root, ray_local):
    summary = train_one_step(root, "sids_long", "acerec_z3_hstu", "engine=zero3", "method=acerec", "model=hstu",
                             "method.acerec.k=2")
    check(summary)
    full = sum(w["param_bytes"] for w in summary["memory_bytes_per_worker"])
    assert all(w["param_bytes"] <= 0.6 * full for w in summary["memory_bytes_per_worker"])  # partitioned


@pytest.mark.slow
def test_intrr_zero3_transformer(root, ray_local):
    summary = train_one_step(root, "sids_rq", "intrr_z3", "engine=zero3", "method=intrr", "model=transformer",
                             "method.intrr.uid_dim=32", "method.intrr.hidden=32", "method.beam_width=10")
    check(summary)
    full = sum(w["param_bytes"] for w in summary["memory_bytes_per_worker"])
    assert all(w["param_bytes"] <= 0.6 * full for w in summary["memory_bytes_per_worker"])
