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
"""

from __future__ import annotations

from dataclasses import dataclass

from .backend import get_xp
from .nn.im2col import block_size
from .nn.module import ParamLayer


@dataclass(frozen=True)
class Trace:
    """What one forward pass leaves for the backward passes.

    output : ``(N, *out_shape)`` the model outputs f
    caches : one cache per layer, in network order (read-only)
    """

    output: object
    caches: tuple


@dataclass(frozen=True)
class LayerStats:
    """The statistics of one Linear/Conv2d layer for one backward pass.

    layer : the layer (for d_in, d_out, kind)
    a_bar : (N, T, a_dim)       homogeneous inputs
    g     : (S, N, T, d_out)    pre-activation gradients, one per seed (per-sample scale)
    """

    layer: ParamLayer
    a_bar: object
    g: object

    def per_sample_wbar_grads(self):
        """∇_{W̄} ℓ for every seed and sample: Σ_t g ā ᵀ.  (S, N, d_out, a_dim)"""
        xp = get_xp(self.g)
        return xp.einsum("sntd,ntk->sndk", self.g, self.a_bar)

    def mean_wbar_grad(self):
        """(1/N) Σ_n Σ_t g_{n,t} ā_{n,t}ᵀ for a single seed: the batch gradient of W̄.  (d_out, a_dim)"""
        if self.g.shape[0] != 1:
            raise ValueError(f"mean_wbar_grad needs one seed per sample, got {self.g.shape[0]}")
        n, t = self.a_bar.shape[:2]
        if t == 1:  # Linear: g and ā are (N, d_out) and (N, a_dim) views; BLAS reads gᵀ as it is
            g = self.g[0, :, 0]  # (N, d_out)
            return (g.T @ self.a_bar[:, 0]) / n  # the 1/N of the averaged loss h
        # Conv2d: Σ_n g_n ā_n with g_n (d_out, T) a slice of the output gradient and ā_n (T, a_dim) one of
        # the feature-major patches (kfac_ref.nn.im2col): one product per sample, which BLAS reads in
        # place (no transposed copy of either), summed over blocks of samples through a reused buffer.
        xp, d_out, a_dim = get_xp(self.g), self.layer.d_out, self.layer.a_dim
        g = self.g[0].transpose(0, 2, 1)  # (N, d_out, T), a view of the output gradient
        dtype = xp.result_type(g.dtype, self.a_bar.dtype)
        block = block_size(n, d_out * a_dim * dtype.itemsize)
        per_sample = xp.empty((block, d_out, a_dim), dtype=dtype)  # reused
        total = xp.zeros((d_out, a_dim), dtype=dtype)
        for n0 in range(0, n, block):
            b = min(block, n - n0)
            total += xp.matmul(g[n0 : n0 + b], self.a_bar[n0 : n0 + b], out=per_sample[:b]).sum(axis=0)
        return total / n  # the 1/N of the averaged loss h


def forward(model, x) -> Trace:
    """Run the model on x (N, ...) keeping every layer's cache."""
    out, caches = model.forward_cached(x)
    return Trace(output=out, caches=tuple(caches))


def backward(model, trace: Trace, seeds, input_grad: bool = False):
    """Backpropagate seed vectors through a traced forward pass.

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
    layers, caches = model.layers, trace.caches
    stats = []
    grad = seeds  # (S, N, ...)
    for i in range(len(layers) - 1, -1, -1):
        layer = layers[i]
        if isinstance(layer, ParamLayer):
            stats.append(LayerStats(layer, layer.a_bar(caches[i]), layer.g_from_grad(grad)))
        if i > 0 or input_grad:
            grad = layer.backward(caches[i], grad)
    stats.reverse()
    return stats, (grad if input_grad else None)
