"""The sweep's tables, fits, plots and report.md, rebuilt from the point markers on disk.

Curves: one per method/backbone (plus any other grid key that is not what drives the x axis),
fitted with `fit_power_law` when it has at least 3 distinct x values.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distrec.artifacts import write_json
from distrec.scaling.fit import DECREASING, INCREASING, fit_power_law, lower_envelope
from distrec.scaling.results import curve
from distrec.scaling.sweep import gather_rows

# x axes derived from the runs, and the grid keys that drive each (left out of the curve label)
DERIVED_X = {
    "params_non_embedding": ("non-embedding parameters", ("model",)),
    "tokens_seen": ("training tokens", ("train",)),
    "train_flops": ("training FLOPs", ("model", "train")),
}
LABEL_KEYS = ("method", "backbone")
LABELLED = ("method", "model", "method.name", "model.backbone")  # grid keys LABEL_KEYS already show


# ---------------------------------------------------------------- tables

def _uniform(rows: list[dict]) -> list[dict]:
    """Parquet columns need one type: columns mixing types (e.g. a grid of 300 and '1k') become strings."""
    keys = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    for key in keys:
        kinds = {type(r.get(key)) for r in rows if r.get(key) is not None}
        if kinds == {int, float}:
            continue
        if len(kinds) > 1 or kinds & {list, dict}:
            for r in rows:
                if r.get(key) is not None:
                    r[key] = json.dumps(r[key]) if isinstance(r[key], (list, dict)) else str(r[key])
    return [{k: r.get(k) for k in keys} for r in rows]


def write_tables(sweep_dir: Path, only: set[str] | None = None) -> list[dict]:
    """results.parquet (every point) and curves.parquet (finished points), written atomically."""
    sweep_dir = Path(sweep_dir)
    rows = _uniform(gather_rows(sweep_dir, only))
    _write(pa.Table.from_pylist(rows), sweep_dir / "results.parquet")
    curves = [c for r in rows if r.get("status") == "ok" for c in curve(r["run_dir"], r)]
    if curves:
        _write(pa.Table.from_pylist(curves), sweep_dir / "curves.parquet")
    return rows


def _write(table: pa.Table, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


# ---------------------------------------------------------------- fits and plots

def _label(row: dict, keys: list[str]) -> str:
    parts = [str(row.get(k)) for k in LABEL_KEYS if row.get(k) is not None]
    parts += [f"{k.split('.')[-1]}={row.get(k)}" for k in keys if k not in LABELLED]
    return "/".join(parts) or "all"


def _series(rows, x_key, y_key, label_keys):
    series: dict[str, tuple[list, list]] = {}
    for r in rows:
        x, y = r.get(x_key), r.get(y_key)
        if isinstance(x, (int, float)) and isinstance(y, (int, float)) and x > 0 and y > 0 and math.isfinite(y):
            xs, ys = series.setdefault(_label(r, label_keys), ([], []))
            xs.append(float(x))
            ys.append(float(y))
    return series


def x_axes(rows: list[dict], grid_keys: list[str]) -> dict:
    """Derived axes plus numeric grid keys (e.g. data.synthetic.num_items) whose values vary."""
    axes = {}
    for key, (title, drivers) in DERIVED_X.items():
        axes[key] = (title, [k for k in grid_keys if k.split(".")[0] not in drivers])
    for key in grid_keys:
        if all(isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool) for r in rows):
            axes[key] = (key, [k for k in grid_keys if k != key and k.split(".")[0] not in ("model", "train")])
    return {k: v for k, v in axes.items() if _spread(rows, k) >= 1.5}


def _spread(rows, key) -> float:
    """max/min of a column's positive values: an axis spanning less than 1.5x has nothing to fit
    (e.g. tokens seen when only the catalog size changes)."""
    values = [r.get(key) for r in rows]
    values = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0]
    return max(values) / min(values) if len(set(values)) >= 2 else 1.0


def analyze(sweep_dir: Path, grid_keys: list[str], metric: str = "ndcg@10", loss_key: str = "loss",
            only: set[str] | None = None) -> dict:
    """Fit and plot every (x axis, loss|metric) pair; write fits.json, plots/*.png, report.md."""
    from distrec.scaling.plots import frontier_plot, scaling_plot

    sweep_dir = Path(sweep_dir)
    rows = write_tables(sweep_dir, only)
    ok = [r for r in rows if r.get("status") == "ok"]
    # the trend decides the law's direction: quality rises with model size but falls with catalog size
    targets = {loss_key: "loss", f"test_{metric}": f"test {metric}"}
    fits, plots = {}, []
    for x_key, (x_title, label_keys) in x_axes(ok, grid_keys).items():
        for y_key, y_title in targets.items():
            series = _series(ok, x_key, y_key, label_keys)
            if not series:
                continue
            fitted = {label: fit_power_law(x, y, "auto") for label, (x, y) in series.items()}
            fitted = {k: v for k, v in fitted.items() if v is not None}
            fits[f"{y_key} vs {x_key}"] = {k: v.to_dict() for k, v in fitted.items()}
            name = f"{_slug(y_key)}_vs_{_slug(x_key)}.png"
            scaling_plot(series, fitted, sweep_dir / "plots" / name, x_title, y_title,
                         title=f"{y_title} vs {x_title}")
            plots.append(name)
    frontier = _frontier(sweep_dir, ok, grid_keys)
    if frontier:
        frontier_plot(frontier["curves"], frontier["frontiers"], sweep_dir / "plots" / "frontier.png",
                      title="train loss vs compute: compute-optimal frontier")
        plots.append("frontier.png")
        fits["frontier: train loss vs FLOPs"] = {g: fit.to_dict() for g, (_, fit) in frontier["frontiers"].items() if fit}
    write_json(sweep_dir / "fits.json", fits)
    (sweep_dir / "report.md").write_text(report_markdown(rows, fits, plots, grid_keys, metric))
    return {"rows": rows, "fits": fits, "plots": plots}


def _frontier(sweep_dir: Path, ok: list[dict], grid_keys: list[str]):
    """Every run's loss curve, and per method/backbone (each has its own loss) the lower envelope
    of those curves over compute with its power-law fit."""
    path = sweep_dir / "curves.parquet"
    if not path.exists() or _spread(ok, "params_non_embedding") < 1.5:
        return None  # an envelope across model sizes needs several sizes
    labels = {r["point_id"]: _label(r, grid_keys) for r in ok}  # one curve per run
    if len(set(labels.values())) < len(labels):
        labels = {pid: f"{label} [{pid}]" for pid, label in labels.items()}
    groups = {r["point_id"]: _label(r, []) for r in ok}
    curves, by_group = {}, {}
    for c in pq.read_table(path).to_pylist():
        if c["flops"] and c["loss"] and c["point_id"] in labels:
            for store, key in ((curves, labels[c["point_id"]]), (by_group, groups[c["point_id"]])):
                xs, ys = store.setdefault(key, ([], []))
                xs.append(c["flops"])
                ys.append(c["loss"])
    frontiers = {}
    for group, (flops, loss) in by_group.items():
        flops, loss = np.array(flops), np.array(loss)
        keep = lower_envelope(flops, loss)
        fit = fit_power_law(flops[keep], loss[keep], DECREASING) if len(keep) >= 3 else None
        frontiers[group] = ((flops[keep], loss[keep]), fit)
    return {"curves": curves, "frontiers": frontiers} if curves else None


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text).strip("_")


# ---------------------------------------------------------------- report.md

def _fmt(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def report_markdown(rows, fits, plots, grid_keys, metric) -> str:
    ok = [r for r in rows if r.get("status") == "ok"]
    failed = [r for r in rows if r.get("status") != "ok"]
    columns = ["point_id", *grid_keys, "params_non_embedding", "train_flops", "tokens_seen", "train_loss",
               f"test_recall@{metric.split('@')[-1]}", f"test_{metric}", "fidelity", "wall_s", "status"]
    lines = ["# Sweep report", "", f"{len(ok)} finished, {len(failed)} failed, {len(rows)} points.", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    def order(r):  # by method/backbone, then by the grid values (numbers numerically)
        values = [r.get(k) for k in (*LABEL_KEYS, *grid_keys)]
        return [(0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v)) for v in values]

    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in sorted(rows, key=order)]
    lines += ["", "## Fits", "", "Saturating power laws (docs/scaling.md); b with its 95% bootstrap interval.", ""]
    for name, per_label in fits.items():
        if not per_label:
            continue
        for label, f in per_label.items():
            sign = "c - a*X^-b" if f["direction"] == INCREASING else "a*X^-b + c"
            ci = f["ci"].get("b")
            ci_text = f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci else ""
            lines.append(f"- {name}, {label}: {sign} with a={f['a']:.4g}, b={f['b']:.3g}{ci_text}, "
                         f"c={f['c']:.4g}, R2(log)={f['r2']:.3f}, n={f['n_points']}"
                         + (f" ({f['note']})" if f.get("note") else ""))
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}](plots/{p})" for p in plots]
    if failed:
        lines += ["", "## Failed points", ""]
        for r in failed:
            lines += [f"### {r['point_id']} (attempts: {r.get('attempts')})", "", "```", str(r.get("error")), "```", ""]
    return "\n".join(lines) + "\n"
