"""Per-sample statistics: one forward pass, any number of backpropagated seeds.

Data flows one way (docs/style.md §2):  x → :func:`forward` → outputs f and a
:class:`Trace` → seed vectors e_n = ∂ℓ_n/∂f_n chosen by the caller →
:func:`backward` → for every Linear/Conv2d layer a :class:`LayerStats` holding

    a_bar : (N, T, a_dim)        the homogeneous layer input ā_n (ones column last)
    g     : (S, N, T, d_out)     the pre-activation gradient g_n = ∂ℓ_n/∂s_n, per seed

in *per-sample scale* (never divided by N; docs/math.md §1).  T = 1 for Linear, the
number of output locations for Conv2d.  The per-sample gradient of the layer
matrix W̄ is Σ_t g_{n,t} ā_{n,t}ᵀ ([MG15] §3, [GM16] §2).

What the seeds are decides what comes out: the data-label gradient gives the
batch gradient and the empirical Fisher, sampled labels the Monte-Carlo Fisher,
the columns of S_n (S_n S_nᵀ = Λ_n) the exact Fisher (docs/math.md §3).  Seeds of
shape (S, N, C) carry S vectors per sample through one backward pass; the
trace is only read, so several backward passes on one trace are independent.

Both cores: a model with ``model.workers = k`` > 1 (:class:`~kfac_ref.nn.Sequential`) runs
its forward and backward passes as k contiguous blocks of samples, each block on its own
Python thread (NumPy releases the interpreter lock in its array loops and BLAS calls, and the
samples are independent).  :func:`forward` then returns a :class:`BlockTrace`, which every
function here accepts in place of a :class:`Trace`; the statistics are the same per sample,
merged into whole-batch arrays when read.  Each thread calls BLAS, so BLAS should run one
thread per worker (docs/benchmarks.md: the thread rule).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from .backend import get_xp
from .nn.blocks import concat_in_layout, run_blocks
from .nn.module import ParamLayer


@dataclass(frozen=True)
class Trace:
    """What one forward pass leaves for the backward passes.

    output : ``(N, *out_shape)`` the model outputs f
    caches : one cache per layer, in network order (read-only)

    A Conv2d layer adds its patch matrix ā to its cache the first time ā is read (for the
    trace's later readers).
    """

    output: object
    caches: tuple


@dataclass(frozen=True)
class LayerStats:
    """The statistics of one Linear/Conv2d layer for one backward pass.

    layer : the layer (for d_in, d_out, kind)
    cache : the layer's forward cache, which ā is read from
    g     : (S, N, T, d_out)    pre-activation gradients, one per seed (per-sample scale)
    """

    layer: ParamLayer
    cache: dict
    g: object

    @property
    def a_bar(self):
        """(N, T, a_dim) homogeneous inputs (a Conv2d layer builds its patches when first read)."""
        return self.layer.a_bar(self.cache)

    def per_sample_wbar_grads(self):
        """∇_{W̄} ℓ for every seed and sample: Σ_t g ā ᵀ.  (S, N, d_out, a_dim)"""
        xp = get_xp(self.g)
        return xp.einsum("sntd,ntk->sndk", self.g, self.a_bar)

    def mean_wbar_grad(self):
        """(1/N) Σ_n Σ_t g_{n,t} ā_{n,t}ᵀ for a single seed: the batch gradient of W̄.  (d_out, a_dim)"""
        total = self.sum_wbar_grad()  # a new array: scaled in place
        total /= self.g.shape[1]  # the 1/N of the averaged loss h
        return total

    def sum_wbar_grad(self):
        """Σ_n Σ_t g_{n,t} ā_{n,t}ᵀ for a single seed (a block's share of the batch gradient).  (d_out, a_dim)

        One product (d_out, N·T) × (N·T, a_dim) over all samples and locations (a Conv2d layer's
        in blocks of samples, rebuilding their patches: :meth:`kfac_ref.nn.Conv2d.wbar_grad_sum`).
        """
        if self.g.shape[0] != 1:
            raise ValueError(f"mean_wbar_grad needs one seed per sample, got {self.g.shape[0]}")
        return self.layer.wbar_grad_sum(self.cache, self.g[0])


@dataclass(frozen=True)
class BlockTrace:
    """A forward pass run as contiguous blocks of samples, one :class:`Trace` per block.

    output : ``(N, *out_shape)`` the blocks' outputs, in sample order
    blocks : one :class:`Trace` per block
    bounds : ``((n0, n1), ...)`` the samples of each block
    caches : read on demand: the blocks' caches merged into whole-batch ones (:func:`merge_caches`)
    """

    output: object
    blocks: tuple
    bounds: tuple

    @cached_property
    def caches(self):
        return tuple(merge_caches([t.caches[i] for t in self.blocks]) for i in range(len(self.blocks[0].caches)))


def forward(model, x):
    """Run the model on x (N, ...) keeping every layer's cache: a :class:`Trace`.

    With ``model.workers`` = k > 1, up to k blocks of samples on threads (blocks big enough to gain:
    ``model.sample_blocks``): a :class:`BlockTrace`; a single block gives a :class:`Trace`.
    """

    def trace(bounds):
        n0, n1 = bounds
        out, caches = model.forward_cached(x[n0:n1])
        return Trace(output=out, caches=tuple(caches))

    if getattr(model, "workers", 1) == 1 or x.shape[0] < 2:
        return trace((0, x.shape[0]))
    model.check_input(x)  # the whole batch's error, before any block runs
    bounds = model.sample_blocks(x)
    if len(bounds) == 1:  # blocks too small to gain from threads
        return trace(bounds[0])
    blocks = run_blocks(trace, bounds)
    return BlockTrace(output=concat_in_layout([t.output for t in blocks], 0), blocks=tuple(blocks), bounds=bounds)


def backward(model, trace, seeds, input_grad: bool = False):
    """Backpropagate seed vectors through a traced forward pass (a :class:`Trace`, or a
    :class:`BlockTrace`: each block on its thread, the statistics merged).

    seeds : ``(N, *out_shape)`` or ``(S, N, *out_shape)``, e_n = ∂ℓ_n/∂f_n (per-sample scale)
    Returns ``(stats, grad_input)``: a list of :class:`LayerStats` in network
    order, with g of shape (S, N, T, d_out) (S = 1 when seeds had no seed
    axis), and ∂ℓ_n/∂x_n of shape ``(S, N, *in_shape)`` if ``input_grad`` else None.
    """
    out = trace.output
    if seeds.shape == out.shape:
        seeds = seeds[None]  # (1, N, ...)
    if seeds.shape[1:] != out.shape:
        raise ValueError(
            f"backward: seeds have shape {tuple(seeds.shape)}, expected "
            f"{tuple(out.shape)} or (S, {', '.join(map(str, out.shape))})"
        )
    if isinstance(trace, BlockTrace):
        parts = backward_blocks(model, trace, seeds, input_grad)
        grad = concat_in_layout([gx for _, gx in parts], axis=1) if input_grad else None
        return BlockStats([st for st, _ in parts]), grad  # merged into whole-batch statistics when read
    layers, caches = model.layers, trace.caches
    stats = []
    grad = seeds  # (S, N, ...)
    for i in range(len(layers) - 1, -1, -1):
        layer = layers[i]
        if isinstance(layer, ParamLayer):
            stats.append(LayerStats(layer, caches[i], layer.g_from_grad(grad)))
        if i > 0 or input_grad:
            grad = layer.backward(caches[i], grad)
    stats.reverse()
    return stats, (grad if input_grad else None)


# ---- blocks of samples on threads (model.workers > 1) ----------------------------------------
def backward_blocks(model, trace: BlockTrace, seeds, input_grad: bool = False, then=None) -> list:
    """:func:`backward` of each block of a :class:`BlockTrace` on its own thread: [(stats, grad_input)].

    seeds : ``(S, N, *out_shape)``, split by the trace's blocks.  ``then(stats)``, if given, also
    runs on the block's thread and replaces its stats (e.g. the block's share of the gradient).
    """

    def block(i):
        (n0, n1), t = trace.bounds[i], trace.blocks[i]
        stats, gx = backward(model, t, seeds[:, n0:n1], input_grad)  # a Trace: one thread
        return (stats if then is None else then(stats)), gx

    return run_blocks(block, range(len(trace.blocks)))


def merge_stats(blocks) -> list:
    """Whole-batch :class:`LayerStats` from each block's: ā along N (axis 0), g along N (axis 1)."""
    merged = []
    for parts in zip(*blocks):  # one layer's statistics, block by block
        cache, g = merge_caches([p.cache for p in parts]), concat_in_layout([p.g for p in parts], 1)
        merged.append(LayerStats(parts[0].layer, cache, g))
    return merged


def merge_caches(parts):
    """One layer's whole-batch cache from its blocks' caches (dicts of arrays with samples on axis 0,
    and ``x_shape`` = (N, ...)); None stays None."""
    if parts[0] is None:
        return None
    merged = {}
    for key, value in parts[0].items():
        if any(key not in p for p in parts):
            continue  # built on demand in some blocks only (Conv2d's patches): built again when read
        values = [p[key] for p in parts]
        if hasattr(value, "strides"):
            merged[key] = concat_in_layout(values, 0)
        elif key == "x_shape":
            merged[key] = (sum(v[0] for v in values), *value[1:])
        else:
            merged[key] = value
    return merged


class BlockStats(Sequence):
    """Per-layer statistics of a blocked backward pass, merged into whole-batch :class:`LayerStats` when first read."""

    def __init__(self, blocks):
        self._blocks, self._merged = blocks, None

    @property
    def blocks(self) -> list:
        """Each block's list of :class:`LayerStats`, in sample order (for per-block sums on threads)."""
        return self._blocks

    def _stats(self):
        if self._merged is None:
            self._merged = merge_stats(self._blocks)
        return self._merged

    def __getitem__(self, i):
        return self._stats()[i]

    def __len__(self):
        return len(self._blocks[0])
