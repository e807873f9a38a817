"""Gradients in θ's flat order: the batch gradient and per-sample gradients.

Both come from the same per-sample statistics (:mod:`kfac_ref.backprop`) with the
data labels as seeds, e_n = ∂ℓ(f_n, y_n)/∂f_n:

    per-sample  ∇ℓ_n = [Σ_t g_{n,t} ā_{n,t}ᵀ]_{layers}          (N, P)
    batch       ∇h   = (1/N) Σ_n ∇ℓ_n                          (P,)

The batch gradient is contracted over samples directly and never forms the
(N, P) matrix, so it costs what ordinary backprop costs.
"""

from __future__ import annotations

from dataclasses import dataclass

from .backend import get_xp
from .backprop import BlockStats, BlockTrace, backward, backward_blocks, forward
from .params import wbar_to_flat


def check_batch(model, loss_fn, x, y) -> None:
    """Clear errors for mismatched batch sizes (targets are checked by the loss)."""
    if not hasattr(x, "shape") or not hasattr(y, "shape"):
        raise TypeError("inputs and targets must be arrays")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"inputs have {x.shape[0]} samples but targets have {y.shape[0]}")
    if x.shape[0] < 1:
        raise ValueError("the batch is empty")


@dataclass(frozen=True)
class GradResult:
    """One forward + backward with the data labels.

    loss  : averaged loss h (Python float)
    grad  : ∇h in θ's order (P,)
    trace : the forward trace (reusable for more seeds, e.g. Fisher seeds)
    stats : per-layer :class:`~kfac_ref.backprop.LayerStats` for the label seeds
    layer_grads : per layer ∇_{W̄} h, (d_out, a_dim) — ``grad`` is their concatenation in θ's order
    """

    loss: float
    grad: object
    trace: object
    stats: list
    layer_grads: list


def loss_and_grad(model, loss_fn, x, y) -> GradResult:
    """Forward, averaged loss and batch gradient, keeping the trace and statistics.

    With ``model.workers`` > 1 each block of samples runs its forward, backward and its share
    Σ_{n ∈ block} Σ_t g ā ᵀ of every layer's gradient on its own thread (:mod:`kfac_ref.backprop`);
    the shares are added in block order, and the statistics merged only when read.
    """
    check_batch(model, loss_fn, x, y)
    trace = forward(model, x)
    loss = float(loss_fn(trace.output, y))  # validates the outputs and targets
    seeds = loss_fn._grad(trace.output, y)[None]  # (1, N, ...) (validated just above)
    xp, n = get_xp(trace.output), x.shape[0]
    if isinstance(trace, BlockTrace):
        parts = backward_blocks(model, trace, seeds, then=lambda st: (st, [s.sum_wbar_grad() for s in st]))
        stats = BlockStats([st for (st, _), _ in parts])
        layers = [st.layer for st in parts[0][0][0]]
        layer_grads = [sum(shares) / n for shares in zip(*(sums for (_, sums), _ in parts))]  # (d_out, a_dim) each
    else:
        stats, _ = backward(model, trace, seeds)
        layers = [st.layer for st in stats]
        layer_grads = [st.mean_wbar_grad() for st in stats]  # (d_out, a_dim) each
    grad = xp.empty(sum(layer.num_params for layer in layers), dtype=xp.result_type(*layer_grads))  # (P,)
    start = 0
    for layer, m in zip(layers, layer_grads):  # each layer's W̄ gradient copied once into its slice of θ's order
        wbar_to_flat(layer, m, out=grad[start : start + layer.num_params])
        start += layer.num_params
    return GradResult(loss=loss, grad=grad, trace=trace, stats=stats, layer_grads=layer_grads)


def per_sample_grads(model, loss_fn, x, y):
    """∇θ ℓ(f(x_n), y_n) for every sample, in θ's order.  (N, P)

    Their mean is :func:`batch_grad` (docs/math.md §8.6).
    """
    check_batch(model, loss_fn, x, y)
    trace = forward(model, x)
    stats, _ = backward(model, trace, loss_fn.grad(trace.output, y))  # validates the targets
    return stats_to_flat(stats)[0]


def stats_to_flat(stats):
    """Per-seed, per-sample gradients in θ's order from layer statistics.  (S, N, P)"""
    xp = get_xp(stats[0].g)
    return xp.concatenate([wbar_to_flat(st.layer, st.per_sample_wbar_grads()) for st in stats], axis=-1)


def batch_grad(model, loss_fn, x, y):
    """∇h = (1/N) Σ_n ∇ℓ_n for the averaged loss, in θ's order.  (P,)"""
    return loss_and_grad(model, loss_fn, x, y).grad


def input_grad(model, loss_fn, x, y):
    """∂h/∂x for the averaged loss ``(N, *in_shape)``: each row is ∂ℓ_n/∂x_n / N."""
    check_batch(model, loss_fn, x, y)
    trace = forward(model, x)
    _, gx = backward(model, trace, loss_fn.grad(trace.output, y), input_grad=True)  # validates y
    return gx[0] / x.shape[0]  # the 1/N of the averaged loss h
