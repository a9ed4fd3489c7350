"""Golden curves: a short real-data training run whose loss and validation curves are stored, so a
change that moves them beyond a stated tolerance fails a test (torchtitan's loss-converging checks).

A curve is a JSON file in tests/golden/curves/: the run's spec (dataset, config overrides, steps)
beside its recorded curve. Any method adds one by writing the spec and running
`python tests/golden/update.py NAME`. Runs are the real `prepare` + `train` stages, in process, plain
torch, fp32, one thread: deterministic for a given seed on a given torch build.

    {"name": ..., "why": what the curve guards,
     "data": ["data=ml100k", ...], "train": ["experiment=...", ...],
     "tolerance": {"loss": relative, "<metric>": absolute},
     "curve": {"loss": [[step, value], ...], "<metric>": [[step, value], ...]}}
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

CURVES = Path(__file__).parent / "curves"
FIXED = ["engine=plain", "engine.precision=fp32", "train.log_every=1", "train.patience=0", "progress=false"]


def load(name: str) -> dict:
    return json.loads((CURVES / f"{name}.json").read_text())


def names() -> list[str]:
    return sorted(p.stem for p in CURVES.glob("*.json"))


def run_curve(spec: dict, workdir: Path, data_root: Path, extra: tuple[str, ...] = ()) -> dict:
    """Prepare the data and train as the spec says; return {"loss": [[step, v]], metric: [[step, v]]}."""
    from distrec.config import compose
    from distrec.stages.prepare import run as prepare
    from distrec.stages.train import run as train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the recorded curve's arithmetic: same kernels, same order
    try:
        data = [f"paths.root={workdir}", "progress=false", *spec["data"]]
        prepare(compose(["stage=prepare", *data, *_data_path(spec["data"], data_root)]))
        train(compose(["stage=train", *data, f"paths.train={workdir / 'train'}", *spec["train"], *FIXED, *extra]))
    finally:
        torch.set_num_threads(threads)
    rows = [json.loads(line) for line in (workdir / "train" / "metrics.jsonl").read_text().splitlines()]
    curve = {"loss": [[r["step"], r["loss"]] for r in rows if r["split"] == "train"]}
    for metric in spec["tolerance"]:
        if metric != "loss":
            curve[metric] = [[r["step"], r[metric]] for r in rows if r["split"] == "valid"]
    return curve


def _data_path(data_overrides, data_root: Path) -> list[str]:
    """Point the dataset at the shared copy (data=ml100k -> data.path=<root>/ml-100k)."""
    from distrec.config import compose

    cfg = compose(["stage=prepare", *data_overrides])
    return [f"data.path={data_root / Path(str(cfg.data.path)).name}"]


def compare(spec: dict, curve: dict) -> list[str]:
    """Every point of the recorded curve against the new one; returns the differences beyond tolerance."""
    problems = []
    for metric, tol in spec["tolerance"].items():
        want, got = dict(map(tuple, spec["curve"][metric])), dict(map(tuple, curve.get(metric, [])))
        if sorted(want) != sorted(got):
            problems.append(f"{metric}: steps {sorted(got)} differ from the recorded {sorted(want)}")
            continue
        for step, value in sorted(want.items()):
            allowed = tol * abs(value) if metric == "loss" else tol
            if abs(got[step] - value) > allowed:
                problems.append(f"{metric} at step {step}: {got[step]:.4f}, recorded {value:.4f} (tolerance {allowed:.4f})")
    return problems
