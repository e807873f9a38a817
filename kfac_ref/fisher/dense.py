"""The dense Fisher (P, P) and its block-diagonal part, in θ's order (docs/math.md §1, §3).

    F = (1/N) Σ_n Σ_s u_{s,n} u_{s,n}ᵀ = Vᵀ V / N
    block-diagonal: F_bd[l, l] = F[l, l] for every layer l, zero across layers  [MG15 §4.2]

Each function refuses, before allocating, a matrix above ``max_bytes``
(:mod:`.memory`).
"""

from __future__ import annotations

from ..backend import get_xp
from ..grads import stats_to_flat
from ..params import layer_slices
from .memory import check_dense_size
from .seeds import check_kind, check_mc_samples
from .vectors import fisher_stats


def dense(model, loss_fn, x, y, kind: str, rng=None, mc_samples: int = 1, max_bytes=None):
    """The Fisher of ``kind`` ("exact", "mc", "empirical") on the batch.  (P, P)"""
    check_kind(kind)
    check_mc_samples(mc_samples, kind)
    check_dense_size(model.num_params, model.dtype, max_bytes)
    stats, _ = fisher_stats(model, loss_fn, x, y, kind, rng, mc_samples)
    v = stats_to_flat(stats)  # (S, N, P)
    v = v.reshape(-1, v.shape[-1])  # (K, P)
    return (v.T @ v) / x.shape[0]  # the 1/N of F = (1/N) Σ_n …


def layer_blocks(model, loss_fn, x, y, kind: str, rng=None, mc_samples: int = 1):
    """The exact diagonal blocks F[l, l] (p_l, p_l) of the Fisher, one per layer, θ's order."""
    check_kind(kind)
    check_mc_samples(mc_samples, kind)
    stats, _ = fisher_stats(model, loss_fn, x, y, kind, rng, mc_samples)
    n, blocks = x.shape[0], []
    for st in stats:
        u = stats_to_flat([st])  # (S, N, p_l)
        u = u.reshape(-1, u.shape[-1])  # (K, p_l)
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
