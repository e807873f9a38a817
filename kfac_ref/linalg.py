"""Symmetric positive-definite solves and inverses through Cholesky, M = L Lᵀ.

    M x = b   ⇔   L y = b,  Lᵀ x = y           (two triangular solves, O(d²) each)
    M⁻¹ = L⁻ᵀ L⁻¹

Cholesky costs d³/3 flops, half an LU, and fails loudly when M is not positive
definite — a useful check on a damped Fisher.  Here it fails loudly on both
backends: NumPy raises for some failures but returns NaN for a NaN matrix, and
CuPy never raises by default (``cupyx.errstate(linalg='ignore')``): LAPACK's
potrf stops at the first pivot that is ≤ 0 or NaN and leaves it on the
diagonal.  So every factorisation checks its result — diag(L) > 0 and finite,
finite eigenpairs — in one device→host read, and a failure is a
:class:`CurvatureError` saying whether the matrix held NaN/Inf (the loss
diverged) or was merely not positive definite.
"""

from __future__ import annotations

import numpy as np

from .backend import get_xp, solve_triangular


class CurvatureError(np.linalg.LinAlgError):
    """A curvature matrix could not be factorised; the message says why."""


def _failure(m, what: str, exc) -> CurvatureError:
    """The clear error for a failed factorisation of ``m`` (reads m back: only on failure)."""
    xp = get_xp(m)
    bad = int(xp.count_nonzero(~xp.isfinite(m)))
    if bad:
        return CurvatureError(
            f"{what} ({m.shape[0]}×{m.shape[1]}) contains {bad} NaN/Inf value(s): "
            "the curvature is not finite, the loss likely diverged "
            "(lower the learning rate or raise the damping)"
        )
    return CurvatureError(f"{what} ({m.shape[0]}×{m.shape[1]}) is not positive definite ({exc})")


def cholesky(m, what: str = "the damped curvature matrix"):
    """Lower-triangular L with M = L Lᵀ, or a :class:`CurvatureError` naming ``what``."""
    xp = get_xp(m)
    try:
        low = xp.linalg.cholesky(m)
    except np.linalg.LinAlgError as exc:  # NumPy, for some failures
        raise _failure(m, what, exc) from exc
    if not bool((xp.diagonal(low) > 0).all()):  # a failed pivot (≤ 0 or NaN) stays on the diagonal
        raise _failure(m, what, "a pivot of the Cholesky factorisation is ≤ 0")
    return low


def eigh(m, what: str = "the curvature factor"):
    """(eigenvalues, eigenvectors) of a symmetric M, or a :class:`CurvatureError` naming ``what``."""
    xp = get_xp(m)
    try:
        d, u = xp.linalg.eigh(m)
    except np.linalg.LinAlgError as exc:  # NumPy: "Eigenvalues did not converge"
        raise _failure(m, what, exc) from exc
    if not bool(xp.isfinite(d).all() & xp.isfinite(u).all()):
        raise _failure(m, what, "the eigendecomposition did not converge")
    return d, u


def cho_solve(m, b, what: str = "the damped curvature matrix"):
    """x with M x = b for SPD M (d, d); b (d,) or (d, k)."""
    low = cholesky(m, what)
    return solve_triangular(low.T, solve_triangular(low, b, lower=True), lower=False)


def spd_inverse(m, what: str = "the damped curvature factor"):
    """M⁻¹ for SPD M (d, d), symmetric to rounding."""
    xp = get_xp(m)
    low = cholesky(m, what)
    linv = solve_triangular(low, xp.eye(m.shape[0], dtype=m.dtype), lower=True)  # L⁻¹
    return linv.T @ linv


def add_diagonal(m, value: float):
    """M + value·I as a new array, without forming I (a (d, d) identity is d² memory)."""
    out = m.copy()
    d = out.shape[0]
    out.reshape(-1)[:: d + 1] += value  # the diagonal of a C-contiguous (d, d) array
    return out
