"""How big is a Fisher block, and how big are its Kronecker factors? (docs/math.md §9)

The article's AlexNet figure, recomputed by counting.  For one layer with weight matrix
W̄ : (d_out, d_in), the bias folded in as the last column (d_in counts it; a convolution has
d_in = C_in_per_group · kh · kw + 1), K-FAC replaces the (d_in·d_out)² entries of the layer's
dense Fisher block by the d_in² + d_out² of two factors, F_layer ≈ G ⊗ A [MG15 §3, GM16].  A
grouped convolution (γ groups) is γ independent layers with d_out/γ outputs each, every count
summed over them (:class:`LayerSize`); the full Fisher over all P parameters has P² entries.

This is also the project's one cost model, built on the same counts: entries stored and
inversion cost (:func:`storage_and_cost`), FLOPs per layer and phase of a K-FAC iteration
(:func:`flop_model`), and the entries a distributed K-FAC step communicates
(:func:`payload_entries` for this project's models, :func:`communication_per_step` at [O19]'s scale).

Run it:  ``python -m kfac_ref.experiments.sizes --arch alexnet --out results/sizes``
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..fisher.kron import inverse_shapes
from ..io import write_figure, write_text

KINDS = ("conv", "linear")
BYTES_PER_ENTRY = 4  # float32, for the "how much memory" notes


# ---- One row of the table -------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerSize:
    """Sizes of one layer's Fisher block and Kronecker factors (docs/math.md §9).

    All counts are exact Python ints (no float rounding, no int64 overflow).
    """

    name: str  # "conv1", "fc6", …
    kind: str  # "conv" | "linear"
    d_in: int  # input dimension INCLUDING the bias coordinate if there is one (per group for a conv)
    d_out: int  # output dimension: out_features, or C_out summed over all groups
    groups: int = 1  # γ: conv groups (1 for linear layers)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"LayerSize {self.name!r}: kind={self.kind!r}, expected one of {KINDS}")
        for field in ("d_in", "d_out", "groups"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"LayerSize {self.name!r}: {field}={value!r}, expected a positive int")
        if self.kind == "linear" and self.groups != 1:
            raise ValueError(f"LayerSize {self.name!r}: a linear layer has groups=1, got {self.groups}")
        if self.d_out % self.groups:
            raise ValueError(f"LayerSize {self.name!r}: d_out={self.d_out} is not divisible by groups γ={self.groups}")

    @property
    def d_out_per_group(self) -> int:
        """d_out / γ: the output dimension of each group's block."""
        return self.d_out // self.groups

    @property
    def params(self) -> int:
        """γ · d_in · (d_out/γ) = d_in · d_out: weights plus biases."""
        return self.groups * self.d_in * self.d_out_per_group

    @property
    def fisher_entries(self) -> int:
        """γ · (d_in · d_out/γ)²: entries of the layer's dense Fisher block(s)."""
        return self.groups * (self.d_in * self.d_out_per_group) ** 2

    @property
    def a_entries(self) -> int:
        """γ · d_in²: entries of the input factor(s) A = E[ā āᵀ]."""
        return self.groups * self.d_in**2

    @property
    def g_entries(self) -> int:
        """γ · (d_out/γ)²: entries of the output-gradient factor(s) G = E[g gᵀ]."""
        return self.groups * self.d_out_per_group**2

    @property
    def factor_entries(self) -> int:
        """A entries + G entries: what K-FAC stores instead of the block."""
        return self.a_entries + self.g_entries

    @property
    def packed_factor_entries(self) -> int:
        """γ · (d_in(d_in+1)/2 + (d_out/γ)(d_out/γ+1)/2): the factors' upper triangles (what is communicated)."""
        return self.groups * (self.d_in * (self.d_in + 1) // 2 + self.d_out_per_group * (self.d_out_per_group + 1) // 2)

    @property
    def ratio(self) -> float:
        """Fisher block entries / (A + G) entries: K-FAC's saving for this layer."""
        return self.fisher_entries / self.factor_entries


def conv_size(name: str, c_in: int, c_out: int, kernel: int, groups: int = 1, bias: bool = True) -> LayerSize:
    """A kh = kw = kernel convolution: d_in = (C_in/γ)·kh·kw + 1, d_out = C_out (no +1 without a bias)."""
    if c_in % groups:
        raise ValueError(f"{name}: C_in={c_in} is not divisible by groups γ={groups}")
    return LayerSize(name, "conv", (c_in // groups) * kernel * kernel + int(bias), c_out, groups)


def linear_size(name: str, n_in: int, n_out: int) -> LayerSize:
    """A fully-connected layer: d_in = in_features + 1, d_out = out_features."""
    return LayerSize(name, "linear", n_in + 1, n_out)


# ---- The three AlexNets ---------------------------------------------------------------------------


def _alexnet(channels: tuple[int, ...], groups: tuple[int, ...], n_classes: int = 1000) -> tuple[LayerSize, ...]:
    """AlexNet on 224×224 ImageNet: five convolutions then three FC layers.

    conv1 11×11 from RGB, conv2 5×5, conv3-5 3×3; the last conv's output is
    pooled to 6×6, so fc6 sees C5·6·6 = 9,216 features.
    """
    kernels = (11, 5, 3, 3, 3)
    c_ins = (3,) + channels[:-1]
    convs = tuple(
        conv_size(f"conv{i + 1}", c_in, c_out, k, g)
        for i, (c_in, c_out, k, g) in enumerate(zip(c_ins, channels, kernels, groups))
    )
    fcs = (
        linear_size("fc6", channels[-1] * 6 * 6, 4096),
        linear_size("fc7", 4096, 4096),
        linear_size("fc8", 4096, n_classes),
    )
    return convs + fcs


ARCHS: dict[str, tuple[LayerSize, ...]] = {
    # Krizhevsky et al. 2012 drawn on one GPU: conv channels 96-256-384-384-256.
    "alexnet": _alexnet((96, 256, 384, 384, 256), (1, 1, 1, 1, 1)),
    # The original two-GPU net: conv2, conv4, conv5 only see their own GPU's half.
    "alexnet-grouped": _alexnet((96, 256, 384, 384, 256), (1, 2, 1, 2, 2)),
    # torchvision.models.alexnet (the "one weird trick" variant): 64-192-384-256-256.
    "alexnet-torchvision": _alexnet((64, 192, 384, 256, 256), (1, 1, 1, 1, 1)),
}


def _resnet50(n_classes: int = 1000) -> tuple[tuple[LayerSize, ...], int]:
    """ResNet-50 (He et al. 2016; torchvision's resnet50) on ImageNet: 53 convolutions and one FC layer.

    Convolutions have no bias (a batch norm follows each); stages of 3, 4, 6, 3 bottlenecks
    (1×1 in→w, 3×3 w→w, 1×1 w→4w) with w = 64, 128, 256, 512, and a 1×1 projection on the
    shortcut of each stage's first block.  Returns (rows, batch-norm parameters): the 2·C scales
    and shifts of the 53 batch norms are not K-FAC layers ([O19] treats them apart).
    """
    rows = [conv_size("conv1", 3, 64, 7, bias=False)]
    bn = 2 * 64
    c_in = 64
    for stage, (blocks, w) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), start=2):
        for b in range(blocks):
            tag = f"conv{stage}_{b + 1}"
            rows += [
                conv_size(f"{tag}a", c_in, w, 1, bias=False),
                conv_size(f"{tag}b", w, w, 3, bias=False),
                conv_size(f"{tag}c", w, 4 * w, 1, bias=False),
            ]
            bn += 2 * (w + w + 4 * w)
            if b == 0:
                rows.append(conv_size(f"{tag}_proj", c_in, 4 * w, 1, bias=False))
                bn += 2 * 4 * w
            c_in = 4 * w
    rows.append(linear_size("fc", c_in, n_classes))
    return tuple(rows), bn


ARCHS["resnet50"], NORM_PARAMS = _resnet50()[0], {"resnet50": _resnet50()[1]}  # NORM_PARAMS: batch-norm γ, β


def _project_models() -> dict:
    """This project's own networks (kfac_ref.models), built on demand."""
    from .. import models

    return {
        "digits-mlp": lambda: models.mlp(64, hidden=(32,)),
        "digits-convnet": lambda: models.convnet(),
        "cifar-convnet": lambda: models.convnet(in_shape=(3, 32, 32), channels=(8, 16, 16), hidden=32),
    }


PROJECT_MODELS = ("digits-mlp", "digits-convnet", "cifar-convnet")


def layer_sizes(arch: str) -> list[LayerSize]:
    """The LayerSize rows of a named architecture: a key of ARCHS or of PROJECT_MODELS."""
    if arch in ARCHS:
        return list(ARCHS[arch])
    if arch in PROJECT_MODELS:
        return sizes_from_layers(_project_models()[arch]().param_layers())
    raise ValueError(f"unknown arch {arch!r}; choose one of: {', '.join((*ARCHS, *PROJECT_MODELS))}")


def sizes_from_layers(layers: Iterable) -> list[LayerSize]:
    """LayerSize rows for any model's layers.

    Each layer needs ``kind`` ('linear' | 'conv'), ``a_dim`` (d_in, bias
    included, per group), ``g_dim`` (d_out, all groups) and ``name``; an
    optional ``groups`` attribute (γ, default 1) marks a grouped convolution.
    """
    rows = []
    for i, layer in enumerate(layers):
        kind = getattr(layer, "kind", None)
        name = getattr(layer, "name", None) or f"{kind}{i}"
        if kind not in KINDS:
            raise ValueError(f"layer {i} ({name!r}): kind={kind!r}, expected one of {KINDS}")
        rows.append(LayerSize(name, kind, int(layer.a_dim), int(layer.g_dim), int(getattr(layer, "groups", 1))))
    return rows


def totals(rows: Iterable[LayerSize]) -> dict[str, int]:
    """Sums over the layers, plus the full P×P Fisher for comparison.

    params               P = Σ d_in·d_out
    fisher_entries       Σ block entries (the block-diagonal Fisher)
    a_entries, g_entries Σ of each factor's entries
    factor_entries       a_entries + g_entries (what K-FAC stores)
    full_fisher_entries  P² (the full Fisher, all cross-layer blocks included)
    """
    rows = list(rows)
    out = {
        "params": sum(r.params for r in rows),
        "fisher_entries": sum(r.fisher_entries for r in rows),
        "a_entries": sum(r.a_entries for r in rows),
        "g_entries": sum(r.g_entries for r in rows),
    }
    out["factor_entries"] = out["a_entries"] + out["g_entries"]
    out["full_fisher_entries"] = out["params"] ** 2
    return out


# ---- Text: numbers and the Markdown table ---------------------------------------------------------


def sci(x: float, digits: int = 3) -> str:
    """Short scientific notation with `digits` significant figures: 1221083136 → '1.22e9'."""
    mantissa, exponent = f"{float(x):.{digits - 1}e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def big(x: int) -> str:
    """Comma-separated below 100,000, scientific notation above: 9216 → '9,216', 132496 → '1.32e5'."""
    return f"{x:,}" if x < 100_000 else sci(x)


def human_bytes(n_entries: int, bytes_per_entry: int = BYTES_PER_ENTRY) -> str:
    """Memory of n_entries float32 numbers in decimal units: 1.68e13 entries → '67.1 TB'."""
    n = float(n_entries * bytes_per_entry)
    for unit in ("B", "kB", "MB", "GB", "TB", "PB", "EB"):
        if n < 1000 or unit == "EB":
            return f"{n:.3g} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _squares(d: int, groups: int) -> str:
    """'364² = 1.32e5', or '2 × 1,201² = 2.88e6' for a grouped layer."""
    prefix = f"{groups} × " if groups > 1 else ""
    return f"{prefix}{d:,}² = {big(groups * d * d)}"


def _layer_label(r: LayerSize) -> str:
    return f"{r.name} (γ={r.groups})" if r.groups > 1 else r.name


def _dims(r: LayerSize) -> str:
    if r.groups > 1:
        return f"{r.groups} × ({r.d_in:,} → {r.d_out_per_group:,})"
    return f"{r.d_in:,} → {r.d_out:,}"


def _tick_label(r: LayerSize) -> str:
    """Two or three short lines under a bar group: name, d_in → d_out, groups."""
    if r.groups > 1:
        return f"{r.name}\n{r.d_in:,} → {r.d_out_per_group:,}\n× {r.groups} groups"
    return f"{r.name}\n{r.d_in:,} → {r.d_out:,}"


def format_table(rows: Iterable[LayerSize], title: str) -> str:
    """The docs/math.md §9 table as Markdown, with a totals line and a memory note."""
    rows = list(rows)
    t = totals(rows)
    lines = [
        f"### {title}",
        "",
        "| layer | d_in → d_out | params | Fisher block entries | A entries | G entries | block / (A+G) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {_layer_label(r)} | {_dims(r)} | {r.params:,} | {sci(r.fisher_entries)} "
            f"| {_squares(r.d_in, r.groups)} | {_squares(r.d_out_per_group, r.groups)} | {sci(r.ratio)} |"
        )
    lines.append(
        f"| **total** | | **{t['params']:,}** | **{sci(t['fisher_entries'])}** "
        f"| **{big(t['a_entries'])}** | **{big(t['g_entries'])}** "
        f"| **{sci(t['fisher_entries'] / t['factor_entries'])}** |"
    )
    lines += [
        "",
        f"P = {t['params']:,} parameters. "
        f"Full P×P Fisher: {sci(t['full_fisher_entries'])} entries "
        f"({human_bytes(t['full_fisher_entries'])} in float32); "
        f"block-diagonal: {sci(t['fisher_entries'])} ({human_bytes(t['fisher_entries'])}); "
        f"Kronecker factors A, G: {sci(t['factor_entries'])} ({human_bytes(t['factor_entries'])}).",
    ]
    return "\n".join(lines) + "\n"


def format_totals(archs: Iterable[str]) -> str:
    """One line per architecture: 'alexnet  62,378,344 parameters …'."""
    lines = []
    for arch in archs:
        t = totals(layer_sizes(arch))
        lines.append(
            f"{arch:<20} {t['params']:>11,} parameters   "
            f"block-diagonal Fisher {sci(t['fisher_entries'])} entries   "
            f"K-FAC factors {sci(t['factor_entries'])} entries"
        )
    return "\n".join(lines) + "\n"


def storage_and_cost(rows) -> dict:
    """Entries stored and inversion flops (∝ d³) for the full Fisher, its blocks and K-FAC's factors.

    ``rows``: :class:`kfac_ref.experiments.sizes.LayerSize` (e.g. from ``sizes_from_layers``).
    Entries: P², Σ_l p_l², Σ_l (d_in² + d_out²).  Inversion: P³, Σ_l p_l³, Σ_l (d_in³ + d_out³)
    (exact Python ints; per group for grouped convolutions).
    """
    rows = list(rows)
    t = totals(rows)
    return {
        "params": t["params"],
        "full_entries": t["full_fisher_entries"],
        "block_entries": t["fisher_entries"],
        "factor_entries": t["factor_entries"],
        "full_flops": t["params"] ** 3,
        "block_flops": sum(r.groups * (r.d_in * r.d_out_per_group) ** 3 for r in rows),
        "factor_flops": sum(r.groups * (r.d_in**3 + r.d_out_per_group**3) for r in rows),
    }


def format_storage_and_cost(rows, title: str) -> str:
    """:func:`storage_and_cost` as a Markdown table, with the savings over the full Fisher."""
    c = storage_and_cost(rows)
    table = [
        ("full Fisher", "P²", c["full_entries"], "P³", c["full_flops"]),
        ("block-diagonal", "Σ p_l²", c["block_entries"], "Σ p_l³", c["block_flops"]),
        ("K-FAC factors", "Σ (d_in² + d_out²)", c["factor_entries"], "Σ (d_in³ + d_out³)", c["factor_flops"]),
    ]
    lines = [
        f"### {title}: P = {c['params']:,}",
        "",
        "| matrix | entries stored | fewer than P² by | inversion cost ∝ | less than P³ by |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, e_sym, entries, f_sym, flops in table:
        lines.append(
            f"| {name} | {e_sym} = {sci(entries)} | {sci(c['full_entries'] / entries)}× "
            f"| {f_sym} = {sci(flops)} | {sci(c['full_flops'] / flops)}× |"
        )
    return "\n".join(lines) + "\n"


# ---- Cost per iteration: FLOPs by phase (one process), entries communicated (R ranks) -------------


def output_locations(model, in_shape) -> list[int]:
    """T per parameter layer: output locations (H·W) of a Conv2d, 1 for a Linear."""
    shape, out = tuple(in_shape), []
    for layer in model.layers:
        nxt, kind = layer.output_shape(shape), getattr(layer, "kind", None)  # parameter-free layers have none
        if kind == "conv":
            out.append(math.prod(nxt[1:]))
        elif kind == "linear":
            out.append(1)
        shape = nxt
    return out


def flop_model(model, in_shape, batch_size: int, T_cov: int = 1, T_inv: int = 1) -> list[dict]:
    """FLOPs per layer of one K-FAC iteration, by phase (orders of magnitude, constants as written).

    model : a Sequential of Linear/Conv2d (+ parameter-free) layers; in_shape : per-sample input shape.
    With d_in = a_dim (bias included), d_out = g_dim, T the layer's output locations, B the batch:

        forward_backward  3 · 2 B T d_in d_out      (forward, backward to inputs, weight gradient)
        seed_backward     2 B T d_in d_out / T_cov  (the Monte-Carlo seeds backpropagated, docs/math.md §3)
        statistics        B T (d_in² + d_out²) / T_cov   (A = E[ā āᵀ], G = E[g gᵀ], docs/math.md §4–5)
        inversion         (d_in³ + d_out³) / T_inv       (the damped inverses, docs/math.md §6.1)
        precondition      d_out d_in (d_in + d_out)      (G⁻¹ ∇_W̄ h A⁻¹, every step)

    Returns one dict per parameter layer: {"layer", "d_in", "d_out", "T", and the five counts}
    (floats: amortised counts need not be integers).
    """
    b = int(batch_size)
    rows = []
    for i, (layer, t) in enumerate(zip(model.param_layers(), output_locations(model, in_shape))):
        din, dout = layer.a_dim, layer.g_dim
        rows.append(
            {
                "layer": f"{layer.kind}{i}",
                "d_in": din,
                "d_out": dout,
                "T": t,
                "forward_backward": 6.0 * b * t * din * dout,
                "seed_backward": 2.0 * b * t * din * dout / T_cov,
                "statistics": b * t * (din**2 + dout**2) / T_cov,
                "inversion": (din**3 + dout**3) / T_inv,
                "precondition": float(dout * din * (din + dout)),
            }
        )
    return rows


def inverse_entries(layer, damping_mode: str = "factored") -> int:
    """Entries of one layer's shared inverse (step 3's payload)."""
    return sum(math.prod(s) for s in inverse_shapes(damping_mode, layer.a_dim, layer.g_dim).values())


def payload_entries(model, batch: int, kind: str = "mc", damping_mode: str = "factored") -> dict:
    """Entries per distributed K-FAC step, counted (what :class:`kfac_ref.mpi.Communicator` measures).

    gradient all-reduce    P + 1 (the loss travels with ∇h), per rank
    statistics all-reduce  Σ_l a(a+1)/2 + d(d+1)/2 (upper triangles), per rank
    outputs all-gather     B·C over all ranks ('mc' only)
    inverse sharing        Σ_l inverse entries, over all ranks (each layer once, by its owner)
    """
    layers = model.param_layers()
    return {
        "gradient all-reduce": model.num_params + 1,
        "statistics all-reduce": sum(r.packed_factor_entries for r in sizes_from_layers(layers)),
        "outputs all-gather": batch * layers[-1].g_dim if kind == "mc" else 0,
        "inverse sharing": sum(inverse_entries(l, damping_mode) for l in layers),
    }


def communication_per_step(rows, params: int, ranks: int) -> dict:
    """Entries each rank sends per step, with ring collectives, from a size table ([O19]'s scale).

    rows : :class:`LayerSize` (d_in, d_out per layer);  params : P (all of them).
    An all-reduce of n entries sends 2 (R−1)/R · n per rank (reduce-scatter, then all-gather);
    an all-gather (or a reduce-scatter) of n entries in all sends (R−1)/R · n per rank.

    - gradient: all-reduce of P;
    - factors: all-reduce of Σ d_in² + d_out² (full), or of the upper triangles Σ d(d+1)/2
      ("packed", [O19]'s symmetry-aware communication, what this module sends), or a
      reduce-scatter of the packed factors to their owners (half the all-reduce);
    - inverses: all-gather of Σ d_in² + d_out² (packed: Σ d(d+1)/2).
    """
    f = (ranks - 1) / ranks
    full = sum(r.a_entries + r.g_entries for r in rows)
    packed = sum(r.packed_factor_entries for r in rows)
    return {
        "gradient": 2 * f * params,
        "factors": 2 * f * full,
        "factors, packed": 2 * f * packed,
        "factors, packed, reduce-scatter": f * packed,
        "inverses": f * full,
        "inverses, packed": f * packed,
    }


# ---- The figure -----------------------------------------------------------------------------------


def plot_sizes(rows: Iterable[LayerSize], path, title: str = "Fisher block vs Kronecker factor sizes") -> Path:
    """Grouped bars per layer on a log axis: Fisher block vs A vs G entries.

    Left panel: every layer, with the full P×P Fisher as a dashed line.  Right
    panel: the final fully-connected layer in float32 bytes, dense block
    against its two factors.  The format follows the suffix of `path` (.png,
    .svg, .pdf); the figure is built on a bare matplotlib Figure (no pyplot,
    no global state, no display needed).
    """
    from matplotlib.figure import Figure  # (plotting is optional at import time)

    rows = list(rows)
    if not rows:
        raise ValueError("plot_sizes: no layers to plot")
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    t = totals(rows)

    fig = Figure(figsize=(12, 5.0), layout="constrained")
    ax, ax_last = fig.subplots(1, 2, width_ratios=(3.2, 1))
    colors = {"block": "#c0392b", "A": "#2e86c1", "G": "#28b463"}

    # (1) every layer, then "all layers" (the sums): three bars each
    width = 0.27
    xs = range(len(rows) + 1)
    series = (
        (
            "dense Fisher block  (d_in·d_out)²",
            "block",
            [r.fisher_entries for r in rows] + [t["fisher_entries"]],
            -width,
        ),
        ("A = E[ā āᵀ]  d_in²", "A", [r.a_entries for r in rows] + [t["a_entries"]], 0.0),
        ("G = E[g gᵀ]  d_out²", "G", [r.g_entries for r in rows] + [t["g_entries"]], width),
    )
    for label, key, values, dx in series:
        ax.bar([x + dx for x in xs], values, width, label=label, color=colors[key])

    def label(axes, text, xy, dy, **kw):  # a small label dy points above (below if < 0) a point
        kw = {"ha": "center", "va": "bottom" if dy > 0 else "top", "fontsize": 8, **kw}
        axes.annotate(text, xy, xytext=(kw.pop("dx", 0), dy), textcoords="offset points", **kw)

    for x, value in zip(xs, series[0][2]):  # the block's size, written down inside its bar
        label(ax, sci(value), (x - width, value), -4, rotation=90, color="white", fontweight="bold")
    ax.axvline(len(rows) - 0.5, color="0.5", lw=0.8)
    label(
        ax,
        f"A + G, all layers:\n{sci(t['factor_entries'])} entries\n= {human_bytes(t['factor_entries'])}",
        (len(rows) + width, max(t["a_entries"], t["g_entries"])),
        4,
    )
    ax.axhline(t["full_fisher_entries"], color="k", ls="--", lw=1)
    label(
        ax,
        f"full P×P Fisher, P = {t['params']:,}: {sci(t['full_fisher_entries'])} entries",
        (len(rows) - 0.5, t["full_fisher_entries"]),
        3,
        dx=-2,
        ha="right",
    )
    ax.set_yscale("log")
    ax.set_ylim(top=t["full_fisher_entries"] * 1e3)  # room above the dashed line for the legend
    ax.set_xticks(
        list(xs), [_tick_label(r) for r in rows] + [f"all layers\nP = {t['params']:,}\nblock-diagonal"], fontsize=8
    )
    grouped = [r.name for r in rows if r.groups > 1]
    if grouped:  # what the grouped convolutions' counts leave out
        import textwrap

        note = (
            f"Grouped convolutions ({', '.join(grouped)}): each group is counted as its own layer, with a "
            "dense block and its own A and G. Left out: the Fisher's blocks between the groups of one layer "
            "(dropped like the cross-layer blocks), and the weights a grouped layer does not have (a group "
            "sees only its own C_in/γ input channels)."
        )
        fig.supxlabel(textwrap.fill(note, 170), fontsize=8, ha="left", x=0.01)
    ax.set_ylabel("matrix entries (log scale)")
    ax.set_title(title)
    ax.legend(loc="upper left", ncols=3, fontsize=8, frameon=False)
    ax.grid(axis="y", which="major", alpha=0.3)

    # (2) the final fully-connected layer, in bytes
    last = rows[-1]
    names = ("Fisher\nblock", "A", "G", "A + G")
    entries = (last.fisher_entries, last.a_entries, last.g_entries, last.factor_entries)
    bars = ax_last.bar(
        names, [BYTES_PER_ENTRY * e for e in entries], color=[colors["block"], colors["A"], colors["G"], "#7f8c8d"]
    )
    for bar, e in zip(bars, entries):
        label(ax_last, human_bytes(e), (bar.get_x() + bar.get_width() / 2, bar.get_height()), 3)
    ax_last.set_yscale("log")
    ax_last.set_ylim(top=BYTES_PER_ENTRY * last.fisher_entries * 30)
    ax_last.set_ylabel("float32 bytes (log scale)")
    ax_last.set_title(
        f"last layer {last.name}: {_dims(last)}\nK-FAC stores {sci(last.ratio)}× fewer entries", fontsize=10
    )
    ax_last.grid(axis="y", which="major", alpha=0.3)

    write_figure(fig, path, fmt=fmt, dpi=120)
    return path


# ---- Command line ---------------------------------------------------------------------------------

TITLES = {
    "alexnet": "AlexNet, ungrouped (96-256-384-384-256)",
    "alexnet-grouped": "AlexNet, original two-group (conv2, conv4, conv5 with γ = 2)",
    "alexnet-torchvision": "AlexNet, torchvision (64-192-384-256-256)",
    "digits-mlp": "kfac_ref digits MLP (64-32-10)",
    "digits-convnet": "kfac_ref digits ConvNet (conv 8, conv 16, fc 32, fc 10)",
    "cifar-convnet": "kfac_ref CIFAR-10 ConvNet of the README (conv 8, conv 16, conv 16, fc 32, fc 10)",
    "resnet50": "ResNet-50 on ImageNet (53 convolutions without bias, fc 1000; batch norms not counted)",
}


def add_arguments(parser) -> None:
    """The arguments of ``kfac-ref sizes``: ``--arch {alexnet,alexnet-grouped,alexnet-torchvision,…,all}
    [--out DIR] [--quiet]``."""
    parser.add_argument(
        "--arch",
        default="alexnet",
        choices=(*ARCHS, *PROJECT_MODELS, "all"),
        help="alexnet prints the three AlexNet variants; all adds this project's models (default: alexnet)",
    )
    parser.add_argument("--out", type=Path, default=None, help="folder for sizes_<arch>.md and sizes_<arch>.png")
    parser.add_argument("--quiet", action="store_true", help="print only the totals")


DESCRIPTION = "Fisher block vs Kronecker factor sizes for AlexNet (docs/math.md §9)."


def main(argv=None) -> int:
    """``python -m kfac_ref.experiments.sizes``: the same as ``kfac-ref sizes`` (:func:`run`)."""
    parser = argparse.ArgumentParser(prog="kfac-ref sizes", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))


def run(args) -> int:
    """``kfac-ref sizes``.

    ``--arch alexnet`` and ``--arch all`` print all three AlexNet variants (the
    ungrouped one is the article's figure) and a totals comparison; a single
    variant name prints that variant only.  With ``--out DIR`` each printed
    table is also written to ``DIR/sizes_<arch>.md`` with its figure
    ``DIR/sizes_<arch>.png``.  ``--quiet`` prints only the totals.
    """
    archs = {"alexnet": [a for a in ARCHS if a.startswith("alexnet")], "all": [*ARCHS, *PROJECT_MODELS]}.get(
        args.arch, [args.arch]
    )
    try:
        for arch in archs:
            table = format_table(layer_sizes(arch), TITLES[arch])
            if not args.quiet:
                print(table)
            if args.out is not None:
                md = args.out / f"sizes_{arch}.md"
                write_text(md, table)
                png = plot_sizes(layer_sizes(arch), args.out / f"sizes_{arch}.png", TITLES[arch])
                if not args.quiet:
                    print(f"wrote {md} and {png}\n")
        print(format_totals(archs), end="")
    except (OSError, ValueError) as exc:
        print(f"kfac-ref sizes: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
