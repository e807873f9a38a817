"""The diagonal of the Fisher: one number per parameter (docs/math.md §3).

With u_{s,n} = J_nᵀ e_{s,n} the backpropagated gradients of the kind's seeds,

    diag F = (1/N) Σ_n Σ_s u_{s,n} ⊙ u_{s,n}                            (P,)

and, per layer, u_{s,n} is the per-sample layer gradient Σ_t g_{s,n,t} ā_{n,t}ᵀ (d_out, a_dim),
so the diagonal is the mean of its squares, entry by entry.  The step is
Δ = −(diag F + γ I)⁻¹ ∇h: damping is exact, a division per entry.

Index legend: s seed, n sample, t location (T = 1 for Linear), d output, k input feature.
"""

from __future__ import annotations

from ..backend import get_xp
from ..params import wbar_to_flat
from ..validate import check_damping, check_state_array
from .curvature import Curvature


def squared_gradient_mean(a_bar, g):
    """(1/N) Σ_{s,n} (Σ_t g_{s,n,t} ā_{n,t}ᵀ)²  entry by entry.

    a_bar (N, T, a_dim), g (S, N, T, d_out) → (d_out, a_dim)"""
    xp = get_xp(a_bar)
    n, t, _ = a_bar.shape
    if t == 1:  # Linear: the per-sample gradient is g āᵀ, so its square is g² (ā²)ᵀ
        return xp.einsum("snd,nk->dk", g[:, :, 0] ** 2, a_bar[:, 0] ** 2) / n  # the 1/N of F
    grads = xp.einsum("sntd,ntk->sndk", g, a_bar)  # per-sample layer gradients   (S, N, d_out, a_dim)
    return xp.einsum("sndk,sndk->dk", grads, grads) / n  # the 1/N of F


class Diagonal(Curvature):
    """diag F, kept per layer in W̄ form: statistic (1/N) Σ u ⊙ u; refresh nothing; apply ∇h ⊘ (diag F + γ).

    Memory P, refresh O(1), apply O(P).
    """

    name = "diagonal"
    averaged = ("diagonal",)

    def statistic(self, stats, n):
        return {"diagonal": [squared_gradient_mean(st.a_bar, st.g) for st in stats]}  # [(d_out, a_dim)]

    def refresh(self, damping):
        self.damping = check_damping(damping)

    def apply(self, layer_grads, damping=None):
        gamma = self._damping_for(damping)
        return [v / (d + gamma) for v, d in zip(layer_grads, self.diagonal)]

    def to_dense(self):
        layers = self.model.param_layers()
        xp = get_xp(self.diagonal[0])
        diag = xp.concatenate([wbar_to_flat(la, d) for la, d in zip(layers, self.diagonal)])  # (P,)
        return xp.diag(diag)

    def memory(self):
        return self.model.num_params

    def state_shapes(self):
        return {"diagonal": [(la.g_dim, la.a_dim) for la in self.model.param_layers()]}

    def check_state(self, state, where="state"):
        super().check_state(state, where)
        check_state_array(
            f"{where}['diagonal']", state["diagonal"], self.state_shapes()["diagonal"], low=0, optional=True
        )

    def refresh_cost(self):
        return 0
