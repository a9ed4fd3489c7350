"""Helpers for the data tests: run `prepare` on a config and load what it wrote."""

from pathlib import Path

from distrec.config import compose
from distrec.data.dataset import load_prepared
from distrec.data.prepare import prepare

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def run_prepare(root, *overrides):
    cfg = compose(["stage=prepare", f"paths.root={root}", "progress=false", *overrides])
    return load_prepared(prepare(cfg))


def sequences(data) -> list[list[int]]:
    return data.sequences.column("items").to_pylist()


def column(data, name) -> list:
    return data.items.column(name).to_pylist()


def write_jsonl(path: Path, rows: list) -> Path:
    """Write rows (dicts, or raw strings written as they are) one per line."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def normalised(root: Path, sequences: list, items: list | None = None) -> list[str]:
    """A dataset folder in the normalised layout; returns the overrides that point prepare at it."""
    write_jsonl(root / "sequences.jsonl", sequences)
    if items is not None:
        write_jsonl(root / "items.jsonl", items)
    return ["data.format=normalized", f"data.path={root}", "data.name=tmp"]
