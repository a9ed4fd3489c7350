"""Training metrics on disk: `metrics.jsonl` (one JSON row per log event), `metrics.csv` and
TensorBoard event files under `tensorboard/`. Only rank 0 writes.

On resume the rows after the resumed step are dropped first, so a resumed (or recovered) run's
log reads exactly like an uninterrupted one.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path


class MetricsLog:
    def __init__(self, directory: str | Path, enabled: bool = True, resume_step: int = 0,
                 tensorboard: bool = True):
        self.enabled = enabled
        self.directory = Path(directory)
        self.jsonl = self.directory / "metrics.jsonl"
        self.csv = self.directory / "metrics.csv"
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
