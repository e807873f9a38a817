"""How far from NGD is each method's step? — issue 11, item 6.

On one batch (x, y) and at parameters θ, for an optimizer with its *current* curvature
(after the step it has just taken):

- **angle** (degrees) between the method's preconditioned gradient d = C_γ⁻¹ ∇h and
  the exact damped natural gradient n = (F + γ I)⁻¹ ∇h, F the exact Fisher
  (``kind="exact"``) of the batch at θ: a Cholesky solve with F when the curvature
  error builds F anyway, else by Woodbury (docs/math.md §7), so that no P × P matrix
  is needed for it.  ∇h includes the weight-decay term η_wd θ, and γ is the
  damping the method's direction uses (λ + η_wd for the K-FAC family, λ for NGD); SGD
  (d = ∇h, C = I) has none, so pass ``damping``.  KL-clipping rescales d and does not
  change the angle; momentum is not part of d.
- **curvature error** ‖C − F‖_F / ‖F‖_F of the method's undamped curvature matrix C
  (dense views: :func:`~kfac_ref.fisher.kfac.factors_to_dense` for K-FAC,
  :func:`~kfac_ref.fisher.tridiag.tridiag_to_dense` for block-tridiagonal K-FAC
  (docs/math.md §11), Q diag(S) Qᵀ per layer for EKFAC (§12), the stored Fisher or
  blocks for NGD / block NGD); ``None`` for SGD, which has no curvature, and when the
  dense P × P matrices would not fit ``max_bytes``.

To measure the step just taken, pass θ as it was *before* the step (``theta``): the
curvature was computed there.  The parameters of the model are restored on return.
This is work outside the step: a training loop should not count its time.
"""

from __future__ import annotations

from ..backend import get_xp
from ..fisher import blocks_to_dense, dense, factors_to_dense, rel_frobenius_error, tridiag_to_dense, woodbury_solve
from ..fisher.kfac import wbar_block_to_param_order
from ..fisher.memory import check_dense_size
from ..fisher.metrics import angle_degrees
from ..fisher.solve import dense_solve
from ..grads import loss_and_grad
from ..optim import EKFAC, KFAC, NGD, SGD, BlockNGD, KFACTridiag
from ..params import get_flat_params, layer_slices, set_flat_params


def check_ready(opt) -> None:
    """A method with curvature must have taken a step (its curvature is what is measured)."""
    state = {KFAC: "factors", NGD: "fisher", BlockNGD: "blocks"}
    for cls, attr in state.items():
        if isinstance(opt, cls) and getattr(opt, attr) is None and not (cls is NGD and opt.solver == "woodbury"):
            raise ValueError(f"{opt.name}: no curvature yet — take a step before measuring its direction")


def method_damping(opt) -> float | None:
    """γ of the method's direction: λ + η_wd (K-FAC family; the γ its factored inverses were built with), λ (NGD)."""
    if isinstance(opt, KFAC):
        if isinstance(opt, EKFAC) or opt.damping_mode == "exact":
            return opt.gamma  # exact damping follows λ at once
        return opt.inverse_damping
    if isinstance(opt, (NGD, BlockNGD)):
        return opt.damping
    return None


def method_direction(opt, res, theta, x, y, rng=None):
    """d = C_γ⁻¹ (∇h + η_wd θ), the method's preconditioned gradient at θ with its current curvature.  (P,)"""
    xp = get_xp(res.grad)
    grad = res.grad + opt.weight_decay * theta if opt.weight_decay else res.grad
    if isinstance(opt, SGD):
        return grad
    if isinstance(opt, KFAC):
        if opt.factors is None:
            raise ValueError(f"{opt.name}: no curvature yet — take a step before measuring its direction")
        if opt.inverses is None:  # (EKFAC rebuilds them at every step; a resumed one has none yet)
            opt._update_inverses()
        return opt.precondition(opt._layer_grads(res, theta))
    if isinstance(opt, NGD):
        if opt.solver == "dense":
            if opt.fisher is None:
                raise ValueError("ngd: no Fisher yet — take a step before measuring its direction")
            return dense_solve(opt.fisher, grad, opt.damping)
        return woodbury_solve(opt.model, opt.loss_fn, x, y, grad, opt.damping, opt.kind, rng, opt.mc_samples)
    if isinstance(opt, BlockNGD):
        if opt.blocks is None:
            raise ValueError("block-ngd: no blocks yet — take a step before measuring its direction")
        return xp.concatenate(
            [dense_solve(b, grad[sl], opt.damping) for sl, b in zip(layer_slices(opt.model), opt.blocks)]
        )
    raise TypeError(f"no direction known for optimizer {type(opt).__name__} ({getattr(opt, 'name', '?')})")


def curvature_matrix(opt, x=None, y=None, rng=None):
    """The method's undamped curvature C as a dense (P, P) matrix in θ's order; None for SGD."""
    model = opt.model
    if isinstance(opt, SGD):
        return None
    if isinstance(opt, KFACTridiag):
        return tridiag_to_dense(model, opt.factors, opt.cross_factors)
    if isinstance(opt, EKFAC):
        if opt.inverses is None:
            opt._update_inverses()
        return blocks_to_dense(
            model,
            [
                wbar_block_to_param_order(layer, layer, inv.dense())
                for layer, inv in zip(model.param_layers(), opt.inverses)
            ],
        )
    if isinstance(opt, KFAC):
        return factors_to_dense(model, opt.factors)
    if isinstance(opt, NGD):
        if opt.solver == "dense":
            return opt.fisher
        return dense(model, opt.loss_fn, x, y, opt.kind, rng, opt.mc_samples)  # Woodbury: this batch's
    if isinstance(opt, BlockNGD):
        return opt.dense_blocks()
    raise TypeError(f"no curvature matrix known for optimizer {type(opt).__name__}")


def diagnostics(
    opt, x, y, theta=None, damping: float | None = None, rng=None, curvature: bool = True, max_bytes=None
) -> dict:
    """``{"angle_deg", "curvature_error", "damping"}`` of ``opt`` on the batch (x, y) at θ.

    - ``theta`` (P,): the parameters to measure at (default: the model's); the model is restored.
    - ``damping``: γ of the exact natural gradient (default: the method's own,
      :func:`method_damping`; required for SGD).
    - ``rng``: only for a Woodbury NGD with kind="mc", which draws its Fisher on the batch.
    - ``curvature``: also the relative Frobenius error of C to the exact Fisher (needs two
      P × P matrices; ``None`` when they exceed ``max_bytes``).
    """
    model = opt.model
    check_ready(opt)
    gamma = method_damping(opt) if damping is None else damping
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
        d = method_direction(opt, res, theta, x, y, rng)
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
        if f is not None and not isinstance(opt, SGD):
            out["curvature_error"] = rel_frobenius_error(curvature_matrix(opt, x, y, rng), f)
        return out
    finally:
        set_flat_params(model, current)
