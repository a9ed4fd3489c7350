"""Where a ZeRO-3 rank's memory goes: RSS per phase of each rank (construction under zero.Init,
deepspeed.initialize, forward, backward, optimizer step, validation, consolidation, save), polled every
10 ms, for `model.size` SASRec on ml-100k trained 2 steps on N gloo ranks (torch.multiprocessing, no Ray).
Found with it (docs/benchmarks.md, ZeRO-3): glibc kept freed per-layer blocks in its heaps.

    .venv/bin/python bench/trace_zero3_phases.py --workers 2 --size 200m [override ...]
"""

import argparse
import functools
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "train"))  # zero3_workers: a rank joins a gloo group, RankSession

from bench_zero3 import GIB, rss  # noqa: E402


class PhaseTrace:
    """The peak RSS of each phase (phases repeat: a step's peak is the largest over the steps; a call
    inside another, e.g. the forward of a validation, counts in the inner phase)."""

    def __init__(self):
        self.phase, self.order, self.at_start, self.peak = "start", [], {}, {}
        threading.Thread(target=self._poll, daemon=True).start()

    def enter(self, phase: str) -> None:
        self.phase = phase
        if phase not in self.order:
            self.order.append(phase)
            self.at_start[phase] = rss(os.getpid())

    def _poll(self):
        while True:
            self.peak[self.phase] = max(self.peak.get(self.phase, 0), rss(os.getpid()))
            time.sleep(0.01)

    def wrap(self, owner, name: str, phase: str) -> None:
        fn = getattr(owner, name)

        @functools.wraps(fn)
        def traced(*args, **kwargs):
            self.enter(phase)
            try:
                return fn(*args, **kwargs)
            finally:
                self.enter(f"after {phase}")

        setattr(owner, name, traced)


def rank_main(rank, world, port, prepared, out, size, overrides):
    trace = PhaseTrace()
    import deepspeed
    from deepspeed.runtime.engine import DeepSpeedEngine
    from zero3_workers import RankSession, join

    from distrec.config import compose
    from distrec.data.dataset import load_prepared
    from distrec.models.recommender import Catalog, build_model
    from distrec.train import engine as E
    from distrec.train import loop as L

    join(rank, world, port)
    cfg = compose(["stage=train", "data=ml100k", f"paths.root={prepared}", "method=sasrec", f"model.size={size}",
                   "model.max_history=20", "model.activation_checkpointing=true", "engine=local",
                   "engine.zero_stage=3", "train.global_batch_size=8", "train.max_steps=2", "train.eval_every=2",
                   "train.warmup_steps=0", "train.val_max_users=32", "eval.batch_size=8", "progress=false",
                   "train.keep_checkpoints=1", *overrides])
    data = load_prepared(cfg.paths.data)
    for owner, name, phase in [(E.DeepSpeedEngine, "_build", "construction (zero.Init)"),
                               (deepspeed, "initialize", "deepspeed.initialize"),
                               (DeepSpeedEngine, "forward", "forward"), (DeepSpeedEngine, "backward", "backward"),
                               (DeepSpeedEngine, "step", "optimizer step"), (L, "validate", "validation"),
                               (E.DeepSpeedEngine, "write_weights", "weights file"), (E.DeepSpeedEngine, "save", "save")]:
        trace.wrap(owner, name, phase)
    make = functools.partial(build_model, cfg.model, cfg.method, Catalog(data.num_items))
    job = L.TrainJob(cfg=cfg, make_model=make, num_items=data.num_items, identity={"model_hash": "-"},
                     train_dir=str(Path(out) / "train"))
    L.train_loop(job, RankSession(Path(out) / "train", rank, world), data.sequence_data())
    time.sleep(0.05)
    # a phase shorter than one poll keeps its RSS at the start as its peak
    rows = [(p, trace.at_start[p] / GIB, max(trace.at_start[p], trace.peak.get(p, 0)) / GIB) for p in trace.order]
    Path(out, f"trace-{rank}.json").write_text(json.dumps(rows))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--size", default="200m")
    ap.add_argument("overrides", nargs="*", help="more config overrides, e.g. engine.precision=fp32")
    args = ap.parse_args()
    from distrec.config import compose
    from distrec.stages import prepare

    work = Path(tempfile.mkdtemp(prefix="trace_zero3_"))
    prepare.run(compose([f"paths.root={work}", "data=ml100k", "progress=false"]))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.set_num_threads(1)
    mp.spawn(rank_main, args=(args.workers, port, str(work), str(work / "out"), args.size, args.overrides),
             nprocs=args.workers)
    for rank in range(args.workers):
        print(f"rank {rank} (RSS GiB: at the phase's start, its peak)")
        for phase, start, peak in json.loads((work / "out" / f"trace-{rank}.json").read_text()):
            if not phase.startswith("after "):
                print(f"  {phase:26s} {start:5.2f}  {peak:5.2f}")


if __name__ == "__main__":
    main()
