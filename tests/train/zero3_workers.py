"""What each rank of the ZeRO-3 tests runs (test_zero3.py): real DeepSpeed in a 2-process gloo group
started with torch.multiprocessing. A module of its own so the spawned processes can import it."""

import contextlib
import functools
import json
import os
from pathlib import Path

import torch

from distrec.config import compose

# method -> overrides: every method, each on a backbone it runs on, with the SID table it needs
MODELS = {
    "sasrec": ["method=sasrec"],
    "hstu_retrieval": ["method=hstu_retrieval", "model=hstu"],
    "intrr": ["method=intrr", "model=transformer", "method.intrr.uid_dim=16", "method.intrr.hidden=16"],
    "tiger": ["method=tiger", "model=t5", "model.d_model=32", "model.d_ff=64", "model.n_layers=1",
              "model.n_heads=2", "model.head_dim=16"],
    "flat_decoder": ["method=flat_decoder", "model=hstu"],
    "rpg": ["method=rpg", "model=transformer"],
    "acerec": ["method=acerec", "model=hstu", "method.acerec.k=2"],
}
SIDS = {"rpg": "sids_long", "acerec": "sids_long"}  # the others: sids_rq (sasrec, hstu_retrieval: none)


@contextlib.contextmanager
def group(rank: int, world: int, port: int):
    """This process as a rank of a gloo group, left together: a rank that exits while the other still
    talks to it (or with gloo's threads alive) aborts with 'terminate called without an active exception'."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    yield  # on an error, no barrier: spawn reports it and ends the other rank
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def construct(rank: int, world: int, port: int, root: str, out: str) -> None:
    """Every method built by a ZeRO-3 engine: partitioned from the start, and its consolidated weights
    equal to the same model built plainly with the same seed."""
    with group(rank, world, port):
        result = construct_all(rank, world, Path(root), out)
    Path(out, f"construct-{rank}.json").write_text(json.dumps(result))


def construct_all(rank: int, world: int, root: Path, out: str) -> dict:
    from distrec.data.dataset import load_prepared
    from distrec.models.recommender import Catalog, build_model
    from distrec.tokenize.sid_table import SIDTable
    from distrec.train.engine import make_engine, plan_batches

    result = {}
    num_items = load_prepared(root / "data").num_items
    for name, overrides in MODELS.items():
        cfg = compose(["stage=train", "data=synthetic", "model.size=debug", "model.max_history=10", "engine=local",
                       "engine.zero_stage=3", "engine.precision=fp32", *overrides])
        sids = None if name in ("sasrec", "hstu_retrieval") else SIDTable.load(root / SIDS.get(name, "sids_rq"))
        make = functools.partial(build_model, cfg.model, cfg.method, Catalog(num_items, sids))
        torch.manual_seed(0)
        engine = make_engine(make, cfg.train, cfg.engine, plan_batches(2, world), 10, torch.device("cpu"), rank)
        params = list(engine.model.parameters())
        partitioned = all(p.data.numel() == 0 and p.ds_tensor.numel() <= -(-p.ds_numel // world) for p in params)
        row = {"partitioned": partitioned, "params": sum(p.ds_numel for p in params),
               "largest": max(p.ds_numel for p in params), "held": write_weights_watched(engine, params, out, name)}
        if rank == 0:
            from safetensors.torch import load_file

            weights = load_file(Path(out, f"weights-{name}.safetensors"))
            torch.manual_seed(0)
            plain = make().state_dict()
            row["keys_equal"] = sorted(plain) == sorted(weights)
            row["unequal"] = [k for k in plain if k in weights and not torch.equal(plain[k].float(), weights[k])]
        result[name] = row
    return result


def write_weights_watched(engine, params, out: str, name: str) -> int:
    """engine.write_weights on every rank; returns the most parameter elements this rank held whole
    (gathered) at any tensor written."""
    import distrec.train.engine as E

    held, as_saved = [0], E.as_saved

    def watching(tensor):
        held[0] = max(held[0], sum(p.data.numel() for p in params))
        return as_saved(tensor)

    E.as_saved = watching  # called on rank 0 for each tensor while it is gathered
    try:
        engine.write_weights(Path(out, f"weights-{name}.safetensors"))
    finally:
        E.as_saved = as_saved
    return held[0]


class RankSession:
    """LocalSession's checkpoints for one rank of a group started by hand (each rank its own directory)."""

    progress_bar = False

    def __init__(self, train_dir: Path, rank: int, world: int):
        from distrec.train.loop import LocalSession

        self.rank, self.world_size = rank, world
        self._local = LocalSession(train_dir / f"rank-{rank}", keep=0)
        self.device, self.root = self._local.device, self._local.root

    def latest_checkpoint(self):
        return self._local.latest_checkpoint()

    def save(self, *args, **kwargs):
        self._local.save(*args, **kwargs)

    def report(self, metrics):
        pass


def watch(make_model, seen: dict):
    """make_model() with a hook on every module that records how many parameter elements the rank holds
    whole (gathered) while the module runs, as the most seen in training and in validation."""
    model = make_model()
    params = list({id(p): p for p in model.parameters()}.values())

    def pre_hook(module, args):
        phase = "train" if model.training else "valid"
        held = sum(p.data.numel() for p in params)
        seen[phase] = max(seen.get(phase, 0), held)

    for module in model.modules():
        module.register_forward_pre_hook(pre_hook)
    seen["total"] = sum(getattr(p, "ds_numel", p.numel()) for p in params)
    return model


def train_and_validate(rank: int, world: int, port: int, prepared: str, out: str, overrides: list) -> None:
    """The training loop (2 steps and a validation) under ZeRO-3, watching what each rank holds."""
    with group(rank, world, port):
        seen, summary = train_watched(prepared, out, overrides, rank, world)
    Path(out, f"watch-{rank}.json").write_text(json.dumps({**seen, "valid_users": summary["valid"]["users"]}))


def train_watched(prepared: str, out: str, overrides: list, rank: int, world: int):
    from distrec.data.batches import SequenceData
    from distrec.data.dataset import load_prepared
    from distrec.models.recommender import Catalog, build_model
    from distrec.train.loop import TrainJob, train_loop

    cfg = compose(["stage=train", "data=ml100k", f"paths.root={prepared}", "model.size=debug", "model.n_layers=4",
                   "model.dropout=0", "engine=local", "engine.zero_stage=3", "engine.precision=fp32",
                   "train.global_batch_size=32", "train.max_steps=2", "train.eval_every=2", "train.warmup_steps=0",
                   "train.val_max_users=64", "eval.batch_size=16", "progress=false", *overrides])
    data = load_prepared(cfg.paths.data)
    seen: dict = {}
    make = functools.partial(watch, functools.partial(build_model, cfg.model, cfg.method, Catalog(data.num_items)),
                             seen)
    job = TrainJob(cfg=cfg, make_model=make, num_items=data.num_items, identity={"model_hash": "-"},
                   train_dir=str(Path(out) / "train"))
    summary = train_loop(job, RankSession(Path(out) / "train", rank, world),
                         SequenceData.from_arrow(data.sequences))
    return seen, summary
