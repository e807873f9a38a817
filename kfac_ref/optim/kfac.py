"""K-FAC [MG15] (KFC [GM16] for Conv2d layers) as an optimizer.

One step, in the phases of :mod:`.base` (MATH.md §4–6):

1. forward_backward: h, ∇h, and the trace of the forward pass.
2. curvature (every T_cov steps): backpropagate the Fisher seeds of ``kind``
   through the same trace; per layer A = E[ā āᵀ], G = E[g gᵀ] (Ω, Γ for conv);
   moving averages X ← ε_k X + (1 − ε_k) X_batch, ε_k = min(1 − 1/k, ε).
3. inversion (every T_inv steps): damped inverses of the factors — factored
   Tikhonov damping with π, or exact damping through eigendecompositions.
4. update: the proposal Δ_l = −(G_l ⊗ A_l + damping)⁻¹ ∇_l h = −G⁻¹ ∇_{W̄} h A⁻¹
   per layer; then either heavy-ball momentum and step size η, or [MG15] §7's
   (α, μ) from the exact quadratic model (its Fisher products by forward mode,
   :mod:`kfac_ref.jvp`); optional KL-clipping; optional
   Levenberg–Marquardt adaptation of λ every T₁ steps.
"""

from __future__ import annotations

import dataclasses

from ..backend import get_xp, to_device, to_numpy
from ..backprop import forward
from ..fisher.kfac import check_supported, factor_a, factor_g
from ..fisher.kron import EigenInverse, FactoredInverse, check_damping
from ..fisher.seeds import check_kind, check_mc_samples
from ..fisher.vectors import fisher_stats
from ..grads import GradResult, loss_and_grad
from ..jvp import fisher_gram_jvp
from ..params import flat_to_wbar, get_flat_params, layer_slices, wbar_to_flat
from .base import Optimizer, PhaseTimer, check_number, needs_rng
from .quadratic import lm_ratio, lm_update, model_change, rescale_coefficients

DAMPING_MODES = ("factored", "exact")


class KFAC(Optimizer):
    """``KFAC(model, loss_fn, lr=0.1, momentum=0.9, damping=0.3, kind="mc", T_cov=1, T_inv=20, ...)``.

    See README.md for every hyper-parameter, its symbol in [MG15] and its default.
    """

    name = "kfac"

    def __init__(self, model, loss_fn, lr: float = 0.1, momentum: float = 0.9, damping: float = 0.3,
                 kind: str = "mc", mc_samples: int = 1, T_cov: int = 1, T_inv: int = 20,
                 ema_decay: float = 0.95, damping_mode: str = "factored", weight_decay: float = 0.0,
                 stats_fraction: float = 0.25, rescale: bool = False, model_fraction: float = 1.0,
                 adapt_damping: bool = False,
                 T_adapt: int = 5, omega: float | None = None, min_damping: float = 1e-8,
                 kl_clip: float | None = None):
        super().__init__(model, loss_fn, lr, momentum, weight_decay)
        check_supported(model)
        self.damping = check_damping(damping)
        self.kind = check_kind(kind)
        self.mc_samples = check_mc_samples(mc_samples)
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
        self.rescale = bool(rescale)
        self.model_fraction = check_number("model_fraction", model_fraction, low=0, high=1, low_open=True)
        self.adapt_damping = bool(adapt_damping)
        self.T_adapt = check_number("T_adapt (T₁)", T_adapt, low=1, integer=True)
        # ω₁ = (19/20)^{T₁} [MG15] §6.5
        self.omega = (19 / 20) ** self.T_adapt if omega is None else check_number("omega (ω₁)", omega, low=0,
                                                                                   high=1, low_open=True)
        self.min_damping = check_number("min_damping", min_damping, low=0)
        self.kl_clip = None if kl_clip is None else check_number("kl_clip (κ)", kl_clip, low=0, low_open=True)
        if self.kl_clip is not None and self.rescale:
            raise ValueError("kl_clip bounds η² ∇hᵀF̃⁻¹∇h of the plain step; with rescale=True the exact "
                             "quadratic model sets the step size (α), which would undo the clipping: "
                             "use one or the other")
        # state
        self.factors = None  # [(A, G)] moving averages
        self.inverses = None  # [FactoredInverse | EigenInverse]
        self.stat_updates = 0  # k in ε_k = min(1 − 1/k, ε)
        self.prev_delta = None  # δ₀, the previous step (rescale=True)
        self._pending_lm = None  # (h(θ), M(δ) − M(0)) awaiting the LM test after the update
        self.inverse_damping = None  # the γ the current inverses were built with

    def hyper(self) -> dict:
        return {**super().hyper(), "damping": self.damping, "kind": self.kind, "mc_samples": self.mc_samples,
                "T_cov": self.T_cov, "T_inv": self.T_inv, "ema_decay": self.ema_decay,
                "damping_mode": self.damping_mode, "stats_fraction": self.stats_fraction,
                "rescale": self.rescale, "model_fraction": self.model_fraction, "adapt_damping": self.adapt_damping, "T_adapt": self.T_adapt,
                "omega": self.omega, "min_damping": self.min_damping, "kl_clip": self.kl_clip}

    # ---- phases ---------------------------------------------------------------------
    def _stats_size(self, n: int) -> int:
        """m, the number of samples the factors are estimated on."""
        return max(1, int(round(self.stats_fraction * n)))

    def _forward_backward(self, x, y):
        """With stats_fraction < 1, run the batch as two chunks, [:m] and [m:], so that the
        first chunk's trace serves the factors without a second forward pass ([MG15] §8).

        h and ∇h are the size-weighted means of the chunks', i.e. those of the whole batch.
        """
        n = x.shape[0]
        m = self._stats_size(n)
        if m == n:
            return loss_and_grad(self.model, self.loss_fn, x, y)
        head = loss_and_grad(self.model, self.loss_fn, x[:m], y[:m])
        tail = loss_and_grad(self.model, self.loss_fn, x[m:], y[m:])
        return GradResult(loss=(m * head.loss + (n - m) * tail.loss) / n,
                          grad=(m * head.grad + (n - m) * tail.grad) / n,
                          trace=head.trace, stats=head.stats)  # the trace of x[:m]

    def _update_factors(self, res, x, y, rng):
        """Step 2: batch factors from the Fisher seeds, folded into the moving averages."""
        needs_rng(self.kind, rng)
        m = res.trace.output.shape[0]  # = _stats_size(N): the trace covers x[:m]
        stats, _ = fisher_stats(self.model, self.loss_fn, x[:m], y[:m], self.kind, rng, self.mc_samples,
                                trace=res.trace)
        batch = [(factor_a(st.a_bar), factor_g(st.g)) for st in stats]
        self.stat_updates += 1
        eps = min(1 - 1 / self.stat_updates, self.ema_decay)  # ε_k: the first update takes the batch value
        if self.factors is None:
            self.factors = batch
        else:
            self.factors = [(eps * a + (1 - eps) * ab, eps * g + (1 - eps) * gb)
                            for (a, g), (ab, gb) in zip(self.factors, batch)]

    def _refresh_inverses(self):
        """Step 3: damped inverses (factored π) or eigendecompositions (exact damping)."""
        gamma = self.damping + self.weight_decay
        cls = FactoredInverse if self.damping_mode == "factored" else EigenInverse
        self.inverses = [cls.from_factors(a, g, gamma) for a, g in self.factors]
        self.inverse_damping = gamma

    def precondition(self, grad):
        """The K-FAC direction ⊕_l (G_l ⊗ A_l + damping)⁻¹ ∇_l h, in θ's order.  (P,)"""
        xp = get_xp(grad)
        gamma = self.damping + self.weight_decay
        parts = []
        for layer, sl, inv in zip(self.model.param_layers(), layer_slices(self.model), self.inverses):
            if isinstance(inv, EigenInverse) and inv.gamma != gamma:
                inv = dataclasses.replace(inv, gamma=gamma)  # exact damping follows λ at once
            parts.append(wbar_to_flat(layer, inv.apply(flat_to_wbar(layer, grad[sl]))))
        return xp.concatenate(parts)

    def _direction(self, res, grad, theta, x, y, rng, timer, info):
        with timer("curvature"):
            if self.steps % self.T_cov == 0 or self.factors is None:
                self._update_factors(res, x, y, rng)
        with timer("inversion"):
            # Factored inverses bake in γ = λ + η_wd: an LM change of λ reaches them at the next
            # refresh (exact damping follows λ at once).  Following λ at every change made the
            # digits runs unstable once LM had shrunk λ.
            if self.steps % self.T_inv == 0 or self.inverses is None:
                self._refresh_inverses()
            nat = self.precondition(grad)  # F̃⁻¹ ∇h
        with timer("update"):
            if self.kl_clip is not None:  # ν = min(1, √(κ / (η² F̃⁻¹∇h · ∇h)))
                vg = self.lr ** 2 * float(nat @ grad)
                nu = min(1.0, (self.kl_clip / vg) ** 0.5) if vg > 0 else 1.0
                nat = nu * nat
                info["kl_clip_nu"] = nu
            lm_now = self.adapt_damping and (self.steps + 1) % self.T_adapt == 0
            if self.rescale:
                delta, change = self._rescaled_step(res, -nat, grad, x, info)
            else:
                delta = self._momentum_step(nat)
                change = self._model_change(res, x, delta, grad) if lm_now else None
            self.prev_delta = delta
            if lm_now:
                # h(θ) of the objective M models: the loss plus ½ η_wd ‖θ‖² ([MG15]'s ℓ2 term)
                self._pending_lm = (res.loss + 0.5 * self.weight_decay * float(theta @ theta), change)
            info["damping"] = self.damping
            return delta

    def _exact_gram(self, res, x, vectors):
        """[vᵢᵀ F vⱼ] with the exact Fisher of the mini-batch, by forward mode (:mod:`kfac_ref.jvp`).

        On the first ``model_fraction`` of the batch, reusing the gradient's
        forward pass when it covers exactly those samples, else with a new one.
        """
        xp = get_xp(vectors[0])
        m = max(1, int(round(self.model_fraction * x.shape[0])))
        trace = res.trace if m == res.trace.output.shape[0] else forward(self.model, x[:m])
        return to_numpy(fisher_gram_jvp(self.model, self.loss_fn, trace, xp.stack(vectors)))

    def _model_change(self, res, x, delta, grad):
        fdf = float(self._exact_gram(res, x, [delta])[0, 0])
        return model_change(fdf, float(delta @ delta), float(grad @ delta), self.damping + self.weight_decay)

    def _rescaled_step(self, res, proposal, grad, x, info):
        """[MG15] §7: δ = α Δ + μ δ₀ minimising the exact quadratic model; then scaled by η."""
        vectors = [proposal] if self.prev_delta is None else [proposal, self.prev_delta]
        xp = get_xp(grad)
        fisher_gram = self._exact_gram(res, x, vectors)
        dots = to_numpy(xp.stack([xp.asarray([v @ w for w in vectors]) for v in vectors]))
        grad_dots = to_numpy(xp.stack([grad @ v for v in vectors]))
        coef, change = rescale_coefficients(fisher_gram, dots, grad_dots, self.damping + self.weight_decay)
        info["alpha"] = float(coef[0])
        info["mu"] = float(coef[1]) if len(coef) > 1 else 0.0
        delta = sum(c * v for c, v in zip(coef, vectors))
        if self.lr != 1.0:  # M is quadratic: scaling δ by η changes it to η²·q/2 + η·b
            q_part = change - float(grad_dots @ coef)
            change = self.lr ** 2 * q_part + self.lr * float(grad_dots @ coef)
        return self.lr * delta, change

    def step(self, x, y, rng=None) -> dict:
        self._pending_lm = None
        info = super().step(x, y, rng)
        if self._pending_lm is not None:  # LM: one more forward at θ + δ on the same batch
            timer = PhaseTimer(get_xp(x))
            with timer("update"):
                h_old, change = self._pending_lm
                h_new = float(self.loss_fn(self.model(x), y))
                if self.weight_decay:
                    theta = get_flat_params(self.model)
                    h_new += 0.5 * self.weight_decay * float(theta @ theta)
                rho = lm_ratio(h_old, h_new, change)
                self.damping = max(self.min_damping, lm_update(self.damping, rho, self.omega))
            info["times"]["update"] += timer.times["update"]
            info["rho"] = rho
            info["damping"] = self.damping
        return info

    # ---- state ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        inv_state = None
        if self.inverses is not None:
            inv_state = [{k: to_numpy(v) if hasattr(v, "shape") else v
                          for k, v in dataclasses.asdict(inv).items()} for inv in self.inverses]
        return {**super().state_dict(),
                "damping": self.damping, "stat_updates": self.stat_updates,
                "factors": None if self.factors is None else [[to_numpy(a), to_numpy(g)] for a, g in self.factors],
                "inverses": inv_state, "inverse_damping": self.inverse_damping,
                "prev_delta": to_numpy(self.prev_delta)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        dev = self.model.device
        self.damping = float(state["damping"])
        self.stat_updates = int(state["stat_updates"])
        self.factors = None if state["factors"] is None else \
            [(to_device(a, dev), to_device(g, dev)) for a, g in state["factors"]]
        cls = FactoredInverse if self.damping_mode == "factored" else EigenInverse
        self.inverses = None if state["inverses"] is None else \
            [cls(**{k: to_device(v, dev) if hasattr(v, "shape") else v for k, v in d.items()})
             for d in state["inverses"]]
        self.inverse_damping = state["inverse_damping"]
        self.prev_delta = None if state["prev_delta"] is None else to_device(state["prev_delta"], dev)
