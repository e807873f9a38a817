"""Block-tridiagonal K-FAC ([MG15] §4.3, App. B) as an optimizer — docs/math.md §11.

A :class:`~.kfac.KFAC` whose curvature keeps, besides the diagonal factors (A_l, G_l),
the cross-layer factors of consecutive Linear layers

    A_{l,l+1} = (1/N) Σ_n ā_{l,n} ā_{l+1,n}ᵀ            (a_l, a_{l+1}),
    G_{l,l+1} = (1/N) Σ_{n,s} g_{l,s,n} g_{l+1,s,n}ᵀ    (d_l, d_{l+1})

from the same seeds, averaged with the *same* ε_k as the diagonal ones (otherwise the
joint statistics may stop being a covariance and Σ_{l|l+1} may lose definiteness, §11).
Every T_inv steps the damped F̂_γ⁻¹ = Ξᵀ Λ Ξ is rebuilt (:class:`~kfac_ref.fisher.tridiag.TridiagInverse`:
factored Tikhonov damping of the diagonal factors, [MG15] §6.3), and the proposal is
Δ = −F̂_γ⁻¹ ∇h, applied layer by layer without any P × P matrix.  Everything else —
phases, T_cov, KL-clipping, momentum, ``rescale``, Levenberg–Marquardt — is K-FAC's.

MLPs only (consecutive Linear layers); a Conv2d layer is refused at construction.
Only ``damping_mode="factored"`` exists for this structure.
"""

from __future__ import annotations

from ..backend import get_xp, to_device, to_numpy
from ..fisher.tridiag import TridiagInverse, check_chain, cross_factors_from_stats
from ..params import wbar_to_flat
from .kfac import KFAC


class KFACTridiag(KFAC):
    """``KFACTridiag(model, loss_fn, lr=0.1, momentum=0.9, damping=0.3, kind="mc", kl_clip=1e-3, ...)``.

    K-FAC's hyper-parameters (README.md, docs/hyperparameters.md); the model must be a
    chain of Linear layers (an MLP).
    """

    name = "kfac-tridiag"

    def __init__(self, model, loss_fn, *args, **kwargs):
        check_chain(model)  # before anything else: a ConvNet is refused by name, whatever the hypers
        super().__init__(model, loss_fn, *args, **kwargs)
        if self.damping_mode != "factored":
            raise ValueError(
                f"kfac-tridiag damps the diagonal factors as [MG15] §6.3 (damping_mode='factored'); "
                f"damping_mode={self.damping_mode!r} is not defined for the block-tridiagonal inverse"
            )
        self.cross_factors = None  # [(A_{l,l+1}, G_{l,l+1})] moving averages, l = 0 … L−2

    # ---- step 2: diagonal and cross factors, one ε_k ------------------------------------
    def _fold_stats(self, stats):
        super()._fold_stats(stats)  # k ← k + 1, the diagonal factors
        self.cross_factors = self._ema(self.cross_factors, cross_factors_from_stats(stats))

    # ---- step 3: F̂_γ⁻¹ ----------------------------------------------------------------
    def _refresh_inverses(self):
        """Ψ, Σ_{l|l+1}⁻¹ from the damped diagonal and the cross factors ([MG15] App. B)."""
        self.inverses = TridiagInverse.from_factors(self.factors, self.cross_factors, self.gamma)
        self.inverse_damping = self.gamma

    def precondition(self, layer_grads):
        """F̂_γ⁻¹ ∇h in θ's order.  [(d_out, a_dim)] per layer → (P,)"""
        xp = get_xp(layer_grads[0])
        return xp.concatenate(
            [wbar_to_flat(layer, d) for layer, d in zip(self.model.param_layers(), self.inverses.apply(layer_grads))]
        )

    # ---- state ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "cross_factors": None
            if self.cross_factors is None
            else [[to_numpy(a), to_numpy(g)] for a, g in self.cross_factors],
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        dev = self.model.device
        self.cross_factors = (
            None
            if state["cross_factors"] is None
            else [(to_device(a, dev), to_device(g, dev)) for a, g in state["cross_factors"]]
        )

    def _inverses_state(self):
        inv = self.inverses
        return {
            "psi": [[to_numpy(pa), to_numpy(pg)] for pa, pg in inv.psi],
            "k": [[to_numpy(ka), to_numpy(kg)] for ka, kg in inv.k],
            "denom": [to_numpy(d) for d in inv.denom],
            "gamma": inv.gamma,
        }

    def _inverses_from_state(self, saved):
        dev = self.model.device
        return TridiagInverse(
            tuple((to_device(pa, dev), to_device(pg, dev)) for pa, pg in saved["psi"]),
            tuple((to_device(ka, dev), to_device(kg, dev)) for ka, kg in saved["k"]),
            tuple(to_device(d, dev) for d in saved["denom"]),
            float(saved["gamma"]),
        )
