"""Training metrics on disk: `metrics.jsonl` (one JSON row per log event), `metrics.csv`,
TensorBoard event files under `tensorboard/` and `curve.png` (train loss and the validation metric
against the step, redrawn at each validation). Only rank 0 writes.

On resume the rows after the resumed step are dropped first, so a resumed (or recovered) run's
log reads exactly like an uninterrupted one.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path


CURVE = "curve.png"


class MetricsLog:
    def __init__(self, directory: str | Path, enabled: bool = True, resume_step: int = 0,
                 tensorboard: bool = True, curve_metric: str = "ndcg@10"):
        self.enabled = enabled
        self.directory = Path(directory)
        self.jsonl = self.directory / "metrics.jsonl"
        self.csv = self.directory / "metrics.csv"
        self.curve_metric = curve_metric
        self.writer = None
        if not enabled:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        self.rows = [r for r in self._read() if r.get("step", 0) <= resume_step]
        self.jsonl.write_text("".join(json.dumps(r) + "\n" for r in self.rows))
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.directory / "tensorboard"), purge_step=resume_step + 1)
            except ImportError:  # tensorboard is a dependency; tolerate its absence in minimal installs
                self.writer = None

    def _read(self) -> list[dict]:
        if not self.jsonl.exists():
            return []
        return [json.loads(line) for line in self.jsonl.read_text().splitlines() if line.strip()]

    def log(self, row: dict) -> None:
        """`row` needs `step` and `split` ("train" | "valid"); numbers go to TensorBoard too."""
        if not self.enabled:
            return
        self.rows.append(row)
        with self.jsonl.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for key, value in row.items():
                if key not in ("step", "split") and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"{row['split']}/{key}", value, row["step"])
        if row["split"] == "valid":
            plot_curve(self.rows, self.curve_metric, self.directory / CURVE)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.writer is not None:
            self.writer.close()
        keys = []
        for row in self.rows:
            keys += [k for k in row if k not in keys]
        with self.csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.rows)


def plot_curve(rows: list[dict], metric: str, path: Path) -> Path:
    """Train loss (top) and validation `metric` (bottom, best step marked) against the step."""
    from distrec.figures import pyplot, save_figure

    train = [(r["step"], r["loss"]) for r in rows if r["split"] == "train" and "loss" in r]
    valid = [(r["step"], r[metric]) for r in rows if r["split"] == "valid" and metric in r]
    fig, (top, bottom) = pyplot().subplots(2, 1, sharex=True, figsize=(6.4, 5.2))
    if train:
        top.plot(*zip(*train), "-", color="C0", linewidth=1, marker="o" if len(train) < 50 else None, markersize=3)
    top.set_ylabel("train loss")
    if valid:
        bottom.plot(*zip(*valid), "o-", color="C1", markersize=3)
        best = max(valid, key=lambda sv: sv[1])
        bottom.plot(*best, "k*", markersize=10, label=f"best {best[1]:.4f} at step {best[0]}")
        bottom.legend(fontsize=8)
    bottom.set_ylabel(f"valid {metric}")
    bottom.set_xlabel("step")
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
    return save_figure(fig, path)


def format_duration(seconds: float) -> str:
    """45 s, 3 min 05 s, 2 h 07 min."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
