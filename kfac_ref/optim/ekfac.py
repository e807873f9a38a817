"""EKFAC [GLBV18] as an optimizer: K-FAC's eigenbasis, the diagonal refitted — docs/math.md §12.

A :class:`~.kfac.KFAC` with two schedules for its curvature ([GLBV18] Alg. 1):

- every T_inv steps (and at the first), the **eigenbases** U_A, U_G (U_Ω, U_Γ for
  Conv2d) of the moving-average factors, two eigh per layer, O(a³ + d³);
- every T_scale steps (default 1, as [GLBV18]), and whenever the bases change, the
  **scalings** S = (1/m) Σ_{n,s} (U_Gᵀ ∇_{W̄}ℓ_{s,n} U_A)² (d_out, a_dim) of the batch's
  seeds, folded into a moving average S ← ε_j S + (1 − ε_j) S_batch with
  ε_j = min(1 − 1/j, ε) (the factors' ε).  j counts the refits *in the current basis*:
  a diagonal measured in one basis means nothing in another, so a new basis restarts
  the average (j = 1 takes the batch value).  The refit is the rotation of this
  batch's statistics; it is timed with the inversion phase, where the basis it needs
  is built.

The proposal is Δ_l = −(Q diag(S) Qᵀ + γ I)⁻¹ ∇_l h = −U_G [(U_Gᵀ ∇_{W̄}h U_A) ⊘ (S + γ)] U_Aᵀ,
γ = λ + η_wd.  The damping is exact (the curvature is diagonal in an orthonormal
basis), so it follows a Levenberg–Marquardt change of λ at once; ``damping_mode`` is
therefore ignored (kept for K-FAC's factors only, which EKFAC uses for the bases alone).
Everything else — phases, T_cov, KL-clipping, momentum, ``rescale``, LM — is K-FAC's.
"""

from __future__ import annotations

from ..backend import to_device, to_numpy
from ..fisher.ekfac import EKFACInverse, eigenbasis, eigenbasis_scalings
from ..fisher.kron import precondition_layers
from ..validate import check_number
from .kfac import KFAC


class EKFAC(KFAC):
    """``EKFAC(model, loss_fn, lr=0.1, momentum=0.9, damping=0.3, kind="mc", T_scale=1, kl_clip=1e-3, ...)``.

    K-FAC's hyper-parameters (docs/hyperparameters.md) and ``T_scale``, the period of the
    scalings' refit.  Linear and Conv2d layers.
    """

    name = "ekfac"

    def __init__(self, model, loss_fn, *args, T_scale: int = 1, **kwargs):
        super().__init__(model, loss_fn, *args, **kwargs)
        self.T_scale = check_number("T_scale", T_scale, low=1, integer=True)
        self.bases = None  # [(U_A (a_dim, a_dim), U_G (d_out, d_out))] per layer
        self.scalings = None  # [S (d_out, a_dim)] per layer, moving average in the current bases
        self.scale_updates = 0  # j in ε_j, refits since the bases were last refreshed
        self._stats = None  # this step's statistics, when the scalings are refitted

    def hyper(self) -> dict:
        return {**super().hyper(), "T_scale": self.T_scale}

    # ---- schedules --------------------------------------------------------------------
    def _bases_due(self) -> bool:
        return self.bases is None or self.steps % self.T_inv == 0

    def _scalings_due(self) -> bool:
        return self._bases_due() or self.steps % self.T_scale == 0

    # ---- step 2: factors every T_cov, this batch's statistics when S is refitted -------
    def _update_curvature(self, res, x, y, rng):
        stats = None
        if self.factors is None or self.steps % self.T_cov == 0:
            stats = self._batch_stats(res, x, y, rng)
            self._fold_stats(stats)
        self._stats = None
        if self._scalings_due():  # (the bases are refreshed after this, in the inversion phase)
            self._stats = self._batch_stats(res, x, y, rng) if stats is None else stats

    # ---- step 3: bases every T_inv, scalings every T_scale -----------------------------
    def _update_inverses(self):
        if self._bases_due():
            self._refresh_inverses()
        if self._stats is not None:  # a refit step (_scalings_due, set in the curvature phase)
            self._refit_scalings(self._stats)
            self._stats = None
        self.inverses = [EKFACInverse(u_a, u_g, s, self.gamma) for (u_a, u_g), s in zip(self.bases, self.scalings)]
        self.inverse_damping = self.gamma

    def _refresh_inverses(self):
        """New eigenbases of the moving-average factors; the scalings' average restarts."""
        self.bases = [eigenbasis(a, g) for a, g in self.factors]
        self.scalings, self.scale_updates = None, 0

    def _refit_scalings(self, stats):
        """S ← ε_j S + (1 − ε_j) S_batch in the current bases ([GLBV18] Alg. 1, with a moving average)."""
        batch = [eigenbasis_scalings(u_a, u_g, st.a_bar, st.g) for (u_a, u_g), st in zip(self.bases, stats)]
        self.scale_updates += 1
        if self.scalings is None:
            self.scalings = batch
        else:
            eps = min(1 - 1 / self.scale_updates, self.ema_decay)
            self.scalings = [eps * s + (1 - eps) * b for s, b in zip(self.scalings, batch)]

    def precondition(self, layer_grads):
        """⊕_l (F_EKFAC,l + γ I)⁻¹ ∇_l h in θ's order.  [(d_out, a_dim)] → (P,)"""
        return precondition_layers(
            self.model.param_layers(), [inv.with_damping(self.gamma) for inv in self.inverses], layer_grads
        )

    # ---- state ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "scale_updates": self.scale_updates,
            "bases": None if self.bases is None else [[to_numpy(a), to_numpy(g)] for a, g in self.bases],
            "scalings": None if self.scalings is None else [to_numpy(s) for s in self.scalings],
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        dev = self.model.device
        self.scale_updates = int(state["scale_updates"])
        self.bases = (
            None if state["bases"] is None else [(to_device(a, dev), to_device(g, dev)) for a, g in state["bases"]]
        )
        self.scalings = None if state["scalings"] is None else [to_device(s, dev) for s in state["scalings"]]

    def _inverses_state(self):
        return None  # rebuilt from the bases and scalings (and γ) at every step

    def _inverses_from_state(self, saved):
        return None
