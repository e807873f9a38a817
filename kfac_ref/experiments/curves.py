"""The article's figure: loss and accuracy against iterations and against seconds.

Two rows (loss, accuracy) × two columns (iterations, wall-clock seconds); one
colour per optimizer; training solid, validation dashed — as in the article's
SGD / NGD / K-FAC comparison.  When any run carries diagnostics (``angle_deg``,
`kfac-ref compare --diagnostics K`), a third row shows the angle between each
method's step and the exact damped natural gradient against iterations, the
damping γ of that natural gradient in the legend.  Drawn on a bare
:class:`matplotlib.figure.Figure` (no pyplot, no global state) and written atomically.
"""

from __future__ import annotations

from pathlib import Path

from ..io import write_figure

COLORS = {
    "sgd": "#1f77b4",
    "adam": "#e377c2",
    "ngd": "#d62728",
    "diag-ngd": "#17becf",
    "block-ngd": "#9467bd",
    "kfac": "#2ca02c",
    "kfac-tridiag": "#ff7f0e",
    "ekfac": "#8c564b",
}
LABELS = {
    "sgd": "SGD",
    "adam": "Adam",
    "ngd": "NGD (full Fisher)",
    "diag-ngd": "diagonal NGD",
    "block-ngd": "block-diagonal NGD",
    "kfac": "K-FAC",
    "kfac-tridiag": "block-tridiagonal K-FAC",
    "ekfac": "EKFAC",
}
ANGLE_TITLE = "angle to damped NGD (°) vs iteration"


def curves_figure(runs, title: str | None = None):
    """A Figure with the four panels for a list of runs (history.json's "runs"), five with diagnostics."""
    from matplotlib.figure import Figure

    diagnosed = any(r.get("angle_deg") is not None for run in runs for r in run["records"])
    fig = Figure(figsize=(11, 10.5 if diagnosed else 7.5), layout="constrained")
    grid = fig.add_gridspec(3 if diagnosed else 2, 2)
    axes = {(row, col): fig.add_subplot(grid[row, col]) for row in range(2) for col in range(2)}
    for run in runs:
        name = run["optimizer"]
        color = COLORS.get(name)
        label = LABELS.get(name, name)
        for col, xkey in enumerate(("iteration", "seconds")):
            for row, (metric, ylab) in enumerate((("loss", "loss"), ("acc", "accuracy"))):
                ax = axes[row, col]
                for split, style in (("train", "-"), ("val", "--")):
                    pts = [
                        (r[xkey], r[f"{split}_{metric}"])
                        for r in run["records"]
                        if r[f"{split}_{metric}"] is not None and (xkey == "iteration" or r[xkey] > 0)
                    ]
                    if pts:
                        xs, ys = zip(*pts)
                        ax.plot(
                            xs,
                            ys,
                            style,
                            color=color,
                            lw=1.6,
                            label=f"{label} ({'train' if split == 'train' else 'validation'})",
                        )
                if xkey == "seconds":  # log scale: methods whose costs differ 100× stay readable
                    ax.set_xscale("log")
                ax.set_xlabel("iterations" if xkey == "iteration" else "wall-clock seconds (training only, log scale)")
                ax.set_ylabel(ylab)
                if metric == "loss":
                    ax.set_yscale("log")
                ax.grid(True, alpha=0.3)
    axes[0, 0].legend(fontsize=8, ncol=1)
    if diagnosed:
        _angle_panel(fig.add_subplot(grid[2, :]), runs)
    fig.suptitle(title or "SGD vs NGD vs K-FAC — solid: train, dashed: validation")
    return fig


def gamma_text(values) -> str:
    """The dampings γ of the measured steps: "γ = 0.1", or "γ 0.01–0.1" when they vary; "" for none."""
    g = sorted({v for v in values if v is not None})
    return "" if not g else f"γ = {g[0]:g}" if len(g) == 1 else f"γ {g[0]:g}–{g[-1]:g}"


def _angle_panel(ax, runs):
    """The angle (°) of each method's step to (F + γI)⁻¹∇h at the measured iterations; γ in the legend."""
    for run in runs:
        pts = [
            (r["iteration"], r["angle_deg"], r.get("natural_damping"))
            for r in run["records"]
            if r.get("angle_deg") is not None
        ]
        if not pts:
            continue
        its, angles, gammas = zip(*pts)
        gamma = gamma_text(gammas)
        name = run["optimizer"]
        ax.plot(
            its,
            angles,
            "o-",
            color=COLORS.get(name),
            lw=1.4,
            ms=3,
            label=f"{LABELS.get(name, name)}" + (f" ({gamma})" if gamma else ""),
        )
    ax.set_title(ANGLE_TITLE, fontsize=10)
    ax.set_xlabel("iterations")
    ax.set_ylabel("angle to (F + γI)⁻¹∇h (°)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)


def save_figure(fig, path) -> Path:
    """Write a Figure to ``path`` (format from the suffix) via a temporary file."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    return write_figure(fig, path, dpi=130, make_parents=False)
