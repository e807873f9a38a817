"""The article's figure: full Fisher → block-diagonal → Kronecker-factored, and their inverses.

K-FAC in three steps ("Introducing K-FAC"; [MG15] §3–4) on a small trained network, every
matrix (P, P) in θ's order (docs/math.md §1): 1. block-diagonalise F ≈ diag(F_11, …, F_LL);
2. Kronecker-factor each block F_ll ≈ G_l ⊗ A_l; 3. invert the factors, (G ⊗ A)⁻¹ = G⁻¹ ⊗ A⁻¹
(docs/math.md §8.8).  The exact and block-diagonal matrices are inverted as (F + λI)⁻¹ and
(F_bd + λI)⁻¹; K-FAC is damped "factored" (the optimizer's default, docs/math.md §6.1, which damps
more than λI) or "exact", (G ⊗ A + λI)⁻¹ through the factors' eigendecompositions (§6.2).

Two facts the numbers show (``tests/test_fisher_plot.py`` checks them): K-FAC lives on F_bd's
blocks, so ‖K − F‖² = ‖K − F_bd‖² + ‖F_bd − F‖² (K-FAC is never closer to F than F_bd is; nothing
of the kind holds for the inverses), and step 3 loses nothing but round-off.  Two more columns
go beyond: block-tridiagonal K-FAC (docs/math.md §11; MLPs only, left out with a note for a
ConvNet) and EKFAC (§12), each with the inverse its optimizer applies.

Run it:  ``kfac-ref fisher-plot --out results/fisher-plot`` (or ``python -m kfac_ref.experiments.fisher_plot``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .. import fisher, models, nn
from ..backend import to_numpy
from ..fisher.dense import BlockDiagonal, Dense
from ..fisher.ekfac import EKFAC
from ..fisher.inverses import blockwise_inverse, kfac_damped
from ..fisher.kfac import Kronecker
from ..fisher.kron import DAMPING_MODES
from ..fisher.tridiag import BlockTridiagonal
from ..grads import batch_grad
from ..io import figure_writer, write_together
from ..params import layer_slices
from ..validate import check_damping

ARCHS = ("tiny", "mlp", "convnet")
#: each panel's colour range: ± this percentile of the absolute entries (larger ones saturate)
CLIP_PERCENTILE = 99.5
#: the largest matrix the figure is meant for: every entry a few pixels wide on a projector
MAX_DRAWN_ROWS = 200
FORMATS = ("png", "svg", "pdf")
SCALES = ("symlog", "linear", "log")


# ---- 1. A small trained network -------------------------------------------------------------------


class TrainedNet(NamedTuple):
    """What :func:`train_small_network` returns; unpacks as ``model, loss_fn, x, y, history``.

    x : (N, 64) for the MLP, (N, 1, 8, 8) for the ConvNet     the fixed evaluation batch
    y : (N,)                                                  its labels
    """

    model: object
    loss_fn: object
    x: np.ndarray
    y: np.ndarray
    history: object  # kfac_ref.train.History of the short SGD run


def pool_digits(x):
    """Average 2×2 pixel blocks of the digits: (N, 64) or (N, 1, 8, 8) → (N, 16), a 4×4 image flattened."""
    x = np.asarray(x).reshape(-1, 4, 2, 4, 2)  # (N, 4 rows, 2, 4 cols, 2)
    return x.mean(axis=(2, 4)).reshape(-1, 16)  # (N, 16)


def build_network(arch: str = "tiny", hidden=None, seed: int = 0):
    """The untrained digits network: ``"tiny"`` (the default), ``"mlp"`` or a small ``"convnet"``.

    ``"tiny"``
        the digits pooled to 4×4 (:func:`pool_digits`), Linear(16→h) → ReLU → Linear(h→10);
        ``hidden`` default (6,), P = 172: small enough that every entry of the (P, P)
        Fisher is visible in the figure (≤ :data:`MAX_DRAWN_ROWS` rows).
    ``"mlp"``
        Linear(64→h) → ReLU → … → Linear(→10); ``hidden`` (h, …) default (12,), P = 910.
    ``"convnet"``
        Conv(1→4, 3×3) → pool → Conv(4→8, 3×3) → pool → Linear(32→h) → Linear(h→10);
        ``hidden`` (h,) default (16,), P = 1,034.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}: expected one of {ARCHS}")
    if hidden is None:
        hidden = {"tiny": (6,), "mlp": (12,), "convnet": (16,)}[arch]
    hidden = tuple(int(h) for h in np.atleast_1d(hidden))
    if not hidden or min(hidden) < 1:
        raise ValueError(f"hidden widths must be positive integers, got {hidden!r}")
    if arch in ("tiny", "mlp"):
        return models.mlp(16 if arch == "tiny" else 64, hidden=hidden, num_classes=10, seed=seed)
    if len(hidden) != 1:
        raise ValueError(f"the convnet has one hidden Linear layer: hidden=(h,), got {hidden!r}")
    return models.convnet((1, 8, 8), channels=(4, 8), hidden=hidden[0], num_classes=10, seed=seed)


def train_small_network(
    seed: int = 0,
    iterations: int = 200,
    hidden=None,
    arch: str = "tiny",
    n_eval: int = 256,
    lr: float = 0.1,
    batch_size: int = 64,
) -> TrainedNet:
    """Train a small digits network briefly with SGD (momentum 0.9) through :func:`kfac_ref.train.fit`.

    So that the Fisher is that of a *trained* net.  Returns the model, the
    cross-entropy loss and the fixed evaluation batch: the first ``n_eval``
    training samples (the training split is already shuffled).
    """
    from ..data import load_digits
    from ..data.dataset import Dataset
    from ..optim import SGD
    from ..train import fit

    model = build_network(arch, hidden, seed)
    data = load_digits(flatten=(arch != "convnet"))
    if arch == "tiny":
        data = Dataset(
            data.name + " 4×4",
            pool_digits(data.x_train),
            data.y_train,
            pool_digits(data.x_val),
            data.y_val,
            num_classes=data.num_classes,
        )
    if not 1 <= n_eval <= data.n_train:
        raise ValueError(f"n_eval (N) must lie in [1, {data.n_train}], got {n_eval}")
    loss_fn = nn.CrossEntropyLoss()
    history = fit(
        SGD(model, loss_fn, lr=lr, momentum=0.9),
        data,
        iterations,
        batch_size=batch_size,
        seed=seed,
        eval_every=max(int(iterations), 1),
    )
    if history.stopped:
        raise ValueError(f"training the small network failed: {history.stopped}")
    return TrainedNet(model, loss_fn, data.x_train[:n_eval], data.y_train[:n_eval], history)


# ---- 2. The matrices and their errors -------------------------------------------------------------


def fisher_matrices(
    model, loss_fn, x, y, kind: str = "exact", damping: float = 1e-3, damping_mode: str = "factored", seed: int = 0
) -> dict:
    """The matrices of the figure, their damped inverses and their errors.

    Every matrix is a dense (P, P) NumPy array in θ's order (docs/math.md §1): ``exact`` F (``kind``:
    "exact", "mc" or "empirical"), ``block_diagonal`` F_bd (its layer blocks, step 1), ``kfac``
    ⊕_l G_l ⊗ A_l (step 2), ``kfac_tridiag`` F̂ (docs/math.md §11; None unless the model is a chain
    of Linear layers, see ``notes``) and ``ekfac`` (docs/math.md §12); each ``<key>_inv`` is the damped
    inverse its optimizer applies ((F + λI)⁻¹ by Cholesky, K-FAC's from the factors: step 3, F̂'s with
    factored damping whatever ``damping_mode``); ``kfac_damped`` and ``kfac_tridiag_damped`` are the
    damped dense matrices those inverses invert.  Also ``factors`` [(A_l, G_l)], ``grad`` ∇h (P,),
    ``directions`` {key: (damped inverse) ∇h}, ``boundaries`` and ``layout`` (:func:`block_layout`),
    ``layers``, ``kind``, ``damping``, ``damping_mode``, ``n``, ``p``, ``notes``, and ``errors``:
    relative Frobenius errors {"overall", "layers": per diagonal block} of every matrix against F and
    every inverse against (F + λI)⁻¹, ``kfac_vs_block_diagonal`` (step 2 alone), ``kron_identity``
    (step 3: ``kfac_inv`` against ``np.linalg.inv`` of each block of ``kfac_damped``) and ``angles``
    (degrees) of each direction to the exact one.

    Every matrix comes from one set of Fisher seeds (for ``kind="mc"`` labels drawn from
    ``np.random.default_rng(seed)``), through one loop over the curvature structures
    (:mod:`kfac_ref.fisher.curvature`): ``update``, ``refresh(λ)``, ``to_dense``, ``inverse_dense(λ)``.
    """
    if kind not in fisher.KINDS:
        raise ValueError(f"unknown Fisher kind {kind!r}: expected one of {fisher.KINDS}")
    if damping_mode not in DAMPING_MODES:
        raise ValueError(f"unknown damping_mode {damping_mode!r}: expected one of {DAMPING_MODES}")
    lam = check_damping(damping, strict=True)  # the undamped Fisher of a small batch is singular

    f_stats, _ = fisher.fisher_stats(model, loss_fn, x, y, kind, np.random.default_rng(seed))  # one set of seeds
    structures = {  # the figure's columns, each a curvature structure of the same statistics
        "exact": Dense(model),
        "block_diagonal": BlockDiagonal(model),
        "kfac": Kronecker(model, damping_mode=damping_mode),
        "ekfac": EKFAC(model),
    }
    notes = []
    try:  # block-tridiagonal K-FAC is defined for consecutive Linear layers only
        fisher.tridiag.check_chain(model)
        structures["kfac_tridiag"] = BlockTridiagonal(model)
    except TypeError:
        notes.append(
            "Block-tridiagonal K-FAC is left out: its cross-layer factors are defined for "
            "consecutive Linear layers (an MLP) only, and this network has convolutions."
        )
    n = int(x.shape[0])
    grad = to_numpy(batch_grad(model, loss_fn, x, y))  # ∇h  (P,)
    dense_of, inverse_of, directions = {}, {}, {}
    for key, curv in structures.items():
        curv.update(f_stats, n)  # statistic of the batch (one update: the batch value)
        curv.refresh(lam)
        if curv.refit_due(0, True):
            curv.refit(f_stats, n)  # (EKFAC's scalings, in the new bases)
        dense_of[key] = to_numpy(curv.to_dense())  # (P, P), undamped
        inverse_of[key] = to_numpy(curv.inverse_dense(lam))  # (P, P), the inverse its optimizer applies
        directions[key] = inverse_of[key] @ grad
    f, f_inv = dense_of["exact"], inverse_of["exact"]
    factors = [(to_numpy(a), to_numpy(g)) for a, g in structures["kfac"].factors]
    m = {"kfac_tridiag": None, "kfac_tridiag_inv": None, "kfac_tridiag_damped": None}  # (a ConvNet)
    m.update(dense_of)
    m.update({f"{key}_inv": inv for key, inv in inverse_of.items()})
    m["kfac_damped"] = kfac_damped(model, factors, lam, damping_mode)
    if "kfac_tridiag" in structures:
        diag, cross = structures["kfac_tridiag"].factors, structures["kfac_tridiag"].cross_factors
        m["kfac_tridiag_damped"] = to_numpy(fisher.tridiag_to_dense(model, diag, cross, lam))  # F̂_λ
    errors = {key: fisher.layer_errors(model, dense_of[key], f) for key in structures if key != "exact"}
    errors.update({f"{key}_inv": fisher.layer_errors(model, inverse_of[key], f_inv) for key in errors})
    errors["kfac_vs_block_diagonal"] = fisher.layer_errors(model, dense_of["kfac"], dense_of["block_diagonal"])
    errors["kron_identity"] = fisher.rel_frobenius_error(
        inverse_of["kfac"], blockwise_inverse(model, m["kfac_damped"], 0.0)
    )
    errors["angles"] = {
        name: fisher.angle_degrees(d, directions["exact"]) for name, d in directions.items() if name != "exact"
    }
    slices = layer_slices(model)
    return {
        **m,
        "notes": notes,
        "factors": factors,
        "grad": grad,
        "directions": directions,
        "boundaries": [sl.start for sl in slices[1:]],
        "layout": block_layout(model),
        "layers": [repr(layer) for layer in model.param_layers()],
        "kind": kind,
        "damping": lam,
        "damping_mode": damping_mode,
        "n": n,
        "p": int(f.shape[0]),
        "errors": errors,
    }


# ---- 3. Text: the errors table --------------------------------------------------------------------


def _fmt(e: float) -> str:
    return f"{e:.3f}" if e >= 1e-3 else f"{e:.1e}"


def format_errors(matrices: dict) -> str:
    """The errors of :func:`fisher_matrices` as a Markdown table (and a line for step 3)."""
    m, e = matrices, matrices["errors"]
    damp = "(G + √λ/π I)⁻¹ ⊗ (A + π√λ I)⁻¹" if m["damping_mode"] == "factored" else "(G ⊗ A + λI)⁻¹"
    rows = [
        ("step 1: block-diagonal F_bd", "F", e["block_diagonal"], None),
        ("step 2 alone: K-FAC ⊕ G⊗A", "F_bd", e["kfac_vs_block_diagonal"], None),
        ("steps 1+2: K-FAC ⊕ G⊗A", "F", e["kfac"], None),
        ("(F_bd + λI)⁻¹", "(F + λI)⁻¹", e["block_diagonal_inv"], e["angles"]["block_diagonal"]),
        (f"K-FAC inverse ⊕ {damp}", "(F + λI)⁻¹", e["kfac_inv"], e["angles"]["kfac"]),
    ]
    if m["kfac_tridiag"] is not None:
        rows += [
            ("block-tridiagonal K-FAC F̂", "F", e["kfac_tridiag"], None),
            (
                "block-tridiagonal inverse F̂_λ⁻¹ (factored damping)",
                "(F + λI)⁻¹",
                e["kfac_tridiag_inv"],
                e["angles"]["kfac_tridiag"],
            ),
        ]
    rows += [
        ("EKFAC ⊕ (U_G ⊗ U_A) diag(s) (U_G ⊗ U_A)ᵀ", "F", e["ekfac"], None),
        ("EKFAC inverse ⊕ (F_EKFAC + λI)⁻¹", "(F + λI)⁻¹", e["ekfac_inv"], e["angles"]["ekfac"]),
    ]
    lines = [
        f"### Fisher approximations: {m['kind']} Fisher, P = {m['p']:,} parameters, N = {m['n']} samples, "
        f"λ = {m['damping']:g} ({m['damping_mode']} damping for K-FAC)",
        "",
        "| matrix | compared with | relative Frobenius error | per layer (diagonal blocks) "
        "| angle of (·)∇h to (F + λI)⁻¹∇h |",
        "|---|---|---:|---|---:|",
    ]
    for name, ref, err, angle in rows:
        per_layer = ", ".join(_fmt(v) for v in err["layers"])
        lines.append(
            f"| {name} | {ref} | {_fmt(err['overall'])} | {per_layer} | {'' if angle is None else f'{angle:.1f}°'} |"
        )
    lines += [
        "",
        f"Step 3 (the inverse built from the factors) loses nothing: ‖K-FAC inverse from the factors − "
        f"inv(damped K-FAC)‖ / ‖·‖ = {e['kron_identity']:.1e}.",
        f"Layers: {'; '.join(m['layers'])}.",
    ]
    lines += [f"\n{note}" for note in m.get("notes", [])]
    return "\n".join(lines) + "\n"


# ---- 4. The figure --------------------------------------------------------------------------------

#: the figure's columns: (matrix, its damped inverse); block-tridiagonal K-FAC only for an MLP
PANELS = (
    ("exact", "exact_inv"),
    ("block_diagonal", "block_diagonal_inv"),
    ("kfac", "kfac_inv"),
    ("kfac_tridiag", "kfac_tridiag_inv"),
    ("ekfac", "ekfac_inv"),
)


def panel_keys(m: dict) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(row of matrices, row of inverses): the :data:`PANELS` whose matrices ``m`` holds."""
    columns = [c for c in PANELS if m.get(c[0]) is not None]
    return tuple(c[0] for c in columns), tuple(c[1] for c in columns)


def _panel_titles(m: dict) -> dict:
    """key → panel title, with its relative Frobenius error (and, for an inverse, its angle)."""
    e = m["errors"]

    def err(key):
        text = f"error {_fmt(e[key]['overall'])}"
        name = key[: -len("_inv")] if key.endswith("_inv") else None
        return f"{text}, angle {e['angles'][name]:.0f}°" if name else text

    factored = (
        "$\\oplus_l\\,(G_l + \\frac{\\sqrt{\\lambda}}{\\pi} I)^{-1} \\otimes (A_l + \\pi\\sqrt{\\lambda} I)^{-1}$"
    )
    kfac_inv = factored if m["damping_mode"] == "factored" else "$\\oplus_l\\,(G_l \\otimes A_l + \\lambda I)^{-1}$"
    titles = {
        "exact": f"{m['kind']} Fisher $F$",
        "block_diagonal": f"1. block-diagonal $F_{{bd}}$\n{err('block_diagonal')}",
        "kfac": f"2. K-FAC $\\oplus_l\\, G_l \\otimes A_l$\n{err('kfac')}",
        "exact_inv": "$(F + \\lambda I)^{-1}$",
        "block_diagonal_inv": f"$(F_{{bd}} + \\lambda I)^{{-1}}$\n{err('block_diagonal_inv')}",
        "kfac_inv": f"3. {kfac_inv}\n{err('kfac_inv')}",
        "ekfac": f"EKFAC $\\oplus_l\\,(U_G \\otimes U_A)\\,\\mathrm{{diag}}(s_l)\\,(\\cdot)^T$\n{err('ekfac')}",
        "ekfac_inv": f"EKFAC $\\oplus_l\\,(F_{{EKFAC,l}} + \\lambda I)^{{-1}}$\n{err('ekfac_inv')}",
    }
    if m.get("kfac_tridiag") is not None:
        titles["kfac_tridiag"] = f"block-tridiagonal K-FAC $\\hat F$\n{err('kfac_tridiag')}"
        titles["kfac_tridiag_inv"] = f"$\\hat F_\\lambda^{{-1}}$ (factored damping)\n{err('kfac_tridiag_inv')}"
    return titles


def block_layout(model) -> dict:
    """Where each layer's weight and bias start in θ (docs/math.md §1 order), for drawing.

    ``boundaries``   offsets where a layer starts, after the first (layer lines)
    ``bias_starts``  offsets where a layer's bias starts (weight/bias separators)
    ``labels``       [(centre offset, "W1"), (centre offset, "b1"), …] for the axis ticks
    """
    boundaries, bias_starts, labels = [], [], []
    for l, (layer, sl) in enumerate(zip(model.param_layers(), layer_slices(model)), start=1):
        if sl.start:
            boundaries.append(sl.start)
        n_bias = layer.d_out if getattr(layer, "bias", None) is not None else 0
        b0 = sl.stop - n_bias  # θ_l = [vec(W) row by row, b]
        labels.append(((sl.start + b0 - 1) / 2, f"W{l}"))
        if n_bias:
            bias_starts.append(b0)
            labels.append(((b0 + sl.stop - 1) / 2, f"b{l}"))
    return {"boundaries": boundaries, "bias_starts": bias_starts, "labels": labels}


def draw_fisher(
    fig,
    matrices: dict,
    title: str | None = None,
    *,
    scale: str = "linear",
    rows=(0, 1),
    columns=None,
    fontsize: float = 13,
):
    """Draw the figure on ``fig`` (a matplotlib Figure): rows × columns of :func:`panel_keys`.

    Row 0 holds the matrices (exact, block-diagonal, K-FAC, block-tridiagonal K-FAC for an MLP only,
    EKFAC), row 1 their damped inverses; ``rows=(0,)`` draws only the first, ``columns`` (e.g.
    ``("exact", "kfac")``) only those columns, in that order.  Each panel has its own colour bar and
    range, ± the :data:`CLIP_PERCENTILE` percentile of its absolute entries (the few largest, such
    as an inverse's ~1/λ diagonal, saturate: the bar's arrows).  ``scale``: "linear" (diverging,
    centred at 0, the default), "symlog" (symmetric log) or "log" (absolute entries, six decades, zeros
    white).  Solid lines mark the layers, dotted ones the weight/bias split, ticks name the blocks
    (W1, b1, …); titles give the errors and angles.  Returns the axes, (len(rows), columns).
    """
    from . import plots

    draw = {"symlog": plots.symlog_heatmap, "linear": plots.heatmap, "log": plots.log_heatmap}
    if scale not in draw:
        raise ValueError(f"unknown scale {scale!r}: expected one of {SCALES}")
    rows = tuple(rows)
    if not rows or any(r not in (0, 1) for r in rows) or len(set(rows)) != len(rows):
        raise ValueError(f"rows must be a non-empty subset of (0, 1), got {rows!r}")
    titles = _panel_titles(matrices)
    layout = matrices.get("layout") or {"boundaries": matrices["boundaries"], "bias_starts": [], "labels": []}
    keys = panel_keys(matrices)
    if columns is not None:
        columns = tuple(columns)
        if not columns or any(c not in keys[0] for c in columns):
            raise ValueError(f"columns must be a non-empty subset of {keys[0]}, got {columns!r}")
        keys = tuple(tuple(k for m, k in zip(keys[0], row) if m in columns) for row in keys)
        keys = tuple(tuple(sorted(row, key=lambda k: columns.index(k.removesuffix("_inv")))) for row in keys)
    axes = fig.subplots(len(rows), len(keys[0]), squeeze=False)
    for i, r in enumerate(rows):
        for ax, key in zip(axes[i], keys[r]):
            text = titles[key]
            a = np.asarray(matrices[key])
            vmax = float(np.percentile(np.abs(a), CLIP_PERCENTILE)) or float(np.abs(a).max()) or 1.0
            image = draw[scale](ax, a, text, vmax=vmax, colorbar=False)
            clipped = bool((np.abs(a) > vmax).any())
            fig.colorbar(
                image,
                ax=ax,
                fraction=0.05,
                pad=0.02,
                extend="both" if clipped and scale != "log" else ("max" if clipped else "neither"),
            )
            if matrices["p"] > MAX_DRAWN_ROWS:
                image.set_interpolation("antialiased")  # more entries than pixels: average, do not drop
            plots.block_lines(ax, layout["boundaries"], color="k", linewidth=1.2)
            plots.block_lines(ax, layout["bias_starts"], color="0.3", linewidth=0.8, linestyle=":")
            plots.block_labels(ax, layout["labels"], fontsize=fontsize - 2)
            ax.title.set_fontsize(fontsize)
            image.colorbar.ax.tick_params(labelsize=fontsize - 3)
    if title:
        fig.suptitle(title, fontsize=fontsize + 1)
    notes = matrices.get("notes") or []
    if notes:
        fig.supxlabel("\n".join(notes), fontsize=fontsize - 1)
    return axes


def default_title(m: dict) -> str:
    beyond = "block-tridiagonal K-FAC, EKFAC" if m.get("kfac_tridiag") is not None else "EKFAC"
    return (
        f"Full Fisher → block-diagonal → Kronecker-factored (K-FAC), and beyond: {beyond} — "
        f"{m['kind']} Fisher of a trained net, P = {m['p']:,}, N = {m['n']}, λ = {m['damping']:g}"
    )


def _figure(matrices: dict, title: str | None, scale: str):
    from matplotlib.figure import Figure  # no pyplot: no global state, no window

    columns = len(panel_keys(matrices)[0])
    fig = Figure(figsize=(FIGSIZE[0] * columns / len(PANELS), FIGSIZE[1]), layout="constrained")
    draw_fisher(fig, matrices, default_title(matrices) if title is None else title, scale=scale)
    return fig


#: projector-sized: 30 × 12.5 inches for the five columns (6 inches a column), 13-point labels
#: (a 3,000-pixel-wide PNG); four columns (a ConvNet) get 24 inches
FIGSIZE = (30, 12.5)

#: dots per inch: PNG; the images inside SVG/PDF (the heatmaps hold ~10⁶ noisy pixels each)
DPI = {"png": 100, "svg": 72, "pdf": 72}


def _figure_writers(fig, paths):
    """(path, write) pairs saving ``fig`` to each path, in the format its suffix names."""
    out = []
    for path in map(Path, paths):
        fmt = path.suffix.lstrip(".").lower()
        if fmt not in FORMATS:
            raise ValueError(
                f"{path}: unknown figure format {path.suffix!r}, expected one of {', '.join('.' + f for f in FORMATS)}"
            )
        out.append((path, figure_writer(fig, fmt, DPI[fmt])))
    return out


def plot_fisher(
    matrices: dict, path, title: str | None = None, *, svg: bool = False, scale: str = "linear"
) -> list[Path]:
    """Save the figure of :func:`draw_fisher` at ``path`` (.png, or .svg/.pdf), and an SVG beside it if ``svg``.

    All files are written atomically (temporary file, then rename), all or none.
    Returns the paths written.
    """
    path = Path(path)
    paths = [path] + ([path.with_suffix(".svg")] if svg and path.suffix.lower() != ".svg" else [])
    _figure_writers(None, paths)  # check the formats before drawing
    return write_together(_figure_writers(_figure(matrices, title, scale), paths))


# ---- 5. Command line ------------------------------------------------------------------------------


DESCRIPTION = (
    "The article's figure: the full Fisher of a small trained network, its block-diagonal, "
    "K-FAC, block-tridiagonal K-FAC and EKFAC approximations, and their damped inverses."
)


def add_arguments(parser) -> None:
    """The arguments of ``kfac-ref fisher-plot``: ``[--out DIR] [--kind K] [--arch A] [--hidden H…]
    [--damping λ] [--damping-mode M] [--seed S] [--scale SCALE] [--quiet]``."""
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("results/fisher-plot"),
        help="folder for fisher.png, fisher.svg, fisher_errors.md (default: results/fisher-plot)",
    )
    parser.add_argument("--kind", default="exact", choices=fisher.KINDS, help="which Fisher (default: exact)")
    parser.add_argument(
        "--arch",
        default="tiny",
        choices=ARCHS,
        help="tiny: 4×4-pooled digits 16→6→10 (P = 172, every entry visible; the default); "
        "mlp: 64→12→10 (P = 910); convnet: two 3×3 convs + two Linear (P = 1,034)",
    )
    parser.add_argument(
        "--hidden",
        type=int,
        nargs="+",
        default=None,
        metavar="H",
        help="hidden widths (default: 6 for tiny, 12 for the mlp, 16 for the convnet's Linear layer)",
    )
    parser.add_argument("--damping", type=float, default=1e-3, help="λ (default: 1e-3)")
    parser.add_argument(
        "--damping-mode",
        default="factored",
        choices=DAMPING_MODES,
        help="K-FAC's damping: factored [MG15 §6.3] or exact λI (default: factored)",
    )
    parser.add_argument("--seed", type=int, default=0, help="initialisation, batch order, MC labels")
    parser.add_argument(
        "--scale",
        default="linear",
        choices=SCALES,
        help="colour scale of the heatmaps, one colour bar per panel (default: linear, a diverging "
        "map centred at 0; symlog: symmetric log scale; log shows |entries|)",
    )
    parser.add_argument("--quiet", action="store_true", help="print nothing on success")


def main(argv=None) -> int:
    """``python -m kfac_ref.experiments.fisher_plot``: the same as ``kfac-ref fisher-plot`` (:func:`run`)."""
    parser = argparse.ArgumentParser(prog="kfac-ref fisher-plot", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))


def run(args) -> int:
    """``kfac-ref fisher-plot``: writes DIR/fisher.png, fisher.svg and fisher_errors.md."""
    try:
        check_damping(args.damping, strict=True)
        if args.seed < 0:
            raise ValueError(f"seed must be ≥ 0, got {args.seed}")
        if args.out.exists() and not args.out.is_dir():
            raise ValueError(f"--out {args.out} exists and is not a folder")
        start = time.perf_counter()
        net = train_small_network(seed=args.seed, arch=args.arch, hidden=args.hidden)
        m = fisher_matrices(
            net.model, net.loss_fn, net.x, net.y, args.kind, args.damping, args.damping_mode, seed=args.seed
        )
        table = format_errors(m)
        fig = _figure(m, None, args.scale)
        md = args.out / "fisher_errors.md"
        written = write_together(
            _figure_writers(fig, [args.out / "fisher.png", args.out / "fisher.svg"])
            + [(md, lambda tmp: tmp.write_text(table, encoding="utf-8"))]
        )
    except (OSError, ValueError, MemoryError, np.linalg.LinAlgError) as exc:
        print(f"kfac-ref fisher-plot: error: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(table)
        print(f"wrote {', '.join(str(p) for p in written)} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
