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
