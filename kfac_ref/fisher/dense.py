"""The dense Fisher (P, P) and its block-diagonal part, in θ's order (docs/math.md §1, §3).

    F = (1/N) Σ_n Σ_s u_{s,n} u_{s,n}ᵀ = Vᵀ V / N
    block-diagonal: F_bd[l, l] = F[l, l] for every layer l, zero across layers  [MG15 §4.2]

Each function refuses, before allocating, a matrix above ``max_bytes``
(:mod:`.memory`).
"""

from __future__ import annotations

from ..backend import get_xp
from ..params import layer_slices
from .memory import check_dense_size
from .seeds import check_kind, check_mc_samples
from .vectors import fisher_stats, vectors_from_stats


def dense(model, loss_fn, x, y, kind: str, rng=None, mc_samples: int = 1, max_bytes=None):
    """The Fisher of ``kind`` ("exact", "mc", "empirical") on the batch.  (P, P)"""
    check_kind(kind)
    check_mc_samples(mc_samples, kind)
    check_dense_size(model.num_params, model.dtype, max_bytes)
    stats, _ = fisher_stats(model, loss_fn, x, y, kind, rng, mc_samples)
    return dense_from_stats(stats, x.shape[0])


def dense_from_stats(stats, n: int):
    """F = Vᵀ V / N from the statistics of N samples' Fisher seeds.  (P, P)"""
    v = vectors_from_stats(stats)  # (K, P)
    return (v.T @ v) / n  # the 1/N of F = (1/N) Σ_n …


def layer_blocks(model, loss_fn, x, y, kind: str, rng=None, mc_samples: int = 1):
    """The exact diagonal blocks F[l, l] (p_l, p_l) of the Fisher, one per layer, θ's order."""
    check_kind(kind)
    check_mc_samples(mc_samples, kind)
    stats, _ = fisher_stats(model, loss_fn, x, y, kind, rng, mc_samples)
    return blocks_from_stats(stats, x.shape[0])


def blocks_from_stats(stats, n: int):
    """The diagonal blocks F[l, l] = V_lᵀ V_l / N, one per layer's statistics.  [(p_l, p_l)]"""
    blocks = []
    for st in stats:
        u = vectors_from_stats([st])  # (K, p_l)
        blocks.append((u.T @ u) / n)
    return blocks


def block_diagonal(model, loss_fn, x, y, kind: str, rng=None, mc_samples: int = 1, max_bytes=None):
    """The block-diagonal Fisher as a dense (P, P) matrix: layer blocks of F, zeros elsewhere."""
    check_dense_size(model.num_params, model.dtype, max_bytes, "dense block-diagonal Fisher")
    blocks = layer_blocks(model, loss_fn, x, y, kind, rng, mc_samples)
    return blocks_to_dense(model, blocks)


def blocks_to_dense(model, blocks):
    """Place per-layer (p_l, p_l) blocks on the diagonal of a zero (P, P) matrix."""
    xp = get_xp(blocks[0])
    p = model.num_params
    out = xp.zeros((p, p), dtype=blocks[0].dtype)
    for sl, block in zip(layer_slices(model), blocks):
        out[sl, sl] = block
    return out
