"""How far an approximation is from the Fisher it approximates.

relative Frobenius error   ‖F̃ − F‖_F / ‖F‖_F            (overall and per layer block)
angle between directions   arccos(u·v / (‖u‖ ‖v‖)), computed stably        in degrees
"""

from __future__ import annotations

import numpy as np

from ..backend import get_xp, to_numpy
from ..params import layer_slices


def rel_frobenius_error(approx, exact) -> float:
    """‖approx − exact‖_F / ‖exact‖_F (inf if exact is zero and approx is not)."""
    xp = get_xp(approx, exact)
    num, den = float(xp.linalg.norm(approx - exact)), float(xp.linalg.norm(exact))
    if den == 0:
        return 0.0 if num == 0 else float("inf")
    return num / den


def layer_errors(model, approx, exact) -> dict:
    """Relative Frobenius errors: ``{"overall": e, "layers": [e_1, …]}`` over diagonal blocks."""
    return {
        "overall": rel_frobenius_error(approx, exact),
        "layers": [rel_frobenius_error(approx[sl, sl], exact[sl, sl]) for sl in layer_slices(model)],
    }


def angle_degrees(u, v) -> float:
    """The angle between two directions, in degrees (0 = same direction)."""
    u, v = np.asarray(to_numpy(u), dtype=np.float64), np.asarray(to_numpy(v), dtype=np.float64)
    u, v = u / np.linalg.norm(u), v / np.linalg.norm(v)
    # 2·atan2(‖u − v‖, ‖u + v‖) is accurate near 0° and 180°, unlike arccos(u·v).
    return float(np.degrees(2 * np.arctan2(np.linalg.norm(u - v), np.linalg.norm(u + v))))


def kfac_angle(model, loss_fn, x, y, damping: float, kind: str, rng=None, mc_samples: int = 1) -> float:
    """Angle (degrees) between the K-FAC and the exact natural-gradient directions.

    Both use the same backpropagated vectors and the same damping λ, applied
    exactly: (F + λI)⁻¹ ∇h against ⊕_l (G_l ⊗ A_l + λI)⁻¹ ∇_l h.
    """
    from ..grads import loss_and_grad
    from ..params import flat_to_wbar
    from .dense import dense_from_stats
    from .kfac import factors_from_stats
    from .kron import EigenInverse, precondition_layers
    from .solve import dense_solve
    from .vectors import fisher_stats

    res = loss_and_grad(model, loss_fn, x, y)
    stats, _ = fisher_stats(model, loss_fn, x, y, kind, rng, mc_samples, trace=res.trace)
    exact = dense_solve(dense_from_stats(stats, x.shape[0]), res.grad, damping)
    layers = [st.layer for st in stats]
    inverses = [EigenInverse.from_factors(a, g, damping) for a, g in factors_from_stats(stats)]
    layer_grads = [flat_to_wbar(layer, res.grad[sl]) for layer, sl in zip(layers, layer_slices(model))]
    return angle_degrees(exact, precondition_layers(layers, inverses, layer_grads))  # K-FAC's, as KFAC.precondition
