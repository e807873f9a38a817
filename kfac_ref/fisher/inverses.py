"""Dense (P, P) views of the damped inverses, in θ's order — for figures and tests.

The optimizers never form these; they apply the inverses layer by layer.  These
views exist so that an inverse can be drawn next to (F + λI)⁻¹ and subtracted
from it (docs/math.md §8.10):

    blockwise_inverse     (M + λI)⁻¹ of a block-diagonal M = ⊕_l (M_ll + λI)⁻¹    one inverse per layer
    kfac_damped           ⊕_l (G_l + √λ/π I) ⊗ (A_l + π√λ I)   ("factored", [MG15 §6.3], docs/math.md §6)
                          ⊕_l G_l ⊗ A_l + λI                   ("exact")
    kfac_inverse          its inverse, built from the factors (never from the dense matrix):
                          ⊕_l (G_l + √λ/π I)⁻¹ ⊗ (A_l + π√λ I)⁻¹  — (G ⊗ A)⁻¹ = G⁻¹ ⊗ A⁻¹ (docs/math.md §8.8)
                          ⊕_l (G_l ⊗ A_l + λI)⁻¹ through the factors' eigendecompositions

``factors`` is [(A_l, G_l)] per layer, as :func:`~kfac_ref.fisher.kfac_factors` returns.
"""

from __future__ import annotations

import numpy as np

from ..backend import get_xp
from ..params import flat_to_wbar, layer_slices, wbar_to_flat
from .dense import blocks_to_dense
from .kfac import factors_to_dense
from .kron import EigenInverse, FactoredInverse, factored_damping

DAMPING_MODES = ("factored", "exact")


def _check_mode(mode: str) -> None:
    if mode not in DAMPING_MODES:
        raise ValueError(f"unknown damping_mode {mode!r}: expected one of {DAMPING_MODES}")


def blockwise_inverse(model, m, damping: float):
    """(M + λI)⁻¹ of a block-diagonal (P, P) matrix, one ``linalg.inv`` per layer block.  (P, P)"""
    xp = get_xp(m)
    blocks = [xp.linalg.inv(m[sl, sl] + damping * xp.eye(sl.stop - sl.start, dtype=m.dtype))
              for sl in layer_slices(model)]
    return blocks_to_dense(model, blocks)


def block_of_inverse(layer, inverse, xp=None):
    """The (p_l, p_l) matrix of a layer's Kronecker-factored inverse in θ's order, from unit vectors.

    ``inverse.apply`` maps V (d_out, a_dim) to the solve in W̄ form; applied to the
    p_l unit vectors of θ_l it gives the columns of the (symmetric) inverse.  ``xp``: the
    array module of the inverse's arrays (default NumPy).
    """
    unit = flat_to_wbar(layer, (xp or np).eye(layer.num_params))  # (p_l, d_out, a_dim)
    return wbar_to_flat(layer, inverse.apply(unit)).T  # row j is the inverse applied to e_j  (p_l, p_l)


def kfac_inverse(model, factors, damping: float, mode: str = "factored"):
    """K-FAC's damped inverse (P, P), built layer by layer from the factors.

    ``"factored"``: ⊕_l (G_l + √λ/π I)⁻¹ ⊗ (A_l + π√λ I)⁻¹ — the Kronecker product of the
                    inverted factors (:class:`~kfac_ref.fisher.FactoredInverse`).
    ``"exact"``:    ⊕_l (G_l ⊗ A_l + λI)⁻¹ from A = U_A diag(d_A) U_Aᵀ, G = U_G diag(d_G) U_Gᵀ
                    (:class:`~kfac_ref.fisher.EigenInverse`).
    """
    _check_mode(mode)
    if mode == "factored":
        inverses = [FactoredInverse.from_factors(a, g, damping) for a, g in factors]
        return factors_to_dense(model, [(inv.a_inv, inv.g_inv) for inv in inverses])
    xp = get_xp(factors[0][0])
    blocks = [block_of_inverse(layer, EigenInverse.from_factors(a, g, damping), xp)
              for layer, (a, g) in zip(model.param_layers(), factors)]
    return blocks_to_dense(model, blocks)


def kfac_damped(model, factors, damping: float, mode: str = "factored"):
    """The damped dense K-FAC matrix (P, P) whose inverse :func:`kfac_inverse` builds."""
    _check_mode(mode)
    if mode == "factored":  # ⊕_l (G_l + √λ/π I) ⊗ (A_l + π√λ I)
        return factors_to_dense(model, [factored_damping(a, g, damping) for a, g in factors])
    k = factors_to_dense(model, factors)
    return k + damping * get_xp(k).eye(k.shape[0], dtype=k.dtype)
