"""How far from NGD is each method's step? (docs/diagnostics.md)

On one batch (x, y) at θ, for an optimizer with the curvature ``opt.curvature`` of the step it has
just taken: the **angle** (degrees) between its direction d = (C + γI)⁻¹∇h and the exact damped
natural gradient n = (F + γI)⁻¹∇h (F the exact Fisher of the batch; n by Cholesky when F is built
anyway, else by Woodbury, docs/math.md §7), and the **curvature error** ‖C − F‖_F / ‖F‖_F (None
for SGD and when two P × P matrices would not fit ``max_bytes``).  ∇h includes the weight-decay
term; γ is the damping the method's direction uses (``opt.direction_damping``), passed for SGD.
Pass θ as it was *before* the step (``theta``); the model's parameters are restored on return.
This is work outside the step: a training loop should not count its time.
"""

from __future__ import annotations

from ..fisher import dense, rel_frobenius_error, woodbury_solve
from ..fisher.memory import check_dense_size
from ..fisher.metrics import angle_degrees
from ..fisher.solve import dense_solve
from ..grads import loss_and_grad
from ..params import get_flat_params, set_flat_params


def diagnostics(
    opt, x, y, theta=None, damping: float | None = None, rng=None, curvature: bool = True, max_bytes=None
) -> dict:
    """``{"angle_deg", "curvature_error", "damping"}`` of ``opt`` on the batch (x, y) at θ.

    - ``theta`` (P,): the parameters to measure at (default: the model's); the model is restored.
    - ``damping``: γ of the exact natural gradient (default: the method's own,
      ``opt.direction_damping``; required for SGD).
    - ``rng``: unused (kept for callers that pass it); the curvature is the one the step used.
    - ``curvature``: also the relative Frobenius error of C to the exact Fisher (needs two
      P × P matrices; ``None`` when they exceed ``max_bytes``).
    """
    model = opt.model
    if not (opt.curvature.ready and opt.curvature.refreshed):  # what is measured is the curvature of its step
        raise ValueError(f"{opt.name}: no curvature yet — take a step before measuring its direction")
    own = opt.direction_damping  # None: no curvature of its own (SGD)
    gamma = own if damping is None else damping
    if gamma is None:
        raise ValueError(f"{opt.name} has no damping of its own: pass damping (λ of (F + λI)⁻¹∇h)")
    current = get_flat_params(model)
    theta = current if theta is None else theta
    if getattr(theta, "shape", None) != (model.num_params,):
        raise ValueError(f"theta has shape {getattr(theta, 'shape', type(theta))}, expected ({model.num_params},)")
    try:
        set_flat_params(model, theta)
        res = loss_and_grad(model, opt.loss_fn, x, y)
        grad = res.grad + opt.weight_decay * theta if opt.weight_decay else res.grad
        d = opt.curvature.apply_flat(grad, own)  # (C + γ)⁻¹ ∇h with the method's own γ   (P,)
        f = None  # the exact Fisher (P, P), when the curvature error needs it and it fits
        if curvature:
            try:
                check_dense_size(model.num_params, model.dtype, max_bytes, "dense curvature matrices")
                f = dense(model, opt.loss_fn, x, y, "exact")
            except MemoryError:
                pass
        # (F + γI)⁻¹ ∇h  (P,): with F when it is built (one P × P Cholesky), else by Woodbury
        # (a C·N × C·N one, far larger than P × P for a large batch: C·N = 10 240 at batch 1024)
        natural = (
            dense_solve(f, grad, gamma)
            if f is not None
            else woodbury_solve(model, opt.loss_fn, x, y, grad, gamma, "exact")
        )
        out = {"angle_deg": angle_degrees(d, natural), "curvature_error": None, "damping": float(gamma)}
        if f is not None and own is not None:
            out["curvature_error"] = rel_frobenius_error(opt.curvature.to_dense(), f)
        return out
    finally:
        set_flat_params(model, current)
