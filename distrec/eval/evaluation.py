"""The eval/ artifact as later readers open it: `metrics.json` (the metrics, the protocol that gives
them their meaning, the evaluated model and the popularity baseline), written by `distrec evaluate`.

    evaluation = Evaluation("runs/beauty/eval")
    evaluation.metrics["ndcg@10"], evaluation.protocol["split"]
"""

from __future__ import annotations

from pathlib import Path

from distrec.artifacts import read_json

METRICS_JSON = "metrics.json"
METRIC_PREFIXES = ("recall@", "ndcg@", "hr@", "mrr@", "coverage@")


class Evaluation:
    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.report = read_json(self.directory / METRICS_JSON)  # a DataError naming the file when missing

    @property
    def metrics(self) -> dict:
        """The flat metric dict (files from older releases nest it under the split, or not at all)."""
        doc = self.report
        for candidate in (doc.get("metrics"), doc.get(doc.get("split", "test")), doc):
            if isinstance(candidate, dict) and any(str(k).startswith(METRIC_PREFIXES) for k in candidate):
                return candidate
        return {}

    @property
    def protocol(self) -> dict:
        return self.report.get("protocol") or {}
