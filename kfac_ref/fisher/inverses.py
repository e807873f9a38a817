"""Dense (P, P) views of the damped inverses, in θ's order — for figures and tests.

The optimizers never form these; they apply the inverses layer by layer.  These
views exist so that an inverse can be drawn next to (F + λI)⁻¹ and subtracted
from it (docs/math.md §8.10)::

    blockwise_inverse     (M + λI)⁻¹ of a block-diagonal M = ⊕_l (M_ll + λI)⁻¹    one inverse per layer
    kfac_damped           ⊕_l (G_l + √λ/π I) ⊗ (A_l + π√λ I)   ("factored", [MG15 §6.3], docs/math.md §6)
                          ⊕_l G_l ⊗ A_l + λI                   ("exact")
    kfac_inverse          its inverse, built from the factors (never from the dense matrix):
                          ⊕_l (G_l + √λ/π I)⁻¹ ⊗ (A_l + π√λ I)⁻¹  — (G ⊗ A)⁻¹ = G⁻¹ ⊗ A⁻¹ (docs/math.md §8.8)
                          ⊕_l (G_l ⊗ A_l + λI)⁻¹ through the factors' eigendecompositions
    ekfac_inverse         ⊕_l (F_EKFAC,l + λI)⁻¹ from the eigenbases and refitted scalings   (docs/math.md §12)
    tridiag_inverse       block-tridiagonal K-FAC's damped F̂⁻¹ = Ξᵀ Λ Ξ, by applying it   (docs/math.md §11)

``factors`` is [(A_l, G_l)] per layer, as :func:`~kfac_ref.fisher.kfac_factors` returns.
"""

from __future__ import annotations

import numpy as np

from ..backend import get_xp
from ..params import flat_to_wbar, layer_slices, wbar_to_flat
from .dense import blocks_to_dense
from .kfac import factors_to_dense
from .kron import check_damping_mode, factored_damping, inverse_class
from .tridiag import TridiagInverse


def blockwise_inverse(model, m, damping: float):
    """(M + λI)⁻¹ of a block-diagonal (P, P) matrix, one ``linalg.inv`` per layer block.  (P, P)"""
    xp = get_xp(m)
    blocks = [
        xp.linalg.inv(m[sl, sl] + damping * xp.eye(sl.stop - sl.start, dtype=m.dtype)) for sl in layer_slices(model)
    ]
    return blocks_to_dense(model, blocks)


def block_of_inverse(layer, inverse, xp=None):
    """The (p_l, p_l) matrix of a layer's Kronecker-factored inverse in θ's order, from unit vectors.

    ``inverse.apply`` maps V (d_out, a_dim) to the solve in W̄ form; applied to the
    p_l unit vectors of θ_l, one at a time, it gives the columns of the inverse.  ``xp``:
    the array module of the inverse's arrays (default NumPy).
    """
    unit = flat_to_wbar(layer, (xp or np).eye(layer.num_params))  # (p_l, d_out, a_dim)
    columns = [wbar_to_flat(layer, inverse.apply(e)) for e in unit]  # inverse · e_j  (p_l,) each
    return (xp or np).stack(columns, axis=1)  # (p_l, p_l)


def kfac_inverse(model, factors, damping: float, mode: str = "factored"):
    """K-FAC's damped inverse (P, P), built layer by layer from the factors.

    ``"factored"``: ⊕_l (G_l + √λ/π I)⁻¹ ⊗ (A_l + π√λ I)⁻¹ — the Kronecker product of the
                    inverted factors (:class:`~kfac_ref.fisher.FactoredInverse`).
    ``"exact"``:    ⊕_l (G_l ⊗ A_l + λI)⁻¹ from A = U_A diag(d_A) U_Aᵀ, G = U_G diag(d_G) U_Gᵀ
                    (:class:`~kfac_ref.fisher.EigenInverse`).
    """
    check_damping_mode(mode)
    cls = inverse_class(mode)
    if mode == "factored":
        inverses = [cls.from_factors(a, g, damping) for a, g in factors]
        return factors_to_dense(model, [(inv.a_inv, inv.g_inv) for inv in inverses])
    xp = get_xp(factors[0][0])
    blocks = [
        block_of_inverse(layer, cls.from_factors(a, g, damping), xp)
        for layer, (a, g) in zip(model.param_layers(), factors)
    ]
    return blocks_to_dense(model, blocks)


def kfac_damped(model, factors, damping: float, mode: str = "factored"):
    """The damped dense K-FAC matrix (P, P) whose inverse :func:`kfac_inverse` builds."""
    check_damping_mode(mode)
    if mode == "factored":  # ⊕_l (G_l + √λ/π I) ⊗ (A_l + π√λ I)
        return factors_to_dense(model, [factored_damping(a, g, damping) for a, g in factors])
    k = factors_to_dense(model, factors)
    return k + damping * get_xp(k).eye(k.shape[0], dtype=k.dtype)


def ekfac_inverse(model, inverses):
    """⊕_l (F_EKFAC,l + λI)⁻¹ (P, P) from one damped :class:`~kfac_ref.fisher.EKFACInverse` per layer.

    λ enters exactly, in the eigenbasis: (U_G ⊗ U_A) diag(1/(s + λ)) (U_G ⊗ U_A)ᵀ (docs/math.md §12).
    """
    xp = get_xp(inverses[0].s)
    return blocks_to_dense(
        model, [block_of_inverse(layer, inv, xp) for layer, inv in zip(model.param_layers(), inverses)]
    )


def tridiag_inverse(model, diag_factors, cross_factors, damping: float):
    """Block-tridiagonal K-FAC's damped F̂_γ⁻¹ = Ξᵀ Λ Ξ (P, P), column by column.

    Column j is :meth:`~kfac_ref.fisher.TridiagInverse.apply` of the unit vector e_j — the
    inverse the optimizer applies, factored damping of the diagonal factors (docs/math.md §11),
    never a P × P inverse.  P applications: for the figure's small networks only.
    """
    inv = TridiagInverse.from_factors(diag_factors, cross_factors, damping)
    xp = get_xp(diag_factors[0][0])
    layers, slices = model.param_layers(), layer_slices(model)
    eye = xp.eye(model.num_params, dtype=diag_factors[0][0].dtype)
    columns = []
    for e in eye:
        out = inv.apply([flat_to_wbar(layer, e[sl]) for layer, sl in zip(layers, slices)])
        columns.append(xp.concatenate([wbar_to_flat(layer, o) for layer, o in zip(layers, out)]))  # (P,)
    return xp.stack(columns, axis=1)  # (P, P)
