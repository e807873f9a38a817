"""Backpropagated Fisher vectors: per-layer statistics and the (K, P) factor V.

For a Fisher kind (see :mod:`.seeds`) the backpropagated seeds give, for every
Linear/Conv2d layer, statistics ā (N, T, a_dim) and g (S, N, T, d_out).  Stacking
the per-seed, per-sample gradients u_{s,n} as rows gives

    V : (K, P), K = S·N,    F = Vᵀ V / N                          (docs/math.md §3, §7)

(Other write-ups use U = Vᵀ, of shape (P, K).)
"""

from __future__ import annotations

from ..backprop import backward, forward
from ..grads import check_batch, stats_to_flat
from .seeds import check_fisher_args, fisher_seeds


def fisher_stats(model, loss_fn, x, y, kind: str, rng=None, mc_samples: int = 1, trace=None):
    """Per-layer :class:`~kfac_ref.backprop.LayerStats` for the Fisher seeds of ``kind``.

    Pass ``trace`` to reuse a forward pass (e.g. the one that gave the gradient).
    Checks the kind, M and the generator (:func:`.seeds.check_fisher_args`) before any work.
    Returns (stats, trace).
    """
    check_fisher_args(kind, mc_samples, rng)
    if y is not None:
        check_batch(model, loss_fn, x, y)
    if trace is None:
        trace = forward(model, x)
    seeds = fisher_seeds(loss_fn, trace.output, y, kind, rng, mc_samples)  # (S, N, C)
    stats, _ = backward(model, trace, seeds)
    return stats, trace


def vectors_from_stats(stats):
    """V (K, P), K = S·N: the per-seed, per-sample gradients of the statistics as rows, θ's order.

    For the statistics of one layer, ``[st]``, the (K, p_l) columns of that layer.
    """
    u = stats_to_flat(stats)  # (S, N, P)
    return u.reshape(-1, u.shape[-1])  # (S·N, P)


def fisher_vectors(model, loss_fn, x, y, kind: str, rng=None, mc_samples: int = 1):
    """V (K, P) with F = Vᵀ V / N: one row per backpropagated seed and sample, θ's order."""
    stats, _ = fisher_stats(model, loss_fn, x, y, kind, rng, mc_samples)
    return vectors_from_stats(stats)  # (S·N, P)
