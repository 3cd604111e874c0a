"""A heatmap of the report: losses x (backend, dtype), coloured by deviation / tolerance."""

from __future__ import annotations

import math

import numpy as np

from .backends import is_installed
from .results import Report, Row

MISSING_MATPLOTLIB = (
    "--plot needs matplotlib, which is not installed: pip install matplotlib "
    '(or pip install "unilosses[plot]")'
)


def matplotlib_available() -> bool:
    return is_installed("matplotlib")


def worst_ratio(row: Row) -> float:
    """The largest deviation / tolerance over the row's comparisons (known ones excluded)."""
    worst = 0.0
    for case in row.cases:
        if case.error:
            return math.inf
        for chk in case.checks():
            if chk.known is not None:
                continue
            if chk.error is not None:
                return math.inf
            if chk.deviation is None:
                continue
            rel = chk.deviation.rel
            worst = max(worst, rel / chk.tol if chk.tol > 0 else (math.inf if rel else 0.0))
    return worst


def save_heatmap(report: Report, path: str) -> None:
    """Write the heatmap PNG to ``path`` (raises ImportError without matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    columns = [(b, d) for d in report.dtypes for b in report.available]
    losses = report.losses
    data = np.full((len(losses), len(columns)), np.nan)
    ratios = np.full_like(data, np.nan)
    index = {(r.loss, r.backend, r.dtype): r for r in report.rows}
    for i, loss in enumerate(losses):
        for j, (b, d) in enumerate(columns):
            row = index.get((loss, b, d))
            if row is not None:
                ratios[i, j] = ratio = worst_ratio(row)
                # log10 of deviation/tol, floored at 1e-4 tol (exact agreement)
                data[i, j] = math.log10(max(ratio, 1e-4)) if math.isfinite(ratio) else 3.0
    fig_w = 2.0 + 1.1 * max(len(columns), 1)
    fig_h = 1.5 + 0.35 * max(len(losses), 1)
    fig, ax = plt.subplots(figsize=(fig_w + 3.0, fig_h))
    im = ax.imshow(data, cmap="RdYlGn_r", vmin=-4.0, vmax=2.0, aspect="auto")
    ax.set_xticks(range(len(columns)), [f"{b}\n{d}" for b, d in columns], fontsize=8)
    ax.set_yticks(range(len(losses)), losses, fontsize=8)
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            r = ratios[i, j]
            if not np.isnan(r):
                text = "FAIL" if r > 1 else ("0" if r == 0 else f"{r:.0e}")
                ax.text(j, i, text, ha="center", va="center", fontsize=6)
    cbar = fig.colorbar(im, ax=ax)
    cbar.set_label("log10(worst deviation / tolerance); > 0 fails")
    ax.set_title(f"unilosses parity (seed {report.seed}): worst deviation / tolerance",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["MISSING_MATPLOTLIB", "matplotlib_available", "save_heatmap", "worst_ratio"]
