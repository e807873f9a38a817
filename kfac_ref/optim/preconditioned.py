"""One preconditioned optimizer for every curvature structure: [MG15] Algorithm 1.

A step, in the phases of :mod:`.base`, for any structure C of :mod:`kfac_ref.fisher.curvature`
(``opt.curvature``; docs/architecture.md):

1. forward_backward: h, ∇h per layer (∇_{W̄} h, plus η_wd W̄), and the forward trace.
2. curvature (every T_cov steps, and at the first): backpropagate the Fisher seeds of
   ``kind`` through the trace of the first m = ``stats_fraction``·N samples and
   ``C.update(stats, m)`` — the moving average ε_k = min(1 − 1/k, ε) ([MG15] §5).
3. inversion (every T_inv steps, and at the first): ``C.refresh(γ)``; then the proposal
   Δ = −(C + γ)⁻¹ ∇h = −``C.apply(∇h)``.  Exact damping follows a new γ at once; a factored
   one (baked into the inverse) reaches it at the next refresh.
4. update: one step-size rule (:mod:`.quadratic`) — KL-clipping ν, then momentum and η;
   or [MG15] §7's (α, μ) from the exact quadratic model (``rescale=True``); θ ← θ + δ; and,
   every T₁ steps with ``adapt_damping=True``, the Levenberg–Marquardt test of λ at θ + δ
   ([MG15] §6.5).

γ = λ + η_wd for the K-FAC family (the weight decay is curvature of ½ η_wd ‖θ‖²) and γ = λ
for NGD's structures (``damp_weight_decay=False``, [A98]'s (F + λI)⁻¹ (∇h + η_wd θ)).

The named methods are definitions in ``kfac_ref/optim/__init__.py``: a structure and default hyper-parameters.
"""

from __future__ import annotations

import inspect

from ..backend import get_xp, to_device, to_numpy
from ..backprop import forward
from ..fisher.seeds import check_kind, check_mc_samples
from ..fisher.vectors import fisher_stats
from ..jvp import fisher_gram_jvp
from ..params import flat_to_wbar, get_flat_params, layer_slices, wbar_to_flat
from ..validate import check_flag, check_number, check_state_array, check_state_number
from .base import Optimizer
from .quadratic import kl_clip_factor, lm_ratio, lm_update, model_change, rescale_coefficients, scaled_change


def sample_count(fraction: float, n: int) -> int:
    """m = max(1, round(fraction · N)): the first m samples of a batch of N."""
    return max(1, int(round(fraction * n)))


class Preconditioned(Optimizer):
    """θ ← θ − η (C + γI)⁻¹ ∇h with ``curvature`` C, any structure of :mod:`kfac_ref.fisher`."""

    name = "preconditioned"

    def __init__(
        self,
        model,
        loss_fn,
        curvature,
        lr: float,
        momentum: float,
        damping: float,
        kind: str,
        mc_samples: int,
        weight_decay: float,
        kl_clip: float | None,
        T_cov: int = 1,
        T_inv: int = 1,
        stats_fraction: float = 1.0,
        rescale: bool = False,
        model_fraction: float = 1.0,
        adapt_damping: bool = False,
        T_adapt: int = 5,
        omega: float | None = None,
        min_damping: float = 1e-8,
        damp_weight_decay: bool = True,
    ):
        super().__init__(model, loss_fn, lr, momentum, weight_decay)
        self.curvature = curvature
        self.damping = curvature.check_damping(damping)
        self.kind = check_kind(kind)
        self.mc_samples = check_mc_samples(mc_samples, self.kind)
        self.T_cov = check_number("T_cov", T_cov, low=1, integer=True)
        self.T_inv = check_number("T_inv", T_inv, low=1, integer=True)
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
        self.damp_weight_decay = damp_weight_decay
        self.prev_delta = None  # δ₀, the previous step (rescale=True)

    @property
    def ema_decay(self) -> float:
        return self.curvature.ema_decay

    @property
    def gamma(self) -> float:
        """γ, the damping the step is preconditioned with: λ + η_wd (K-FAC family) or λ (NGD)."""
        return self.damping + self.weight_decay if self.damp_weight_decay else self.damping

    @property
    def direction_damping(self) -> float:
        """γ of the direction ``apply`` gives now: the current γ where damping is exact, else the refreshed one."""
        return self.gamma if self.curvature.exact_damping else self.curvature.damping

    # ---- the phases of one step -----------------------------------------------------
    def _direction(self, res, grad, theta, x, y, rng, timer, info):
        curv = self.curvature
        refreshing = not curv.refreshed or self.steps % self.T_inv == 0
        with timer("curvature"):  # step 2
            covering = not curv.ready or self.steps % self.T_cov == 0
            refitting = curv.refit_due(self.steps, refreshing)
            if covering or refitting:
                stats, m = self.batch_stats(res, x, y, rng)
            if covering:
                self._update_curvature(stats, m)
        with timer("inversion"):  # step 3
            if refreshing:
                self._refresh_curvature()
            if refitting:
                curv.refit(stats, m)
            direction = self.precondition(self.layer_grads(res, theta))  # (C + γ)⁻¹ ∇h   (P,)
        with timer("update"):  # step 4
            if self.rescale:
                delta = self._rescaled_step(res, -direction, grad, x, info)
            else:
                if self.kl_clip is not None:
                    nu = kl_clip_factor(self.lr, self.kl_clip, float(direction @ grad))
                    direction = nu * direction
                    info["kl_clip_nu"] = nu
                delta = self._momentum_step(direction)
                if self._lm_due():
                    info["model_change"] = self._model_change(res, x, delta, grad)
            self.prev_delta = delta
            info["damping"] = self.damping
            return delta

    def batch_stats(self, res, x, y, rng):
        """Layer statistics (ā, g) of the Fisher seeds on the first m samples, and m.

        On the whole batch the gradient's trace is reused; with stats_fraction < 1 the first
        m samples get a forward pass of their own (cost ∝ m, only on these steps).
        """
        m = sample_count(self.stats_fraction, x.shape[0])
        trace = res.trace if m == x.shape[0] else forward(self.model, x[:m])
        stats, _ = fisher_stats(self.model, self.loss_fn, x[:m], y[:m], self.kind, rng, self.mc_samples, trace=trace)
        return stats, m

    def _update_curvature(self, stats, m):
        """Step 2: fold this batch's statistic into the structure's moving averages."""
        self.curvature.update(stats, m)

    def _refresh_curvature(self):
        """Step 3: the structure's inverse for the current γ."""
        self.curvature.refresh(self.gamma)

    def layer_grads(self, res, theta):
        """∇_{W̄} (h + ½ η_wd ‖θ‖²) per layer, (d_out, a_dim) each — without a round trip through θ."""
        if not self.weight_decay:
            return res.layer_grads
        return [
            g + self.weight_decay * flat_to_wbar(layer, theta[sl])
            for g, layer, sl in zip(res.layer_grads, self.model.param_layers(), layer_slices(self.model))
        ]

    def precondition(self, layer_grads):
        """(C + γ)⁻¹ ∇h in θ's order with the current curvature.  [(d_out, a_dim)] → (P,)"""
        out = self.curvature.apply(layer_grads, self.direction_damping)
        xp = get_xp(out[0])
        return xp.concatenate([wbar_to_flat(layer, d) for layer, d in zip(self.model.param_layers(), out)])

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

    # ---- step 4: the exact quadratic model (rescale, LM) ----------------------------
    def _exact_gram(self, res, x, vectors):
        """[vᵢᵀ F vⱼ] with the exact Fisher of the first ``model_fraction`` of the batch (:mod:`kfac_ref.jvp`)."""
        xp = get_xp(vectors[0])
        m = sample_count(self.model_fraction, x.shape[0])
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
        return {
            **super().state_dict(),
            "damping": self.damping,
            "prev_delta": to_numpy(self.prev_delta),
            **self.curvature.state_dict(),
        }

    def check_state(self, state: dict, where: str = "state") -> None:
        """The optimizer's entries (λ as the structure accepts it, δ₀ (P,)), then the structure's."""
        super().check_state(state, where)
        damping = check_state_number(f"{where}['damping']", state["damping"], low=0)
        try:
            self.curvature.check_damping(damping)
        except ValueError as exc:
            raise ValueError(f"{where}['damping'] is {damping!r}: {exc}") from exc
        check_state_array(f"{where}['prev_delta']", state["prev_delta"], (self.model.num_params,), optional=True)
        self.curvature.check_state(state, where)

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.damping = float(state["damping"])
        self.prev_delta = None if state["prev_delta"] is None else to_device(state["prev_delta"], self.model.device)
        self.curvature.load_state_dict(state)


# ---- definitions: a structure and its defaults ---------------------------------------------------
_OWN = ("lr", "momentum", "weight_decay")  # Optimizer's own, first in hyper()
_STRUCTURE_ONLY = ("ema_decay", "solver", "max_bytes", "damping_mode", "T_scale")


#: the annotations of hyper-parameters whose default (None) does not tell their type
_NULLABLE = {"kl_clip": "float | None", "omega": "float | None", "max_bytes": "int | None"}  # max_bytes: bytes


def _annotation(key: str, default):
    """The annotation a hand-written signature would carry (read by the command line's typing)."""
    if key in _NULLABLE:
        return _NULLABLE[key]
    if default is None:
        return inspect.Parameter.empty
    return type(default).__name__


def define(cls_name: str, name: str, structure, parameters: dict, doc: str, *, damp_weight_decay: bool = True):
    """A :class:`Preconditioned` method: ``structure(model, hyper) → curvature`` and its parameters.

    ``parameters``: {name: default} in the order of the signature (after model, loss_fn).
    The class takes them positionally or by name, as a hand-written ``__init__`` would.
    """
    sig = inspect.Signature(
        [
            inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            inspect.Parameter("model", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            inspect.Parameter("loss_fn", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            *(
                inspect.Parameter(k, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=v, annotation=_annotation(k, v))
                for k, v in parameters.items()
            ),
        ]
    )

    def __init__(self, *args, **kwargs):
        bound = sig.bind(self, *args, **kwargs)
        bound.apply_defaults()
        hyper = dict(bound.arguments)
        del hyper["self"]
        model, loss_fn = hyper.pop("model"), hyper.pop("loss_fn")
        curvature = structure(model, hyper)
        rest = {k: v for k, v in hyper.items() if k not in _STRUCTURE_ONLY}
        Preconditioned.__init__(self, model, loss_fn, curvature, **rest, damp_weight_decay=damp_weight_decay)

    def hyper(self) -> dict:
        keys = [k for k in parameters if k not in _OWN and k != "max_bytes"]
        return {
            **Optimizer.hyper(self),
            **{k: getattr(self, k) if hasattr(self, k) else getattr(self.curvature, k) for k in keys},
        }

    __init__.__signature__ = sig
    return type(cls_name, (Preconditioned,), {"name": name, "__doc__": doc, "__init__": __init__, "hyper": hyper})
