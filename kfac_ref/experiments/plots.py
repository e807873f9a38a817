"""Small matplotlib helpers for the notebooks: each draws on an ``ax`` it is given.

No function here creates a figure window or calls ``pyplot``: the caller makes the figure and
passes the axes in, so the same helpers work in a notebook, a script or a test with the Agg
backend.  Arrays may come from NumPy or CuPy; they are converted at this edge.
"""

from __future__ import annotations

import numpy as np
from mpl_toolkits.axes_grid1 import make_axes_locatable

from ..backend import to_numpy


def _np(a) -> np.ndarray:
    return np.asarray(to_numpy(a), dtype=np.float64)


def _finish(ax, image, title, colorbar, ticks=None):
    """Title, no axis ticks, and a colour bar as tall as the image, whatever its aspect ratio."""
    if title:
        ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    if colorbar:
        cax = make_axes_locatable(ax).append_axes("right", size="5%", pad=0.08)
        ax.figure.colorbar(image, cax=cax, ticks=ticks)
    return image


def heatmap(
    ax, matrix, title: str | None = None, *, vmax: float | None = None, cmap: str = "RdBu_r", colorbar: bool = True
):
    """Draw ``matrix`` (R, C) with a diverging colour map centred on zero.

    ``vmax`` fixes the colour range to [−vmax, vmax] (pass the same value to
    several heatmaps to compare them); by default it is max abs(matrix).
    Returns the image (for a shared colour bar).
    """
    m = _np(matrix)
    if m.ndim != 2:
        raise ValueError(f"heatmap: expected a matrix, got shape {m.shape}")
    if vmax is None:
        vmax = float(np.abs(m).max(initial=0.0)) or 1.0
    image = ax.imshow(m, cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest")
    return _finish(ax, image, title, colorbar)


def loss_contours(ax, t0, t1, values, *, levels: int = 20, color: str = "0.6"):
    """Contour lines of ``values`` (len(t1), len(t0)) on geometrically spaced levels.

    A quadratic bowl has most of its area at small values; geometric levels
    between the minimum and the maximum show the shape of the valley.
    """
    v = _np(values)
    lo, hi = float(v.min()), float(v.max())
    lv = lo + np.geomspace(1e-3, 1.0, levels) * (hi - lo)  # (levels,)
    cs = ax.contour(_np(t0), _np(t1), v, levels=lv, colors=color, linewidths=0.7)
    ax.set_xlabel(r"$\theta_0$")
    ax.set_ylabel(r"$\theta_1$")
    return cs


def trajectory(ax, path, label: str | None = None, **kwargs):
    """The iterates ``path`` (K, 2) as a line with dots; the start as a square."""
    p = _np(path)
    (line,) = ax.plot(p[:, 0], p[:, 1], marker="o", markersize=2.5, linewidth=1.2, label=label, **kwargs)
    ax.plot(p[0, 0], p[0, 1], marker="s", markersize=6, color=line.get_color())
    return line


def ellipse(ax, center, matrix, radius: float = 1.0, *, num: int = 200, **kwargs):
    """The ellipse {c + d : dᵀ M d = r²} of a symmetric positive-definite 2×2 matrix M.

    For a Fisher M this is the set of steps of equal length in the metric M:
    its long axis lies along the direction M considers cheapest.
    """
    c, m = _np(center), _np(matrix)
    evals, evecs = np.linalg.eigh(m)  # M = U diag(λ) Uᵀ
    angle = np.linspace(0.0, 2 * np.pi, num)  # (num,)
    circle = np.stack([np.cos(angle), np.sin(angle)])  # (2, num)
    d = evecs @ (circle * (radius / np.sqrt(evals))[:, None])  # (2, num)
    (line,) = ax.plot(c[0] + d[0], c[1] + d[1], **kwargs)
    return line


def eigen_arrows(ax, center, matrix, length: float = 1.0, **kwargs):
    """Arrows from ``center`` along the eigenvectors of a symmetric 2×2 matrix.

    The arrow of the largest eigenvalue has ``length``; the other is scaled by
    the ratio of the eigenvalues' square roots, so the picture shows both the
    directions and the anisotropy.
    """
    c = _np(center)
    evals, evecs = np.linalg.eigh(_np(matrix))
    scale = length * np.sqrt(np.maximum(evals, 0.0) / evals.max())  # (2,)
    arrows = []
    for k in range(2):
        dx, dy = scale[k] * evecs[:, k]
        arrows.append(
            ax.annotate(
                "", xy=(c[0] + dx, c[1] + dy), xytext=(c[0], c[1]), arrowprops=dict(arrowstyle="->", lw=1.5, **kwargs)
            )
        )
    return arrows


def error_curve(ax, xs, errors, label: str | None = None, *, reference_slope: float | None = None, **kwargs):
    """``errors`` against ``xs`` on log–log axes; optionally a line of slope ``reference_slope``
    through the first point (e.g. −½ for a Monte-Carlo error ∝ 1/√M)."""
    x, e = _np(xs), _np(errors)
    (line,) = ax.loglog(x, e, marker="o", label=label, **kwargs)
    if reference_slope is not None:
        ax.loglog(
            x, e[0] * (x / x[0]) ** reference_slope, linestyle="--", color="grey", label=f"slope {reference_slope:g}"
        )
    return line


def block_lines(ax, boundaries, *, color: str = "0.35", linewidth: float = 0.6, linestyle: str = "-"):
    """Thin lines at the ``boundaries`` (indices where a new block starts) of a matrix drawn by imshow.

    For a (P, P) matrix in θ's order, the offsets of the layers after the first
    mark the layer blocks; the lines sit on the pixel edges (index − ½).
    """
    for b in boundaries:
        ax.axhline(b - 0.5, color=color, linewidth=linewidth, linestyle=linestyle)
        ax.axvline(b - 0.5, color=color, linewidth=linewidth, linestyle=linestyle)


def block_labels(ax, labels, *, fontsize: float = 10):
    """Name the blocks of a matrix on both axes: ``labels`` [(centre index, text), …], e.g. (40.5, "W1")."""
    positions, texts = [p for p, _ in labels], [t for _, t in labels]
    ax.set_xticks(positions, texts, fontsize=fontsize)
    ax.set_yticks(positions, texts, fontsize=fontsize)
    ax.tick_params(length=0)


def log_heatmap(
    ax,
    matrix,
    title: str | None = None,
    *,
    vmax: float | None = None,
    decades: float = 6.0,
    cmap: str = "magma_r",
    colorbar: bool = True,
):
    """Draw abs(matrix) (R, C) on a log colour scale from vmax·10^−decades to vmax; exact zeros white.

    Shows structure a linear scale hides when a few entries dominate (the large
    diagonal of a damped inverse, for instance).  ``vmax`` defaults to max abs(matrix).
    Returns the image.
    """
    from matplotlib import colormaps
    from matplotlib.colors import LogNorm

    m = np.abs(_np(matrix))
    if m.ndim != 2:
        raise ValueError(f"log_heatmap: expected a matrix, got shape {m.shape}")
    if vmax is None:
        vmax = float(m.max(initial=0.0)) or 1.0
    shown = np.ma.masked_equal(m, 0.0)  # exact zeros → the "bad" colour
    cm = colormaps[cmap].with_extremes(bad="white")
    image = ax.imshow(
        shown, cmap=cm, norm=LogNorm(vmin=vmax * 10.0**-decades, vmax=vmax, clip=True), interpolation="antialiased"
    )
    return _finish(ax, image, title, colorbar)


def symlog_heatmap(
    ax,
    matrix,
    title: str | None = None,
    *,
    vmax: float | None = None,
    decades: float = 4.0,
    cmap: str = "RdBu_r",
    colorbar: bool = True,
):
    """Draw ``matrix`` (R, C) with a diverging map centred on zero, on a symmetric log scale.

    Linear within ±vmax·10^−decades, logarithmic beyond, up to ±vmax (default
    max abs(matrix)): the sign stays visible (red > 0, blue < 0) and so do entries
    many orders of magnitude below the largest.  Returns the image.
    """
    from matplotlib.colors import SymLogNorm

    m = _np(matrix)
    if m.ndim != 2:
        raise ValueError(f"symlog_heatmap: expected a matrix, got shape {m.shape}")
    if vmax is None:
        vmax = float(np.abs(m).max(initial=0.0)) or 1.0
    norm = SymLogNorm(linthresh=vmax * 10.0**-decades, vmin=-vmax, vmax=vmax, base=10)
    image = ax.imshow(m, cmap=cmap, norm=norm, interpolation="antialiased")
    return _finish(ax, image, title, colorbar, ticks=symlog_ticks(vmax, decades))


def symlog_ticks(vmax: float, decades: float = 4.0, step: int = 1) -> list[float]:
    """Colour-bar ticks for :func:`symlog_heatmap`: 0 and ±10^k for every ``step``-th power of ten
    strictly inside (vmax·10^−decades, vmax] (none at the linear threshold, where they would crowd 0)."""
    lo, hi = np.log10(vmax) - decades, np.log10(vmax)
    powers = [10.0**k for k in range(int(np.floor(hi)), int(np.floor(lo)), -step) if k > lo]
    return sorted([-p for p in powers] + [0.0] + powers)
