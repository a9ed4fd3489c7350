"""The fast path (`engine=gpu`, engine.kind=fast) on the CPU at tiny scale: for every method the same
losses as the plain engine on the same seed (fp32, dropout on, 1e-5 relative), the same validation,
and the normal `distrec train` / `distrec evaluate` stages end to end. A generated catalog with
random SID tables, as the distributed method tests use: these check the engine, not what models learn.
"""

import numpy as np
import pytest

from distrec.config import compose
from distrec.errors import ConfigError
from distrec.train.checkpoint import latest_checkpoint, read_state
from train_helpers import losses, rows

ITEMS, USERS = 300, 200
FAST = ["engine=gpu", "engine.use_gpu=false"]
# method -> (SID table, overrides)
METHODS = {
    "sasrec": (None, ["method=sasrec"]),
    "hstu_retrieval": (None, ["method=hstu_retrieval", "model=hstu"]),
    "tiger": ("sids_rq", ["method=tiger", "model=t5", "method.beam_width=10"]),
    "flat_decoder": ("sids_rq", ["method=flat_decoder", "method.beam_width=10"]),
    "rpg": ("sids_long", ["method=rpg"]),
    "acerec": ("sids_long", ["method=acerec", "method.acerec.k=2"]),
    "intrr": ("sids_rq", ["method=intrr", "method.intrr.uid_dim=32", "method.intrr.hidden=32",
                          "method.beam_width=10"]),
}


@pytest.fixture(scope="module")
def root(synthetic_sid_catalog):
    return synthetic_sid_catalog("fast", ITEMS, USERS)


def config(root, method: str, name: str, *overrides, stage: str = "train"):
    sids, extra = METHODS[method]
    return compose([f"stage={stage}", "data=synthetic", f"paths.root={root}", f"paths.train={root / name}",
                    f"paths.eval={root / name}_eval", *([f"paths.sids={root / sids}"] if sids else []),
                    "model.size=debug", "model.max_history=10", "engine.precision=fp32", "train.max_steps=4",
                    "train.global_batch_size=16", "train.micro_batch_size=8", "train.warmup_steps=1",
                    "train.log_every=1", "train.eval_every=2", "train.patience=0", "train.val_max_users=24",
                    "eval.batch_size=16", "eval.max_users=24", "progress=false", *extra, *overrides])


def train(root, method, name, *overrides):
    from distrec.stages.train import run

    return run(config(root, method, name, *overrides))


@pytest.mark.parametrize("method", list(METHODS))
def test_fast_path_gives_the_plain_engines_losses(root, method):
    plain = train(root, method, f"{method}_plain", "engine=plain")
    fast = train(root, method, f"{method}_fast", *FAST)
    a, b = losses(root / f"{method}_plain"), losses(root / f"{method}_fast")
    assert len(a) == len(b) == 4 and np.isfinite(a).all()
    assert b == pytest.approx(a, rel=1e-5, abs=1e-6)
    va, vb = rows(root / f"{method}_plain", "valid"), rows(root / f"{method}_fast", "valid")
    assert [r["ndcg@10"] for r in vb] == pytest.approx([r["ndcg@10"] for r in va], abs=1e-6)
    assert fast["best_step"] == plain["best_step"] and vb[-1]["users"] == 24
    assert read_state(latest_checkpoint(root / f"{method}_fast" / "checkpoints"))["engine_kind"] == "fast"


def test_fast_path_trains_and_evaluates_through_the_stages(root):
    from distrec.stages.evaluate import run as evaluate

    summary = train(root, "sasrec", "stages_fast", *FAST)
    assert summary["steps"] == 4 and (root / "stages_fast" / "weights" / "best.safetensors").exists()
    report = evaluate(config(root, "sasrec", "stages_fast", *FAST, stage="evaluate"))
    assert report["metrics"]["users"] == 24 and 0 <= report["metrics"]["ndcg@10"] <= 1


def test_a_time_limit_stops_after_a_validation_and_a_rerun_trains_on(root):
    summary = train(root, "sasrec", "timed", *FAST, "train.time_limit_s=0")
    assert summary["steps"] == 1 and summary["stopped_by"] == "time_limit_s" and summary["best_step"] == 1
    assert [r["step"] for r in rows(root / "timed", "valid")] == [1]  # validated where it stopped
    summary = train(root, "sasrec", "timed", *FAST)  # no limit: the same run goes on to its last step
    assert summary["steps"] == 4 and summary["stopped_by"] is None


@pytest.mark.parametrize("overrides,message", [
    (["engine.num_workers=2"], "runs in one process"),
    (["engine.zero_stage=2"], "zero_stage=0"),
    (["engine=plain", "engine.compile=true"], "needs engine.kind=fast"),
])
def test_fast_path_refusals(root, overrides, message):
    with pytest.raises(ConfigError, match=message):
        train(root, "sasrec", "refused", *FAST, *overrides)


def test_use_gpu_without_a_gpu_is_refused(root):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="no usable CUDA GPU"):
        train(root, "sasrec", "no_gpu", "engine=gpu")
