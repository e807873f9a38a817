"""EKFAC [GLBV18]: K-FAC's Kronecker eigenbasis with the diagonal refitted from per-sample gradients.

docs/math.md §12.  Index legend: s seed, n sample, t location, k input feature (ā), d output (g).
The method, step by step::

    1. **Eigenbasis** of the layer's K-FAC factors (A, G for Linear; Ω, Γ for Conv2d, kfac_ref.fisher.kfac):
           A = U_A diag(d_A) U_Aᵀ,  G = U_G diag(d_G) U_Gᵀ,   Q = U_G ⊗ U_A  (row-major vec(W̄))
       so Qᵀ vec(V) = vec(U_Gᵀ V U_A).  K-FAC's block is Q diag(d_G ⊗ d_A) Qᵀ.  A positive
       rescaling of Ω or Γ (the location split of docs/math.md §5) leaves U_Ω, U_Γ unchanged, so
       EKFAC does not depend on that convention.
    2. **Scalings** ([GLBV18] eq. for s*): with ∇_{W̄}ℓ_{s,n} = Σ_t g_{s,n,t} ā_{n,t}ᵀ the
       per-sample gradient of the kind's seed s (a sum over locations for Conv2d),
           S = (1/N) Σ_n Σ_s (U_Gᵀ ∇_{W̄}ℓ_{s,n} U_A)²                 (d_out, a_dim)
       which is exactly diag(Qᵀ F_l Q) for the layer block F_l = (1/N) Σ_{n,s} u_{s,n} u_{s,n}ᵀ
       of fisher.dense, reshaped to (d_out, a_dim).  The EKFAC block
           F_EKFAC = Q diag(S) Qᵀ
       is the Frobenius-closest matrix to F_l that is diagonal in the basis Q; K-FAC's
       block is another such matrix, so EKFAC's error is never larger ([GLBV18] §3).
    3. **Damped inverse** ([GLBV18] Alg. 1): (F_EKFAC + λ I)⁻¹ vec(V) = vec(U_G [(U_Gᵀ V U_A) ⊘ (S + λ)] U_Aᵀ).
       The bases cost O(a³ + d³) per refresh (two eigh, every T_inv steps); refitting S
       alone costs one rotation of the statistics, O(N T (a² + d²) + S N d a), and can be
       done more often (every T_scale steps).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..backend import get_xp
from ..validate import check_damping, check_number, check_state_array, check_state_number
from .curvature import Curvature, moving_average, tree_to_device_list, tree_to_numpy
from .dense import blocks_to_dense
from .diagonal import squared_gradient_mean
from .kfac import check_factor_memory, check_supported, factors_from_stats, wbar_block_to_param_order
from .memory import check_dense_size
from .vectors import fisher_stats


def eigenbasis(a, g):
    """(U_A (a_dim, a_dim), U_G (d_out, d_out)): eigenvectors of K-FAC's factors (Ω, Γ for Conv2d)."""
    xp = get_xp(a)
    return xp.linalg.eigh(a)[1], xp.linalg.eigh(g)[1]


def eigenbasis_scalings(u_a, u_g, a_bar, g):
    """S = (1/N) Σ_{s,n} (U_Gᵀ [Σ_t g_{s,n,t} ā_{n,t}ᵀ] U_A)².

    a_bar (N, T, a_dim), g (S, N, T, d_out) → (d_out, a_dim)"""
    return squared_gradient_mean(a_bar @ u_a, g @ u_g)  # in the eigenbasis: ā U_A, g U_G


@dataclass(frozen=True)
class EKFACInverse:
    """One layer's EKFAC curvature: bases U_A, U_G and scalings S; ``apply`` solves with F_EKFAC + λI.

    u_a : (a_dim, a_dim)   u_g : (d_out, d_out)   s : (d_out, a_dim)   damping : λ ≥ 0
    """

    u_a: object
    u_g: object
    s: object
    damping: float

    @classmethod
    def from_stats(cls, a, g, a_bar, g_stats, damping: float):
        """Bases from the factors (A, G), scalings from the statistics (ā, g) of the same or a new batch."""
        u_a, u_g = eigenbasis(a, g)
        return cls(u_a, u_g, eigenbasis_scalings(u_a, u_g, a_bar, g_stats), check_damping(damping))

    def refit_scalings(self, a_bar, g_stats):
        """The T_scale refresh of [GLBV18]: new S from new statistics, the bases kept."""
        return replace(self, s=eigenbasis_scalings(self.u_a, self.u_g, a_bar, g_stats))

    def with_scalings(self, s):
        """Same bases, given scalings S (d_out, a_dim), e.g. a moving average of refits."""
        if tuple(s.shape) != tuple(self.s.shape):
            raise ValueError(f"EKFAC scalings have shape {tuple(s.shape)}, expected {tuple(self.s.shape)}")
        return replace(self, s=s)

    def with_damping(self, damping: float):
        return replace(self, damping=check_damping(damping))

    def apply(self, v):
        """U_G [(U_Gᵀ V U_A) ⊘ (S + λ)] U_Aᵀ.  (d_out, a_dim) → (d_out, a_dim)"""
        if tuple(v.shape) != tuple(self.s.shape):
            raise ValueError(f"EKFACInverse.apply: V has shape {tuple(v.shape)}, expected {tuple(self.s.shape)}")
        inner = self.u_g.T @ v @ self.u_a  # V in the Kronecker eigenbasis
        return self.u_g @ (inner / (self.s + self.damping)) @ self.u_a.T

    def dense(self):
        """Q diag(vec S) Qᵀ, Q = U_G ⊗ U_A, in row-major vec(W̄) order.  (d_out·a_dim, d_out·a_dim)"""
        xp = get_xp(self.s)
        q = xp.kron(self.u_g, self.u_a)  # (p_l, p_l), column (d, k) ↦ d·a_dim + k
        return (q * self.s.reshape(-1)[None, :]) @ q.T


def ekfac_layers(model, loss_fn, x, y, kind: str, rng=None, mc_samples: int = 1, damping: float = 0.0):
    """One :class:`EKFACInverse` per Linear/Conv2d layer, bases and scalings from one set of seeds."""
    check_supported(model)
    stats, _ = fisher_stats(model, loss_fn, x, y, kind, rng, mc_samples)
    return [
        EKFACInverse.from_stats(a, g, st.a_bar, st.g, damping) for (a, g), st in zip(factors_from_stats(stats), stats)
    ]


def ekfac_dense(model, loss_fn, x, y, kind: str, rng=None, mc_samples: int = 1, max_bytes=None):
    """EKFAC's block-diagonal approximation (undamped) as a dense (P, P) matrix in θ's order."""
    check_dense_size(model.num_params, model.dtype, max_bytes, "dense EKFAC matrix")
    layers = ekfac_layers(model, loss_fn, x, y, kind, rng, mc_samples)
    return blocks_to_dense(
        model, [wbar_block_to_param_order(layer, layer, ek.dense()) for layer, ek in zip(model.param_layers(), layers)]
    )


# ---- the structure (protocol: .curvature) ----------------------------------------------------
class EKFAC(Curvature):
    """EKFAC [GLBV18]: K-FAC's eigenbasis Q = U_G ⊗ U_A, the diagonal S refitted (docs/math.md §12).

    Its protocol calls::

        statistic  K-FAC's factors [(A, G)], averaged with ε_k (every T_cov steps);
        refresh    new bases U_A, U_G of the averaged factors (two eigh per layer, O(a³ + d³));
                   the scalings' average restarts — a diagonal in one basis means nothing in another;
        refit      S ← ε_j S + (1 − ε_j) S_batch, S_batch = (1/N) Σ (U_Gᵀ ∇_{W̄}ℓ U_A)², j counting
                   the refits in the current basis — every ``T_scale`` steps and after every refresh;
        apply      Δ_l = U_G [(U_Gᵀ ∇_{W̄}h U_A) ⊘ (S + γ)] U_Aᵀ — exact damping, λ = 0 allowed.
        Memory 2 Σ_l (a_l² + d_l²) + P.
    """

    name = "ekfac"
    averaged = ("factors",)

    def __init__(self, model, ema_decay: float = 0.0, T_scale: int = 1):
        check_supported(model)
        check_factor_memory(model, "EKFAC")
        super().__init__(model, ema_decay)
        self.T_scale = check_number("T_scale", T_scale, low=1, integer=True)
        self.bases = None  # [(U_A (a_dim, a_dim), U_G (d_out, d_out))] per layer
        self.scalings = None  # [S (d_out, a_dim)] per layer, moving average in the current bases
        self.scale_updates = 0  # j in ε_j

    def statistic(self, stats, n):
        return {"factors": factors_from_stats(stats)}  # [(A, G)]

    def refresh(self, damping):
        self.bases = [eigenbasis(a, g) for a, g in self.factors]
        self.scalings, self.scale_updates = None, 0
        self.damping = check_damping(damping)

    def refit_due(self, step, refreshing):
        return refreshing or step % self.T_scale == 0

    def refit(self, stats, n):
        """S ← ε_j S + (1 − ε_j) S_batch in the current bases ([GLBV18] Alg. 1, with a moving average)."""
        batch = [eigenbasis_scalings(u_a, u_g, st.a_bar, st.g) for (u_a, u_g), st in zip(self.bases, stats)]
        self.scale_updates += 1
        self.scalings = moving_average(self.scalings, batch, self.scale_updates, self.ema_decay)

    def apply(self, layer_grads, damping=None):
        gamma = self._damping_for(damping)
        return [
            EKFACInverse(u_a, u_g, s, gamma).apply(v)
            for (u_a, u_g), s, v in zip(self.bases, self.scalings, layer_grads)
        ]

    def to_dense(self):
        """⊕_l Q_l diag(S_l) Q_lᵀ in θ's order (needs a refresh and a refit)."""
        if self.scalings is None:
            raise ValueError("ekfac: no scalings yet — refresh and refit before to_dense")
        layers = self.model.param_layers()
        return blocks_to_dense(
            self.model,
            [
                wbar_block_to_param_order(la, la, EKFACInverse(u_a, u_g, s, 0.0).dense())
                for la, (u_a, u_g), s in zip(layers, self.bases, self.scalings)
            ],
        )

    def inverse_dense(self, damping):
        """⊕_l Q_l diag(1/(S_l + γ)) Q_lᵀ with the current bases and scalings (damping is exact)."""
        xp = get_xp(self.scalings[0])
        eye = xp.eye(self.model.num_params, dtype=self.scalings[0].dtype)
        return xp.stack([self.apply_flat(e, damping) for e in eye], axis=1)

    def memory(self):
        return 2 * sum(la.a_dim**2 + la.g_dim**2 for la in self.model.param_layers()) + self.model.num_params

    def refresh_cost(self):
        return sum(la.a_dim**3 + la.g_dim**3 for la in self.model.param_layers())

    def state_shapes(self):
        return {"factors": [[(la.a_dim, la.a_dim), (la.g_dim, la.g_dim)] for la in self.model.param_layers()]}

    def _check_inverse_state(self, state, where, gamma):
        """Bases: orthonormal (a, a), (d, d) per layer, once refreshed; scalings: (d, a) ≥ 0 once refitted."""
        layers = self.model.param_layers()
        j = check_state_number(f"{where}['scale_updates']", state["scale_updates"], low=0, integer=True)
        bases = [[(la.a_dim, la.a_dim), (la.g_dim, la.g_dim)] for la in layers]
        check_state_array(f"{where}['bases']", state["bases"], bases, optional=gamma is None, orthonormal=True)
        if gamma is None and state["bases"] is not None:
            raise ValueError(f"{where}['bases'] is set but {where}['inverse_damping'] is null (never refreshed)")
        scalings = [(la.g_dim, la.a_dim) for la in layers]
        check_state_array(f"{where}['scalings']", state["scalings"], scalings, low=0, optional=j == 0)
        if j and gamma is None:
            raise ValueError(f"{where}['scale_updates'] is {j} but there are no bases (inverse_damping is null)")

    def _inverse_state(self):
        return {
            "scale_updates": self.scale_updates,
            "bases": tree_to_numpy(self.bases),
            "scalings": tree_to_numpy(self.scalings),
        }

    def _load_inverse_state(self, state):
        dev = self.model.device
        self.scale_updates = int(state["scale_updates"])
        self.bases = None if state["bases"] is None else [tuple(p) for p in tree_to_device_list(state["bases"], dev)]
        self.scalings = tree_to_device_list(state["scalings"], dev)
