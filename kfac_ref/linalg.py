"""Symmetric positive-definite solves and inverses through Cholesky, M = L Lᵀ.

    M x = b   ⇔   L y = b,  Lᵀ x = y           (two triangular solves, O(d²) each)
    M⁻¹ = L⁻ᵀ L⁻¹

Cholesky costs d³/3 flops, half an LU, and fails loudly (LinAlgError) when M is
not positive definite — a useful check on a damped Fisher.
"""

from __future__ import annotations

from .backend import get_xp, solve_triangular


def cho_solve(m, b):
    """x with M x = b for SPD M (d, d); b (d,) or (d, k)."""
    low = get_xp(m).linalg.cholesky(m)
    return solve_triangular(low.T, solve_triangular(low, b, lower=True), lower=False)


def spd_inverse(m):
    """M⁻¹ for SPD M (d, d), symmetric to rounding."""
    xp = get_xp(m)
    low = xp.linalg.cholesky(m)
    linv = solve_triangular(low, xp.eye(m.shape[0], dtype=m.dtype), lower=True)  # L⁻¹
    return linv.T @ linv


def add_diagonal(m, value: float):
    """M + value·I as a new array, without forming I (a (d, d) identity is d² memory)."""
    out = m.copy()
    d = out.shape[0]
    out.reshape(-1)[:: d + 1] += value  # the diagonal of a C-contiguous (d, d) array
    return out
