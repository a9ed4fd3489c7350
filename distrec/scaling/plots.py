"""PNG plots of a sweep: log-log scaling curves with their fits, and the compute frontier."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from distrec.figures import pyplot, save_figure


def scaling_plot(series: dict, fits: dict, path, xlabel: str, ylabel: str, title: str = "") -> Path:
    """One marker set per group (`series[label] = (x, y)`), its fitted curve overlaid (`fits[label]`)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for i, (label, (x, y)) in enumerate(sorted(series.items())):
        color = f"C{i % 10}"
        order = np.argsort(x)
        x, y = np.asarray(x, dtype=float)[order], np.asarray(y, dtype=float)[order]
        fit = fits.get(label)
        ax.plot(x, y, "o" if fit else "o-", color=color, label=label)
        if fit:
            grid = np.logspace(np.log10(x.min()), np.log10(x.max()), 100)
            ax.plot(grid, fit(grid), "--", color=color, alpha=0.8,
                    label=f"fit b={fit.b:.2f}, c={fit.c:.3g}")
    _log_axes(ax, xlabel, ylabel, title, legend_size=7)
    return save_figure(fig, path)


def frontier_plot(curves: dict, frontiers: dict, path, xlabel: str = "training FLOPs",
                  ylabel: str = "train loss", title: str = "") -> Path:
    """Loss-vs-compute curve of every run (`curves[label] = (flops, loss)`) and, per group of runs
    sharing a loss (`frontiers[group] = ((flops, loss) on the lower envelope, fit or None)`), the
    compute-optimal frontier and its power-law fit."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for i, (label, (x, y)) in enumerate(sorted(curves.items())):
        ax.plot(x, y, "-", color=f"C{i % 10}", alpha=0.6, label=label)
    for j, (group, ((fx, fy), fit)) in enumerate(sorted(frontiers.items())):
        marker = "os^vD"[j % 5]
        ax.plot(fx, fy, "k" + marker, markersize=3, label=f"frontier {group}")
        if fit:
            grid = np.logspace(np.log10(min(fx)), np.log10(max(fx)), 100)
            ax.plot(grid, fit(grid), "k--", linewidth=1, label=f"fit b={fit.b:.2f}, c={fit.c:.3g}")
    _log_axes(ax, xlabel, ylabel, title, legend_size=6)
    return save_figure(fig, path)


def _log_axes(ax, xlabel: str, ylabel: str, title: str, legend_size: int) -> None:
    """Log-log axes with labels, a light grid and a small legend (every plot of a sweep report)."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=legend_size)
