"""K-FAC [MG15] (KFC [GM16] for Conv2d layers) as an optimizer.

One step reads as [MG15] Algorithm 1, in the phases of :mod:`.base` (docs/math.md §4–6):

1. forward_backward: h, ∇h per layer (∇_{W̄} h), and the trace of the forward pass.
2. curvature (every T_cov steps): backpropagate the Fisher seeds of ``kind``
   through that trace; per layer A = E[ā āᵀ], G = E[g gᵀ] (Ω, Γ for conv);
   moving averages X ← ε_k X + (1 − ε_k) X_batch, ε_k = min(1 − 1/k, ε).
3. inversion (every T_inv steps): damped inverses of the factors — factored
   Tikhonov damping with π, or exact damping through eigendecompositions —
   and the proposal Δ_l = −(G_l ⊗ A_l + damping)⁻¹ ∇_l h = −G⁻¹ ∇_{W̄} h A⁻¹.
4. update: one step-size rule (:mod:`.quadratic`) —
   KL-clipping ν (the default) then heavy-ball momentum and η, or
   [MG15] §7's (α, μ) from the exact quadratic model (``rescale=True``);
   θ ← θ + δ; and, every T₁ steps with ``adapt_damping=True``, the
   Levenberg–Marquardt test of λ at θ + δ ([MG15] §6.5).

The defaults are the textbook method: factors from the whole mini-batch at every
step, inverses refreshed every step, a safeguard on the step length (KL-clipping,
κ = 10⁻³).  Every amortisation is an explicit option: ``T_cov``, ``T_inv``,
``stats_fraction`` (factors from the first m samples), ``model_fraction``.
"""

from __future__ import annotations

import dataclasses

from ..backend import get_xp, to_device, to_numpy
from ..backprop import forward
from ..fisher.kfac import check_supported, factors_from_stats
from ..fisher.kron import EigenInverse, FactoredInverse, precondition_layers
from ..fisher.seeds import check_kind, check_mc_samples
from ..fisher.vectors import fisher_stats
from ..jvp import fisher_gram_jvp
from ..params import flat_to_wbar, get_flat_params, layer_slices
from ..validate import check_damping, check_flag, check_number
from .base import Optimizer, needs_rng
from .quadratic import kl_clip_factor, lm_ratio, lm_update, model_change, rescale_coefficients, scaled_change

DAMPING_MODES = ("factored", "exact")


class KFAC(Optimizer):
    """``KFAC(model, loss_fn, lr=0.1, momentum=0.9, damping=0.3, kind="mc", kl_clip=1e-3, ...)``.

    See docs/hyperparameters.md for every hyper-parameter, its symbol in [MG15] and its default.
    """

    name = "kfac"

    def __init__(
        self,
        model,
        loss_fn,
        lr: float = 0.1,
        momentum: float = 0.9,
        damping: float = 0.3,
        kind: str = "mc",
        mc_samples: int = 1,
        T_cov: int = 1,
        T_inv: int = 1,
        ema_decay: float = 0.95,
        damping_mode: str = "factored",
        weight_decay: float = 0.0,
        stats_fraction: float = 1.0,
        kl_clip: float | None = 1e-3,
        rescale: bool = False,
        model_fraction: float = 1.0,
        adapt_damping: bool = False,
        T_adapt: int = 5,
        omega: float | None = None,
        min_damping: float = 1e-8,
    ):
        super().__init__(model, loss_fn, lr, momentum, weight_decay)
        check_supported(model)
        self.damping = check_damping(damping)
        self.kind = check_kind(kind)
        self.mc_samples = check_mc_samples(mc_samples, self.kind)
        self.T_cov = check_number("T_cov", T_cov, low=1, integer=True)
        self.T_inv = check_number("T_inv", T_inv, low=1, integer=True)
        self.ema_decay = check_number("ema_decay (ε)", ema_decay, low=0, high=1)
        if self.ema_decay == 1:
            raise ValueError("ema_decay (ε) must be < 1, got 1 (the factors would never change)")
        if damping_mode not in DAMPING_MODES:
            raise ValueError(f"unknown damping_mode {damping_mode!r}: expected one of {DAMPING_MODES}")
        self.damping_mode = damping_mode
        if self.damping_mode == "factored" and self.damping == 0:
            raise ValueError("damping_mode='factored' needs damping (λ) > 0; use damping_mode='exact' for λ = 0")
        self.stats_fraction = check_number("stats_fraction", stats_fraction, low=0, high=1, low_open=True)
        self.kl_clip = None if kl_clip is None else check_number("kl_clip (κ)", kl_clip, low=0, low_open=True)
        self.rescale = check_flag("rescale", rescale)
        self.model_fraction = check_number("model_fraction", model_fraction, low=0, high=1, low_open=True)
        self.adapt_damping = check_flag("adapt_damping", adapt_damping)
        self.T_adapt = check_number("T_adapt (T₁)", T_adapt, low=1, integer=True)
        # ω₁ = (19/20)^{T₁} [MG15] §6.5
        self.omega = (
            (19 / 20) ** self.T_adapt
            if omega is None
            else check_number("omega (ω₁)", omega, low=0, high=1, low_open=True)
        )
        self.min_damping = check_number("min_damping", min_damping, low=0)
        if self.adapt_damping and self.min_damping > self.damping:  # LM's floor above its start
            raise ValueError(f"min_damping ({self.min_damping:g}) must be ≤ damping (λ = {self.damping:g})")
        if self.kl_clip is not None and self.rescale:
            raise ValueError(
                "kl_clip bounds η² ∇hᵀF̃⁻¹∇h of the plain step; with rescale=True the exact "
                "quadratic model sets the step size (α), which would undo the clipping: "
                "pass kl_clip=None with rescale=True"
            )
        # state
        self.factors = None  # [(A, G)] moving averages
        self.inverses = None  # [FactoredInverse | EigenInverse]
        self.stat_updates = 0  # k in ε_k = min(1 − 1/k, ε)
        self.prev_delta = None  # δ₀, the previous step (rescale=True)
        self.inverse_damping = None  # the γ the current inverses were built with

    def hyper(self) -> dict:
        return {
            **super().hyper(),
            "damping": self.damping,
            "kind": self.kind,
            "mc_samples": self.mc_samples,
            "T_cov": self.T_cov,
            "T_inv": self.T_inv,
            "ema_decay": self.ema_decay,
            "damping_mode": self.damping_mode,
            "stats_fraction": self.stats_fraction,
            "kl_clip": self.kl_clip,
            "rescale": self.rescale,
            "model_fraction": self.model_fraction,
            "adapt_damping": self.adapt_damping,
            "T_adapt": self.T_adapt,
            "omega": self.omega,
            "min_damping": self.min_damping,
        }

    @property
    def gamma(self) -> float:
        """γ = λ + η_wd, the damping of the curvature the step is preconditioned with."""
        return self.damping + self.weight_decay

    # ---- the phases of one step -----------------------------------------------------
    def _direction(self, res, grad, theta, x, y, rng, timer, info):
        with timer("curvature"):  # step 2
            self._update_curvature(res, x, y, rng)
        with timer("inversion"):  # step 3
            self._update_inverses()
            proposal = -self.precondition(self._layer_grads(res, theta))  # Δ = −F̃⁻¹∇h  (P,)
        with timer("update"):  # step 4
            if self.rescale:
                delta = self._rescaled_step(res, proposal, grad, x, info)
            else:
                if self.kl_clip is not None:
                    nu = kl_clip_factor(self.lr, self.kl_clip, -float(proposal @ grad))
                    proposal = nu * proposal
                    info["kl_clip_nu"] = nu
                delta = self._momentum_step(-proposal)
                if self._lm_due():
                    info["model_change"] = self._model_change(res, x, delta, grad)
            self.prev_delta = delta
            info["damping"] = self.damping
            return delta

    def _after_update(self, res, theta, x, y, timer, info) -> None:
        """Levenberg–Marquardt ([MG15] §6.5): ρ from one more forward pass at θ + δ, same batch."""
        if not self._lm_due():
            return
        with timer("update"):
            h_old = res.loss + 0.5 * self.weight_decay * float(theta @ theta)  # the objective M models
            h_new = float(self.loss_fn(self.model(x), y))
            if self.weight_decay:
                new = get_flat_params(self.model)
                h_new += 0.5 * self.weight_decay * float(new @ new)
            rho = lm_ratio(h_old, h_new, info["model_change"])
            self.damping = max(self.min_damping, lm_update(self.damping, rho, self.omega))
        info["rho"] = rho
        info["damping"] = self.damping

    def _lm_due(self) -> bool:
        return self.adapt_damping and (self.steps + 1) % self.T_adapt == 0

    # ---- step 2: statistics ---------------------------------------------------------
    def _stats_size(self, n: int) -> int:
        """m, the number of samples the factors are estimated on (``stats_fraction`` of N)."""
        return max(1, int(round(self.stats_fraction * n)))

    def _update_curvature(self, res, x, y, rng):
        """Step 2: the statistics, every T_cov steps (and at the first)."""
        if self.factors is None or self.steps % self.T_cov == 0:
            self._update_factors(res, x, y, rng)

    def _update_factors(self, res, x, y, rng):
        """Batch factors from the Fisher seeds, folded into the moving averages."""
        self._fold_stats(self._batch_stats(res, x, y, rng))

    def _batch_stats(self, res, x, y, rng):
        """Per-layer statistics (ā, g) of the Fisher seeds on the first m samples of the batch.

        On the whole batch the gradient's trace is reused; with stats_fraction < 1 the
        first m samples get a forward pass of their own (cost ∝ m, only on these steps).
        """
        needs_rng(self.kind, rng)
        m = self._stats_size(x.shape[0])
        trace = res.trace if m == x.shape[0] else forward(self.model, x[:m])
        stats, _ = fisher_stats(self.model, self.loss_fn, x[:m], y[:m], self.kind, rng, self.mc_samples, trace=trace)
        return stats

    def _fold_stats(self, stats):
        """The batch factors [(A, G)] of these statistics folded into the moving averages."""
        self._fold_factors(factors_from_stats(stats))

    def _fold_factors(self, batch):
        """Batch factors [(A, G)] folded into the moving averages (k ← k + 1)."""
        self.stat_updates += 1
        self.factors = self._ema(self.factors, batch)

    def _ema(self, old, batch):
        """X ← ε_k X + (1 − ε_k) X_batch over nested lists of arrays, ε_k = min(1 − 1/k, ε).

        The first update (``old`` None, or k = 1) takes the batch value.
        """
        if old is None:
            return batch
        eps = min(1 - 1 / self.stat_updates, self.ema_decay)
        if isinstance(batch, (list, tuple)):
            return type(batch)(self._ema(o, b) for o, b in zip(old, batch))
        return eps * old + (1 - eps) * batch

    # ---- step 3: inverses and the proposal ------------------------------------------
    def _update_inverses(self):
        """Step 3: refresh the inverses every T_inv steps (and at the first).

        Factored inverses bake in γ: an LM change of λ reaches them at the next refresh
        (exact damping follows λ at once).  Following λ at every change made the digits
        runs unstable once LM had shrunk λ.
        """
        if self.inverses is None or self.steps % self.T_inv == 0:
            self._refresh_inverses()

    def _refresh_inverses(self):
        """Damped inverses (factored π) or eigendecompositions (exact damping)."""
        cls = FactoredInverse if self.damping_mode == "factored" else EigenInverse
        self.inverses = [cls.from_factors(a, g, self.gamma) for a, g in self.factors]
        self.inverse_damping = self.gamma

    def _layer_grads(self, res, theta):
        """∇_{W̄} (h + ½ η_wd ‖θ‖²) per layer, (d_out, a_dim) each — without a round trip through θ."""
        if not self.weight_decay:
            return res.layer_grads
        return [
            g + self.weight_decay * flat_to_wbar(layer, theta[sl])
            for g, layer, sl in zip(res.layer_grads, self.model.param_layers(), layer_slices(self.model))
        ]

    def precondition(self, layer_grads):
        """The K-FAC direction ⊕_l (G_l ⊗ A_l + damping)⁻¹ ∇_l h in θ's order.  [(d_out, a_dim)] → (P,)"""
        inverses = [
            dataclasses.replace(inv, gamma=self.gamma)  # exact damping follows λ at once
            if isinstance(inv, EigenInverse) and inv.gamma != self.gamma
            else inv
            for inv in self.inverses
        ]
        return precondition_layers(self.model.param_layers(), inverses, layer_grads)

    # ---- step 4: the exact quadratic model (rescale, LM) ----------------------------
    def _exact_gram(self, res, x, vectors):
        """[vᵢᵀ F vⱼ] with the exact Fisher of the mini-batch, by forward mode (:mod:`kfac_ref.jvp`).

        On the first ``model_fraction`` of the batch, reusing the gradient's forward pass
        when that is the whole batch, else with a new one.
        """
        xp = get_xp(vectors[0])
        m = max(1, int(round(self.model_fraction * x.shape[0])))
        trace = res.trace if m == x.shape[0] else forward(self.model, x[:m])
        return to_numpy(fisher_gram_jvp(self.model, self.loss_fn, trace, xp.stack(vectors)))

    def _model_change(self, res, x, delta, grad):
        """M(δ) − M(0) for the step δ taken (LM without rescaling)."""
        fdf = float(self._exact_gram(res, x, [delta])[0, 0])
        return model_change(fdf, float(delta @ delta), float(grad @ delta), self.gamma)

    def _rescaled_step(self, res, proposal, grad, x, info):
        """[MG15] §7: δ = η (α Δ + μ δ₀) with (α, μ) minimising the exact quadratic model."""
        vectors = [proposal] if self.prev_delta is None else [proposal, self.prev_delta]
        xp = get_xp(grad)
        fisher_gram = self._exact_gram(res, x, vectors)
        dots = to_numpy(xp.stack([xp.stack([v @ w for w in vectors]) for v in vectors]))  # (k, k)
        grad_dots = to_numpy(xp.stack([grad @ v for v in vectors]))  # (k,)
        coef, change = rescale_coefficients(fisher_gram, dots, grad_dots, self.gamma)
        info["alpha"] = coef[0]
        info["mu"] = coef[1] if len(coef) > 1 else 0.0
        if self._lm_due():
            info["model_change"] = scaled_change(change, coef, grad_dots, self.lr)
        return self.lr * sum(c * v for c, v in zip(coef, vectors))

    # ---- state ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        inv_state = None if self.inverses is None else self._inverses_state()
        return {
            **super().state_dict(),
            "damping": self.damping,
            "stat_updates": self.stat_updates,
            "factors": None if self.factors is None else [[to_numpy(a), to_numpy(g)] for a, g in self.factors],
            "inverses": inv_state,
            "inverse_damping": self.inverse_damping,
            "prev_delta": to_numpy(self.prev_delta),
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        dev = self.model.device
        self.damping = float(state["damping"])
        self.stat_updates = int(state["stat_updates"])
        self.factors = (
            None if state["factors"] is None else [(to_device(a, dev), to_device(g, dev)) for a, g in state["factors"]]
        )
        self.inverses = None if state["inverses"] is None else self._inverses_from_state(state["inverses"])
        self.inverse_damping = state["inverse_damping"]
        self.prev_delta = None if state["prev_delta"] is None else to_device(state["prev_delta"], dev)

    def _inverses_state(self):
        """The inverses as plain data: one dict of NumPy arrays and scalars per layer."""
        return [
            {k: to_numpy(v) if hasattr(v, "shape") else v for k, v in dataclasses.asdict(inv).items()}
            for inv in self.inverses
        ]

    def _inverses_from_state(self, saved):
        """Inverse of :meth:`_inverses_state`, on the model's device."""
        dev = self.model.device
        cls = FactoredInverse if self.damping_mode == "factored" else EigenInverse
        return [cls(**{k: to_device(v, dev) if hasattr(v, "shape") else v for k, v in d.items()}) for d in saved]
