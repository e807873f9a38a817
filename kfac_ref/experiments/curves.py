"""The article's figure: loss and accuracy against iterations and against seconds.

Two rows (loss, accuracy) × two columns (iterations, wall-clock seconds); one
colour per optimizer; training solid, validation dashed — as in the article's
SGD / NGD / K-FAC comparison.  Drawn on a bare :class:`matplotlib.figure.Figure`
(no pyplot, no global state) and written atomically.
"""

from __future__ import annotations

from pathlib import Path

from ..io import write_figure

COLORS = {"sgd": "#1f77b4", "ngd": "#d62728", "block-ngd": "#9467bd", "kfac": "#2ca02c"}
LABELS = {"sgd": "SGD", "ngd": "NGD (full Fisher)", "block-ngd": "block-diagonal NGD", "kfac": "K-FAC"}


def curves_figure(runs, title: str | None = None):
    """A Figure with the four panels for a list of runs (history.json's "runs")."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 7.5), layout="constrained")
    axes = fig.subplots(2, 2)
    for run in runs:
        name = run["optimizer"]
        color = COLORS.get(name)
        label = LABELS.get(name, name)
        for col, xkey in enumerate(("iteration", "seconds")):
            for row, (metric, ylab) in enumerate((("loss", "loss"), ("acc", "accuracy"))):
                ax = axes[row, col]
                for split, style in (("train", "-"), ("val", "--")):
                    pts = [(r[xkey], r[f"{split}_{metric}"]) for r in run["records"]
                           if r[f"{split}_{metric}"] is not None and (xkey == "iteration" or r[xkey] > 0)]
                    if pts:
                        xs, ys = zip(*pts)
                        ax.plot(xs, ys, style, color=color, lw=1.6,
                                label=f"{label} ({'train' if split == 'train' else 'validation'})")
                if xkey == "seconds":  # log scale: methods whose costs differ 100× stay readable
                    ax.set_xscale("log")
                ax.set_xlabel("iterations" if xkey == "iteration" else "wall-clock seconds (training only, log scale)")
                ax.set_ylabel(ylab)
                if metric == "loss":
                    ax.set_yscale("log")
                ax.grid(True, alpha=0.3)
    axes[0, 0].legend(fontsize=8, ncol=1)
    fig.suptitle(title or "SGD vs NGD vs K-FAC — solid: train, dashed: validation")
    return fig


def save_figure(fig, path) -> Path:
    """Write a Figure to ``path`` (format from the suffix) via a temporary file."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    return write_figure(fig, path, dpi=130, make_parents=False)
