"""Validation curves of several training runs on one plot, against training wall clock or step.

Issue 13 compares ACERec, RPG and SASRec "at the same wall-clock budget": each run's validation
rows carry `train_seconds` (training time summed over every attempt of the run, validation
excluded), so runs trained in several sessions line up on one time axis.

    python bench/compare_curves.py acerec=runs/acerec_beauty/train_atm_summary_isa0.1_rec0.03 \
        rpg=runs/rpg_beauty/train sasrec=runs/sasrec_beauty/train --metric ndcg@10 \
        --out bench/results/beauty_wallclock.png

Writes the PNG and, beside it, a JSON with the plotted points and each run's best value within
the shortest run's budget (the fair comparison at equal wall clock). A run whose directory is gone can
be taken from such a JSON: `rpg=bench/results/beauty_wallclock.json:rpg` (its metric and x must match).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distrec.figures import pyplot, save_figure  # noqa: E402


def validation_points(train_dir: Path, metric: str, x: str) -> list[tuple[float, float]]:
    path = train_dir / "metrics.jsonl"
    if not path.exists():
        sys.exit(f"{path}: not found (a train directory holds metrics.jsonl)")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    valid = [r for r in rows if r.get("split") == "valid" and metric in r]
    if not valid:
        sys.exit(f"{path}: no validation rows with {metric}")
    if x == "train_seconds" and any(x not in r for r in valid):
        sys.exit(f"{path}: validation rows without train_seconds (the run predates it); use --x step")
    return [(float(r[x]), float(r[metric])) for r in valid]


def saved_points(spec: str, metric: str, x: str) -> list[tuple[float, float]]:
    """The points of one curve in an earlier output of this script (`file.json:label`)."""
    path, _, label = spec.rpartition(":")
    saved = json.loads(Path(path).read_text())
    if (saved.get("metric"), saved.get("x")) != (metric, x):
        sys.exit(f"{path}: plots {saved.get('metric')} against {saved.get('x')}, not {metric} against {x}")
    if label not in saved.get("points", {}):
        sys.exit(f"{path}: no curve {label!r}; it has {sorted(saved.get('points', {}))}")
    return [tuple(p) for p in saved["points"][label]]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="label=train_dir, or label=earlier_output.json:label")
    parser.add_argument("--metric", default="ndcg@10")
    parser.add_argument("--x", default="train_seconds", choices=["train_seconds", "step"])
    parser.add_argument("--out", type=Path, required=True, help="PNG path; the JSON goes beside it")
    args = parser.parse_args(argv)
    runs = {}
    for spec in args.runs:
        label, sep, directory = spec.partition("=")
        if not sep:
            parser.error(f"expected label=train_dir, got {spec!r}")
        runs[label] = (saved_points(directory, args.metric, args.x) if ".json:" in directory
                       else validation_points(Path(directory), args.metric, args.x))

    budget = min(points[-1][0] for points in runs.values())  # the shortest run's last point
    fig, ax = pyplot().subplots(figsize=(6.4, 4.4))
    for i, (label, points) in enumerate(runs.items()):
        ax.plot(*zip(*[(x / 3600 if args.x == "train_seconds" else x, y) for x, y in points]), "o-",
                color=f"C{i % 10}", markersize=3, label=label)
    ax.set_xlabel("training hours" if args.x == "train_seconds" else "step")
    ax.set_ylabel(f"valid {args.metric}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, args.out)
    summary = {"metric": args.metric, "x": args.x, "budget": budget,
               "best_within_budget": {label: max((y for x, y in points if x <= budget), default=None)
                                      for label, points in runs.items()},  # None: its first point is past it
               "points": runs}
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    for label, best in summary["best_within_budget"].items():
        shown = f"{best:.4f}" if best is not None else "- (no validation within it)"
        print(f"{label:>12}  best valid {args.metric} within {budget:.0f} {args.x}: {shown}")
    print(f"compare_curves: {args.out} and {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
