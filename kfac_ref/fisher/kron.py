"""Inverting Kronecker-factored blocks, with damping (docs/math.md §4, §6).

Row-major vec (docs/math.md §1): (G ⊗ A) vec(V) = vec(G V A), hence

    (G ⊗ A)⁻¹ vec(V) = vec(G⁻¹ V A⁻¹)                               (docs/math.md §8.8)

for a layer matrix V of shape (d_out, a_dim).  Two ways to add damping γ:

- factored Tikhonov damping [MG15 §6.3]:
      (A + π√γ I) ⊗ (G + (√γ/π) I),   π = sqrt((tr A / dim A) / (tr G / dim G)),

  which is G ⊗ A + γ I plus the cross terms (√γ/π) I ⊗ A + π√γ G ⊗ I (row-major);
- exact damping through eigendecompositions A = U_A diag(d_A) U_Aᵀ, G = U_G diag(d_G) U_Gᵀ:
      (G ⊗ A + γ I)⁻¹ vec(V) = vec(U_G [(U_Gᵀ V U_A) ⊘ (d_G d_Aᵀ + γ)] U_Aᵀ).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..backend import get_xp, raising_linalg
from ..linalg import eigh, spd_inverse
from ..params import wbar_to_flat
from ..validate import check_damping


def pi_factor(a, g) -> float:
    """π = sqrt((tr A / dim A) / (tr G / dim G)), [MG15] eq. (after §6.3)."""
    xp = get_xp(a, g)
    ta, tg = xp.stack([xp.trace(a) / a.shape[0], xp.trace(g) / g.shape[0]]).tolist()  # one sync for both
    if ta <= 0 or tg <= 0:
        return 1.0  # a zero factor (e.g. dead units): no preferred split
    return (ta / tg) ** 0.5


def factored_damping(a, g, gamma: float):
    """(A + π√γ I, G + (√γ/π) I), the factored Tikhonov-damped pair."""
    xp = get_xp(a)
    gamma = check_damping(gamma)
    pi = pi_factor(a, g)
    root = gamma**0.5
    return (a + pi * root * xp.eye(a.shape[0], dtype=a.dtype), g + (root / pi) * xp.eye(g.shape[0], dtype=g.dtype))


@dataclass(frozen=True)
class FactoredInverse:
    """(A + π√γ I)⁻¹ and (G + √γ/π I)⁻¹ for one layer; ``apply`` solves with their Kronecker product."""

    a_inv: object
    g_inv: object

    @classmethod
    def from_factors(cls, a, g, gamma: float):
        ad, gd = factored_damping(a, g, gamma)
        return cls(spd_inverse(ad, "the damped K-FAC factor A"), spd_inverse(gd, "the damped K-FAC factor G"))

    def apply(self, v):
        """(G_d ⊗ A_d)⁻¹ vec(V) = vec(G_d⁻¹ V A_d⁻¹).  (d_out, a_dim) → (d_out, a_dim)"""
        return self.g_inv @ v @ self.a_inv


@dataclass(frozen=True)
class EigenInverse:
    """Eigendecompositions of A and G; ``apply`` solves with G ⊗ A + γ I exactly."""

    u_a: object
    d_a: object
    u_g: object
    d_g: object
    gamma: float

    @classmethod
    def from_factors(cls, a, g, gamma: float):
        xp = get_xp(a)
        gamma = check_damping(gamma)
        d_a, u_a = eigh(a, "the K-FAC factor A")
        d_g, u_g = eigh(g, "the K-FAC factor G")
        # Round-off can make tiny eigenvalues of a PSD factor negative: clip at 0.
        return cls(u_a, xp.maximum(d_a, 0), u_g, xp.maximum(d_g, 0), gamma)

    def apply(self, v):
        """U_G [(U_Gᵀ V U_A) ⊘ (d_G d_Aᵀ + γ)] U_Aᵀ.  (d_out, a_dim) → (d_out, a_dim)"""
        inner = self.u_g.T @ v @ self.u_a  # V in the Kronecker eigenbasis
        inner = inner / (self.d_g[:, None] * self.d_a[None, :] + self.gamma)
        return self.u_g @ inner @ self.u_a.T


DAMPING_MODES = ("factored", "exact")


def check_damping_mode(mode: str) -> str:
    if mode not in DAMPING_MODES:
        raise ValueError(f"unknown damping_mode {mode!r}: expected one of {DAMPING_MODES}")
    return mode


def inverse_class(mode: str):
    """The per-layer inverse of a damping mode: :class:`FactoredInverse` or :class:`EigenInverse`."""
    return FactoredInverse if check_damping_mode(mode) == "factored" else EigenInverse


def inverse_shapes(mode: str, a_dim: int, g_dim: int) -> dict:
    """{array name: shape} of one layer's inverse in ``mode`` (what a distributed refresh shares)."""
    if check_damping_mode(mode) == "factored":
        return {"a_inv": (a_dim, a_dim), "g_inv": (g_dim, g_dim)}
    return {"u_a": (a_dim, a_dim), "d_a": (a_dim,), "u_g": (g_dim, g_dim), "d_g": (g_dim,)}


def kron_solve(a, g, v):
    """Undamped (G ⊗ A)⁻¹ vec(V) = vec(G⁻¹ V A⁻¹) for invertible A, G."""
    xp = get_xp(a)
    with raising_linalg(xp):
        return xp.linalg.solve(g, xp.linalg.solve(a.T, v.T).T)


def precondition_layers(layers, inverses, layer_grads):
    """⊕_l (damped block_l)⁻¹ ∇_l h in θ's order: each layer's inverse applied to its gradient.

    ``inverses`` are per-layer objects with ``apply(V)`` (:class:`FactoredInverse`,
    :class:`EigenInverse`, :class:`~kfac_ref.fisher.EKFACInverse`); ``layer_grads``
    are ∇_{W̄_l} h, (d_out, a_dim) each.  [(d_out, a_dim)] → (P,)
    """
    xp = get_xp(layer_grads[0])
    return xp.concatenate(
        [wbar_to_flat(layer, inv.apply(grad)) for layer, inv, grad in zip(layers, inverses, layer_grads)]
    )
