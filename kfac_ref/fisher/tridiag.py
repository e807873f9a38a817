"""Block-tridiagonal K-FAC [MG15 §4.3, App. B]: cross-layer factors, F̂, and F̂⁻¹ without P×P matrices.

docs/math.md §11.  Index legend: s seed, n sample, t location (T = 1 for Linear),
i input feature of layer l (ā_l), k input feature of layer l+1, d output of l, e output of l+1.
The method, step by step::

    1. **Cross-layer factors** of consecutive Linear layers l, l+1, from the same seeds as
       the diagonal factors of kfac_ref.fisher.kfac (and with the same 1/N, factor_g's 1/(N T), T = 1):
           A_{l,l+1} = (1/N) Σ_n ā_{l,n} ā_{l+1,n}ᵀ                    (a_l, a_{l+1})
           G_{l,l+1} = (1/N) Σ_n Σ_s g_{l,s,n} g_{l+1,s,n}ᵀ            (d_l, d_{l+1})
       so that F̃_{l,l+1} = G_{l,l+1} ⊗ A_{l,l+1} in the row-major vec(W̄) order
       ([MG15] write it column-major, Ā_{l−1,l} ⊗ G_{l,l+1}).
    2. **The Gaussian chain model** of [MG15] §4.3: Dθ_L ~ N(0, Σ_L) and
       Dθ_l | Dθ_{l+1} ~ N(Ψ_l Dθ_{l+1}, Σ_{l|l+1}) with
           Ψ_l        = F̃_{l,l+1} F̃_{l+1,l+1}⁻¹ = Ψ^G_l ⊗ Ψ^A_l,
                        Ψ^A_l = A_{l,l+1} A_{l+1}⁻¹ (a_l, a_{l+1}),  Ψ^G_l = G_{l,l+1} G_{l+1}⁻¹ (d_l, d_{l+1})
           Σ_{l|l+1}  = F̃_{l,l} − Ψ_l F̃_{l+1,l+1} Ψ_lᵀ = G_l ⊗ A_l − C^G_l ⊗ C^A_l,
                        C^A_l = Ψ^A_l A_{l+1} Ψ^A_lᵀ = A_{l,l+1} A_{l+1}⁻¹ A_{l,l+1}ᵀ,  C^G_l likewise
           Σ_L        = F̃_{L,L}.
       Its covariance F̂ agrees with F̃ on the diagonal and first off-diagonal blocks,
           F̂_{l,m} = (Ψ^G_l ⋯ Ψ^G_{m−1} G_m) ⊗ (Ψ^A_l ⋯ Ψ^A_{m−1} A_m)       (l ≤ m),
       and its inverse is block tridiagonal: F̂⁻¹ = Ξᵀ Λ Ξ, Λ = diag(Σ_{1|2}⁻¹, …, Σ_L⁻¹),
       Ξ = I with −Ψ_l on block (l, l+1).
    3. **Σ_{l|l+1}⁻¹ by two eigendecompositions** ([MG15] App. B): with A = L Lᵀ (Cholesky) and
       L⁻¹ C^A L⁻ᵀ = E diag(s_A) Eᵀ, K_A = L⁻ᵀ E gives K_Aᵀ A K_A = I and K_Aᵀ C^A K_A = diag(s_A);
       likewise K_G, s_G.  Then
           Σ_{l|l+1}⁻¹ vec(V) = vec(K_G [(K_Gᵀ V K_A) ⊘ (1 − s_G s_Aᵀ)] K_Aᵀ).
       Since [[A_l, A_{l,l+1}], [A_{l+1,l}, A_{l+1}]] is a covariance (PSD), C^A ⪯ A_l, so
       0 ≤ s_A ≤ 1 (and s_G): the denominators are positive whenever Σ_{l|l+1} ≻ 0.
    4. **Damping** ([MG15] §6.3, applied to this case as they describe): factored Tikhonov
       damping of the *diagonal* factors only, A_l → A_l + π_l √γ I, G_l → G_l + (√γ/π_l) I
       (π_l of :func:`.kron.pi_factor`), the cross factors unchanged, and then F̂ (Ψ, Σ) is
       recomputed from the damped factors.  The damped F̂ therefore keeps the undamped
       off-diagonal blocks G_{l,l+1} ⊗ A_{l,l+1} and has the damped K-FAC blocks on the diagonal.
       Damping also makes s_A, s_G < 1 strictly, so every Σ_{l|l+1} is invertible.

    Per refresh the cost is O(Σ_l a_l³ + d_l³) (Cholesky, two solves for Ψ, two eigh per
    pair); one application of F̂⁻¹ costs O(Σ_l d_l a_l (d_l + a_l) + cross products).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backend import get_xp, solve_triangular
from ..linalg import cho_solve
from ..params import layer_slices
from ..validate import check_damping, check_state_array, check_state_number
from .curvature import Curvature, saved_inverse, tree_to_device_list, tree_to_numpy
from .kfac import check_factor_memory, factors_from_stats, wbar_block_to_param_order
from .kron import factored_damping
from .memory import check_dense_size
from .vectors import fisher_stats


# --- 1. cross-layer factors ---------------------------------------------------------------
def check_chain(model) -> None:
    """Block-tridiagonal K-FAC pairs *consecutive Linear* layers; refuse any other pair by name."""
    check_pairs(model.param_layers())


def check_pairs(layers) -> None:
    for l, (first, second) in enumerate(zip(layers[:-1], layers[1:])):
        if first.kind != "linear" or second.kind != "linear":
            raise TypeError(
                f"block-tridiagonal K-FAC needs consecutive Linear layers, but parameter layers "
                f"{l} and {l + 1} are {first!r} and {second!r}: cross-layer factors "
                f"A_(l,l+1), G_(l,l+1) are defined for Linear–Linear pairs only"
            )


def cross_factor_a(a_bar_l, a_bar_m):
    """A_{l,l+1} = (1/N) Σ_n ā_l ā_{l+1}ᵀ.  (N, 1, a_l), (N, 1, a_{l+1}) → (a_l, a_{l+1})"""
    xp = get_xp(a_bar_l)
    return xp.einsum("nti,ntk->ik", a_bar_l, a_bar_m) / a_bar_l.shape[0]  # mean over samples, as factor_a


def cross_factor_g(g_l, g_m):
    """G_{l,l+1} = (1/(N T)) Σ_{s,n,t} g_l g_{l+1}ᵀ (T = 1).  (S, N, 1, d_l), (S, N, 1, d_{l+1}) → (d_l, d_{l+1})"""
    xp = get_xp(g_l)
    _, n, t, _ = g_l.shape
    return xp.einsum("sntd,snte->de", g_l, g_m) / (n * t)  # factor_g's 1/(N T), sum over seeds


def cross_factors_from_stats(stats):
    """[(A_{l,l+1}, G_{l,l+1})] for l = 0 … L−2 from one backward pass's per-layer statistics."""
    check_pairs([st.layer for st in stats])
    return [(cross_factor_a(s0.a_bar, s1.a_bar), cross_factor_g(s0.g, s1.g)) for s0, s1 in zip(stats[:-1], stats[1:])]


def tridiag_factors(model, loss_fn, x, y, kind: str, rng=None, mc_samples: int = 1):
    """(diagonal factors [(A_l, G_l)], cross factors [(A_{l,l+1}, G_{l,l+1})]) from one set of seeds."""
    check_chain(model)
    stats, _ = fisher_stats(model, loss_fn, x, y, kind, rng, mc_samples)
    return factors_from_stats(stats), cross_factors_from_stats(stats)


def check_factor_shapes(diag_factors, cross_factors) -> None:
    if len(cross_factors) != len(diag_factors) - 1:
        raise ValueError(
            f"{len(diag_factors)} layers need {len(diag_factors) - 1} cross-factor pairs, got {len(cross_factors)}"
        )
    for l, (a_lm, g_lm) in enumerate(cross_factors):
        (a_l, g_l), (a_m, g_m) = diag_factors[l], diag_factors[l + 1]
        want = ((a_l.shape[0], a_m.shape[0]), (g_l.shape[0], g_m.shape[0]))
        if (tuple(a_lm.shape), tuple(g_lm.shape)) != want:
            raise ValueError(
                f"cross factors of layers {l}, {l + 1}: A_(l,l+1) {tuple(a_lm.shape)} and "
                f"G_(l,l+1) {tuple(g_lm.shape)}, expected {want[0]} and {want[1]}"
            )


def damped_diagonal(diag_factors, gamma: float):
    """[MG15] §6.3 on the diagonal factors: [(A_l + π_l√γ I, G_l + (√γ/π_l) I)] (unchanged for γ = 0)."""
    gamma = check_damping(gamma)
    return [factored_damping(a, g, gamma) if gamma > 0 else (a, g) for a, g in diag_factors]


# --- 2. F̂ as a dense matrix (tests, notebooks) ----------------------------------------------
def psd_pinv(m, rtol=None):
    """Pseudo-inverse of a symmetric PSD matrix through eigh; eigenvalues ≤ rtol·max treated as 0."""
    xp = get_xp(m)
    d, u = xp.linalg.eigh(m)
    rtol = 100 * m.shape[0] * np.finfo(m.dtype).eps if rtol is None else rtol
    keep = d > rtol * float(d.max()) if float(d.max()) > 0 else d > 0
    inv_d = xp.where(keep, 1 / xp.where(keep, d, 1), 0)
    return (u * inv_d[None, :]) @ u.T


def chain_couplings(diag_factors, cross_factors):
    """[(Ψ^A_l, Ψ^G_l)]: Ψ^A_l = A_{l,l+1} A_{l+1}⁺ (a_l, a_{l+1}), Ψ^G_l = G_{l,l+1} G_{l+1}⁺ (d_l, d_{l+1}).

    The pseudo-inverse equals the inverse for invertible factors and keeps F̂ defined
    when they are singular (one sample, deep linear nets): the conditional mean of a
    Gaussian only needs F̃_{l+1,l+1}⁺, because F̃_{l,l+1}'s rows lie in its range.
    """
    return [
        (a_lm @ psd_pinv(diag_factors[l + 1][0]), g_lm @ psd_pinv(diag_factors[l + 1][1]))
        for l, (a_lm, g_lm) in enumerate(cross_factors)
    ]


def tridiag_blocks(diag_factors, cross_factors):
    """F̂_{l,m} for l ≤ m as Kronecker pairs {(l, m): (X_A, X_G)}, F̂_{l,m} = X_G ⊗ X_A (row-major).

    F̂_{l,m} = Ψ_l F̂_{l+1,m} (the chain's covariance), so X_A = Ψ^A_l ⋯ Ψ^A_{m−1} A_m.
    """
    check_factor_shapes(diag_factors, cross_factors)
    psi = chain_couplings(diag_factors, cross_factors)
    out = {}
    for m, (a_m, g_m) in enumerate(diag_factors):
        xa, xg = a_m, g_m
        out[(m, m)] = (xa, xg)
        for l in range(m - 1, -1, -1):
            xa, xg = psi[l][0] @ xa, psi[l][1] @ xg  # (a_l, a_m), (d_l, d_m)
            out[(l, m)] = (xa, xg)
    return out


def tridiag_to_dense(model, diag_factors, cross_factors, gamma: float = 0.0):
    """F̂ (damped as in §4 of the module docstring when γ > 0) as a dense (P, P) matrix in θ's order."""
    check_dense_size(model.num_params, diag_factors[0][0].dtype, None, "dense block-tridiagonal K-FAC matrix")
    layers, slices = model.param_layers(), layer_slices(model)
    if len(layers) != len(diag_factors):
        raise ValueError(f"the model has {len(layers)} Linear/Conv2d layers but {len(diag_factors)} factor pairs")
    blocks = tridiag_blocks(damped_diagonal(diag_factors, gamma), cross_factors)
    xp = get_xp(diag_factors[0][0])
    p = model.num_params
    out = xp.zeros((p, p), dtype=diag_factors[0][0].dtype)
    for (l, m), (xa, xg) in blocks.items():
        block = wbar_block_to_param_order(layers[l], layers[m], xp.kron(xg, xa))  # (p_l, p_m)
        out[slices[l], slices[m]] = block
        out[slices[m], slices[l]] = block.T  # F̂ is symmetric: F̂_{m,l} = F̂_{l,m}ᵀ
    return out


def kfac_tridiag_dense(model, loss_fn, x, y, kind: str, rng=None, mc_samples: int = 1, max_bytes=None):
    """Block-tridiagonal K-FAC F̂ (undamped) of ``kind`` on the batch, dense (P, P) in θ's order."""
    check_dense_size(model.num_params, model.dtype, max_bytes, "dense block-tridiagonal K-FAC matrix")
    diag, cross = tridiag_factors(model, loss_fn, x, y, kind, rng, mc_samples)
    return tridiag_to_dense(model, diag, cross)


# --- 3. the damped F̂⁻¹, matrix-free -------------------------------------------------------
def kron_difference_inverse(a, c_a, g, c_g):
    """(K_A, K_G, 1 − s_G s_Aᵀ) with (G ⊗ A − C^G ⊗ C^A)⁻¹ = (K_G ⊗ K_A) diag(1/(1 − s_G s_Aᵀ)) (K_G ⊗ K_A)ᵀ.

    a (a, a), g (d, d) SPD; c_a, c_g symmetric PSD ([MG15] App. B).  c_a = None means C = 0.
    """
    k_a, s_a = _whitened_eig(a, c_a)  # (a, a), (a,)
    k_g, s_g = _whitened_eig(g, c_g)  # (d, d), (d,)
    return k_a, k_g, 1 - s_g[:, None] * s_a[None, :]  # (d, a)


def _conditional_inverse(l, damped, cross_factors):
    """Layer l's (Ψ^A_l, Ψ^G_l) (None for the last layer), (K_A, K_G) and 1 − s_G s_Aᵀ of Σ_{l|l+1}⁻¹."""
    a, g = damped[l]
    if l + 1 == len(damped):
        k_a, k_g, den = kron_difference_inverse(a, None, g, None)  # Σ_L = G_L ⊗ A_L
        return None, (k_a, k_g), den
    (a_lm, g_lm), (a_m, g_m) = cross_factors[l], damped[l + 1]
    psi_a = cho_solve(a_m, a_lm.T).T  # A_{l,l+1} A_{l+1}⁻¹   (a_l, a_{l+1})
    psi_g = cho_solve(g_m, g_lm.T).T  # G_{l,l+1} G_{l+1}⁻¹   (d_l, d_{l+1})
    c_a, c_g = psi_a @ a_lm.T, psi_g @ g_lm.T  # Ψ^A A_{l+1} Ψ^Aᵀ, Ψ^G G_{l+1} Ψ^Gᵀ
    k_a, k_g, den = kron_difference_inverse(a, (c_a + c_a.T) / 2, g, (c_g + c_g.T) / 2)
    if float(den.min()) <= 0:
        raise ValueError(
            f"Σ_(l|l+1) of layers {l}, {l + 1} is not positive definite (min 1 − s_G s_A = "
            f"{float(den.min()):.3g}): the diagonal and cross factors must come from the same "
            f"statistics (averaged alike), and singular factors need damping γ > 0"
        )
    return (psi_a, psi_g), (k_a, k_g), den


def xp_linalg_error(a):
    """The LinAlgError class of a's backend (NumPy's, or CuPy's)."""
    return get_xp(a).linalg.LinAlgError


def _whitened_eig(m, c):
    """K with Kᵀ M K = I and Kᵀ C K = diag(s): M = L Lᵀ, L⁻¹ C L⁻ᵀ = E diag(s) Eᵀ, K = L⁻ᵀ E."""
    xp = get_xp(m)
    low = xp.linalg.cholesky(m)
    if c is None:
        return solve_triangular(low.T, xp.eye(m.shape[0], dtype=m.dtype), lower=False), xp.zeros(
            m.shape[0], dtype=m.dtype
        )
    w = solve_triangular(low, solve_triangular(low, c, lower=True).T, lower=True)  # L⁻¹ C L⁻ᵀ
    s, e = xp.linalg.eigh((w + w.T) / 2)
    return solve_triangular(low.T, e, lower=False), s


@dataclass(frozen=True)
class TridiagInverse:
    """The damped F̂⁻¹ = Ξᵀ Λ Ξ of block-tridiagonal K-FAC, applied layer by layer.

    psi   : ((Ψ^A_l (a_l, a_{l+1}), Ψ^G_l (d_l, d_{l+1})) for l = 0 … L−2)
    k     : ((K_A (a_l, a_l), K_G (d_l, d_l)) for every layer), Σ_{l|l+1}⁻¹'s bases (§3)
    denom : (1 − s_G s_Aᵀ  (d_l, a_l) for every layer)  (ones for the last layer)
    gamma : γ, the damping the factors were damped with
    """

    psi: tuple
    k: tuple
    denom: tuple
    gamma: float

    @classmethod
    def from_factors(cls, diag_factors, cross_factors, gamma: float):
        """Damp the diagonal factors ([MG15] §6.3), then Ψ, Σ⁻¹ for every layer ([MG15] App. B)."""
        check_factor_shapes(diag_factors, cross_factors)
        gamma = check_damping(gamma)
        damped = damped_diagonal(diag_factors, gamma)
        psi, k, denom = [], [], []
        for l in range(len(damped)):
            try:
                psi_l, k_l, den_l = _conditional_inverse(l, damped, cross_factors)
            except xp_linalg_error(damped[l][0]) as exc:
                raise ValueError(
                    f"block-tridiagonal K-FAC, layer {l}: a damped diagonal factor of layer {l} "
                    f"or {l + 1} is not positive definite ({exc}); singular factors (few samples, "
                    f"dead units, the last layer's G under cross-entropy) need damping γ > 0, "
                    f"got γ = {gamma}"
                ) from exc
            psi += [psi_l] if psi_l is not None else []
            k.append(k_l)
            denom.append(den_l)
        return cls(tuple(psi), tuple(k), tuple(denom), gamma)

    def apply(self, grads):
        """F̂_γ⁻¹ applied to per-layer matrices: [V_l (d_l, a_l)] → [ΔW̄_l (d_l, a_l)].

        u_l = V_l − Ψ^G_l V_{l+1} Ψ^A_lᵀ;  w_l = Σ_{l|l+1}⁻¹ u_l;  out_l = w_l − Ψ^G_{l−1}ᵀ w_{l−1} Ψ^A_{l−1}.
        """
        if len(grads) != len(self.k):
            raise ValueError(f"TridiagInverse.apply: got {len(grads)} layer matrices, expected {len(self.k)}")
        for l, (v, den) in enumerate(zip(grads, self.denom)):
            if tuple(v.shape) != tuple(den.shape):
                raise ValueError(
                    f"TridiagInverse.apply: layer {l} matrix has shape {tuple(v.shape)}, "
                    f"expected {tuple(den.shape)} (d_out, d_in + 1)"
                )
        u = [
            grads[l] - psi_g @ grads[l + 1] @ psi_a.T  # Ξ V: V_l − Ψ_l V_{l+1}
            for l, (psi_a, psi_g) in enumerate(self.psi)
        ] + [grads[-1]]
        w = [
            k_g @ ((k_g.T @ ul @ k_a) / den) @ k_a.T  # Σ_{l|l+1}⁻¹ u_l  (d_l, a_l)
            for ul, (k_a, k_g), den in zip(u, self.k, self.denom)
        ]
        return [
            wl - self.psi[l - 1][1].T @ w[l - 1] @ self.psi[l - 1][0] if l > 0 else wl  # Ξᵀ W
            for l, wl in enumerate(w)
        ]


# --- 4. the structure (protocol: .curvature) ------------------------------------------------
class BlockTridiagonal(Curvature):
    """Block-tridiagonal K-FAC F̂ ([MG15] §4.3, App. B; docs/math.md §11), MLPs only.

    Its protocol calls::

        statistic  the diagonal factors [(A_l, G_l)] and the cross factors [(A_{l,l+1}, G_{l,l+1})],
                   averaged with the *same* ε_k (otherwise Σ_{l|l+1} may lose definiteness);
        refresh    factored damping of the diagonal factors, then Ψ_l and Σ_{l|l+1}⁻¹
                   (:class:`TridiagInverse`), O(Σ_l a_l³ + d_l³);
        apply      F̂_γ⁻¹ = Ξᵀ Λ Ξ layer by layer, no P × P matrix.
        Only factored damping exists for this structure (λ > 0).
    """

    name = "block-tridiagonal"
    averaged = ("factors", "cross_factors")
    symmetric = ("factors",)
    exact_damping = False

    def __init__(self, model, ema_decay: float = 0.0, damping_mode: str = "factored"):
        check_chain(model)  # before anything else: a ConvNet is refused by name
        check_factor_memory(model, "block-tridiagonal K-FAC")
        super().__init__(model, ema_decay)
        if damping_mode != "factored":
            raise ValueError(
                f"kfac-tridiag damps the diagonal factors as [MG15] §6.3 (damping_mode='factored'); "
                f"damping_mode={damping_mode!r} is not defined for the block-tridiagonal inverse"
            )
        self.damping_mode = damping_mode
        self.inverse = None  # TridiagInverse

    def check_damping(self, damping):
        damping = super().check_damping(damping)
        if damping == 0:
            raise ValueError(
                "block-tridiagonal K-FAC damps its diagonal factors ([MG15] §6.3): it needs damping (λ) > 0"
            )
        return damping

    def statistic(self, stats, n):
        return {"factors": factors_from_stats(stats), "cross_factors": cross_factors_from_stats(stats)}

    def refresh(self, damping):
        self.inverse = TridiagInverse.from_factors(self.factors, self.cross_factors, damping)
        self.damping = damping

    def apply(self, layer_grads, damping=None):
        self._damping_for(damping)
        return self.inverse.apply(layer_grads)

    def to_dense(self):
        return tridiag_to_dense(self.model, self.factors, self.cross_factors)

    def memory(self):
        layers = self.model.param_layers()
        diag = sum(la.a_dim**2 + la.g_dim**2 for la in layers)
        cross = sum(l0.a_dim * l1.a_dim + l0.g_dim * l1.g_dim for l0, l1 in zip(layers[:-1], layers[1:]))
        return 2 * diag + 2 * cross

    def refresh_cost(self):
        return sum(la.a_dim**3 + la.g_dim**3 for la in self.model.param_layers())

    def state_shapes(self):
        layers = self.model.param_layers()
        return {
            "factors": [[(la.a_dim, la.a_dim), (la.g_dim, la.g_dim)] for la in layers],
            "cross_factors": [[(l0.a_dim, l1.a_dim), (l0.g_dim, l1.g_dim)] for l0, l1 in zip(layers[:-1], layers[1:])],
        }

    def _check_inverse_state(self, state, where, gamma):
        """Ψ (a_l, a_{l+1}), (d_l, d_{l+1}) for l < L; K (a_l, a_l), (d_l, d_l); 1 − s_G s_Aᵀ (d_l, a_l) > 0; γ > 0."""
        saved, layers = saved_inverse(state, where, gamma), self.model.param_layers()
        if saved is None:
            return
        keys = {"psi", "k", "denom", "gamma"}
        if not isinstance(saved, dict) or set(saved) != keys:
            raise ValueError(f"{where}['inverses'] is {saved!r:.60}, expected a dict of {sorted(keys)}")
        pairs = zip(layers[:-1], layers[1:])
        check_state_array(
            f"{where}['inverses']['psi']",
            saved["psi"],
            [[(l0.a_dim, l1.a_dim), (l0.g_dim, l1.g_dim)] for l0, l1 in pairs],
        )
        check_state_array(
            f"{where}['inverses']['k']", saved["k"], [[(la.a_dim, la.a_dim), (la.g_dim, la.g_dim)] for la in layers]
        )
        check_state_array(f"{where}['inverses']['denom']", saved["denom"], [(la.g_dim, la.a_dim) for la in layers])
        if any(float(d.min()) <= 0 for d in saved["denom"] if d.size):
            raise ValueError(
                f"{where}['inverses']['denom'] has an entry ≤ 0, expected 1 − s_G s_Aᵀ > 0 (Σ_(l|l+1) ≻ 0)"
            )
        check_state_number(f"{where}['inverses']['gamma']", saved["gamma"], low=0)
        if saved["gamma"] == 0:
            raise ValueError(f"{where}['inverses']['gamma'] is 0, expected > 0 (factored damping)")

    def _inverse_state(self):
        inv = self.inverse
        if inv is None:
            return {"inverses": None}
        return {
            "inverses": {
                "psi": tree_to_numpy(inv.psi),
                "k": tree_to_numpy(inv.k),
                "denom": tree_to_numpy(inv.denom),
                "gamma": inv.gamma,
            }
        }

    def _load_inverse_state(self, state):
        saved, dev = state["inverses"], self.model.device
        self.inverse = (
            None
            if saved is None
            else TridiagInverse(
                tuple(tuple(p) for p in tree_to_device_list(saved["psi"], dev)),
                tuple(tuple(p) for p in tree_to_device_list(saved["k"], dev)),
                tuple(tree_to_device_list(saved["denom"], dev)),
                float(saved["gamma"]),
            )
        )
