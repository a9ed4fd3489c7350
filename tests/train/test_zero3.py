"""ZeRO-3 for real (issue 19): models built partitioned, no rank ever holding the whole model while it
trains and validates, and the same weights as a plain build. Two processes, gloo, real DeepSpeed."""

import json
import socket

import pytest
import torch.multiprocessing as mp

import zero3_workers

pytestmark = pytest.mark.distributed


def spawn(fn, *args, world: int = 2) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(fn, args=(world, port, *args), nprocs=world, join=True)


def test_every_method_is_built_partitioned_with_the_weights_of_a_plain_build(synthetic_sid_catalog, tmp_path):
    """Under zero.Init each module's parameters are partitioned when it is built; initialisation done
    by a parent (Meta's HSTU init, RPG's GPT-2 init, IntRR's UID table, ...) goes through
    Module.apply, which DeepSpeed gathers for: a direct nn.init call would have filled an empty tensor."""
    root = synthetic_sid_catalog("zero3_construct", 200, 40)
    spawn(zero3_workers.construct, str(root), str(tmp_path))
    ranks = [json.loads((tmp_path / f"construct-{r}.json").read_text()) for r in range(2)]
    assert sorted(ranks[0]) == sorted(zero3_workers.MODELS)
    for name, row in ranks[0].items():
        assert row["partitioned"] and ranks[1][name]["partitioned"], name
        assert row["keys_equal"] and row["unequal"] == [], (name, row)


def test_no_rank_holds_the_whole_model_in_training_or_validation(prepared, tmp_path):
    """A 4-layer SASRec under ZeRO-3 on 2 ranks: at every module call of 2 training steps and a
    validation, the parameters a rank holds whole (gathered) add up to less than the model, and
    validation covers all users on both ranks without a full copy."""
    spawn(zero3_workers.train_and_validate, str(prepared), str(tmp_path), [])
    for rank in range(2):
        seen = json.loads((tmp_path / f"watch-{rank}.json").read_text())
        assert 0 < seen["train"] < seen["total"] and 0 < seen["valid"] < seen["total"], seen
        assert seen["valid_users"] == 64
