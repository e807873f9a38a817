"""Kronecker factors per layer — K-FAC [MG15 §3] and KFC [GM16] — and their dense view.

Index legend: s seed, n sample, t location, k input feature (ā), d output (g).

Linear layer (T = 1), docs/math.md §4:
    A = (1/N) Σ_n ā_n ā_nᵀ                       (a_dim, a_dim)
    G = (1/N) Σ_n Σ_s g_{s,n} g_{s,n}ᵀ            (d_out, d_out)
Conv2d layer (T locations), docs/math.md §5 — the location split chosen here:
    Ω = (1/N) Σ_n Σ_t ā_{n,t} ā_{n,t}ᵀ           a *sum* over locations
    Γ = (1/(N T)) Σ_n Σ_s Σ_t g_{s,n,t} g_{s,n,t}ᵀ  a *mean* over locations

so that, with T = 1, both reduce to the Linear formulas, and under KFC's
assumptions (independence, spatial homogeneity, spatially uncorrelated
derivatives) the layer block Σ_{t,t'} E[g_t g_{t'}ᵀ] ⊗ E[ā_t ā_{t'}ᵀ] ≈ Γ ⊗ Ω.
The split matters only through π in factored damping (docs/math.md §6).

The block is approximated by G ⊗ A in the row-major vec(W̄) order (docs/math.md §1);
:func:`kfac_dense` puts every block back into θ's order so that it can be
subtracted from the exact Fisher.
"""

from __future__ import annotations

from ..backend import get_xp
from ..params import wbar_order
from .dense import blocks_to_dense
from .memory import check_dense_size
from .seeds import check_kind, check_mc_samples
from .vectors import fisher_stats

SUPPORTED = ("linear", "conv")


def factor_a(a_bar):
    """A (Linear) or Ω (Conv2d): (1/N) Σ_n Σ_t ā ā ᵀ.  (N, T, a_dim) → (a_dim, a_dim)"""
    n, _, k = a_bar.shape
    a = a_bar.reshape(-1, k)  # (N·T, a_dim)
    return (a.T @ a) / n  # mean over samples, sum over locations


def factor_g(g):
    """G (Linear) or Γ (Conv2d): (1/(N T)) Σ_{s,n,t} g gᵀ.  (S, N, T, d_out) → (d_out, d_out)"""
    _, n, t, d = g.shape
    gm = g.reshape(-1, d)  # (S·N·T, d_out)
    return (gm.T @ gm) / (n * t)  # mean over samples and locations, sum over seeds


def check_supported(model) -> None:
    """K-FAC here covers Linear and Conv2d layers; anything else with parameters is refused."""
    for layer in model.param_layers():
        if layer.kind not in SUPPORTED:
            raise TypeError(
                f"K-FAC does not support {layer!r} (kind {layer.kind!r}); supported layer kinds: {SUPPORTED}"
            )


def factors_from_stats(stats):
    """[(A, G)] per layer from per-layer statistics with Fisher seeds."""
    return [(factor_a(st.a_bar), factor_g(st.g)) for st in stats]


def kfac_factors(model, loss_fn, x, y, kind: str, rng=None, mc_samples: int = 1):
    """One (A, G) pair per Linear/Conv2d layer in network order ((Ω, Γ) for Conv2d)."""
    check_kind(kind)
    check_mc_samples(mc_samples, kind)
    check_supported(model)
    stats, _ = fisher_stats(model, loss_fn, x, y, kind, rng, mc_samples)
    return factors_from_stats(stats)


def kron_in_param_order(layer, a, g):
    """G ⊗ A (row-major vec(W̄) order) permuted into θ's order for this layer.  (p_l, p_l)"""
    k = get_xp(a).kron(g, a)  # (d_out·a_dim, d_out·a_dim), index (o, i) ↦ o·a_dim + i
    return wbar_block_to_param_order(layer, layer, k)


def wbar_block_to_param_order(row_layer, col_layer, block):
    """A block indexed by vec(W̄_i) × vec(W̄_j) (row-major) reindexed into θ's order.  (p_i, p_j)

    ``block[r, c]`` lands at ``(perm_i[r], perm_j[c])`` with perm = :func:`~kfac_ref.params.wbar_order`.
    """
    xp = get_xp(block)
    perm_i, perm_j = xp.asarray(wbar_order(row_layer)), xp.asarray(wbar_order(col_layer))
    out = xp.empty_like(block)
    out[perm_i[:, None], perm_j[None, :]] = block  # entry (perm_i, perm_j) of θ's order
    return out


def kfac_dense(model, loss_fn, x, y, kind: str, rng=None, mc_samples: int = 1, max_bytes=None):
    """K-FAC's block-diagonal approximation as a dense (P, P) matrix in θ's order."""
    check_dense_size(model.num_params, model.dtype, max_bytes, "dense K-FAC matrix")
    factors = kfac_factors(model, loss_fn, x, y, kind, rng, mc_samples)
    return factors_to_dense(model, factors)


def factors_to_dense(model, factors):
    """Dense (P, P) view of per-layer Kronecker factors [(A, G)]."""
    return blocks_to_dense(
        model, [kron_in_param_order(layer, a, g) for layer, (a, g) in zip(model.param_layers(), factors)]
    )
