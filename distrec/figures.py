"""Figures as files: matplotlib without a display, written atomically (a reader never sees half a PNG)."""

from __future__ import annotations

from pathlib import Path


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path) -> Path:
    """Write `fig` to `path` (atomically: a reader never sees half a PNG) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=110, format=path.suffix.lstrip(".") or "png")
    tmp.replace(path)
    pyplot().close(fig)
    return path
