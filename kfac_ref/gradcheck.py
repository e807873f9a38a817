"""Central finite differences: the independent reference for every derivative.

    ∂φ/∂θ_i ≈ (φ(θ + ε e_i) − φ(θ − ε e_i)) / (2ε),   error O(ε²)

Perturbations are applied to copies; the model and the inputs are left as
they were.  Use float64: in float32 the rounding error swamps ε².
"""

from __future__ import annotations

import numpy as np

from .backend import to_numpy
from .params import get_flat_params, set_flat_params


def numerical_grad(fun, z, eps: float = 1e-6):
    """Central-difference gradient of a scalar function of an array ``z`` (any shape)."""
    z = np.array(to_numpy(z), dtype=np.float64)  # a private copy
    grad = np.empty_like(z)
    flat, gflat = z.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = float(fun(z.copy()))
        flat[i] = old - eps
        down = float(fun(z.copy()))
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return grad


def numerical_jacobian(fun, z, eps: float = 1e-6):
    """Central-difference Jacobian ∂fun(z)/∂z of shape ``(*out_shape, z.size)``."""
    z = np.array(to_numpy(z), dtype=np.float64)
    flat = z.reshape(-1)
    cols = []
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = np.asarray(to_numpy(fun(z.copy())), dtype=np.float64)
        flat[i] = old - eps
        down = np.asarray(to_numpy(fun(z.copy())), dtype=np.float64)
        flat[i] = old
        cols.append((up - down) / (2 * eps))
    return np.stack(cols, axis=-1)


def param_fun(model, fun):
    """φ(θ) = fun(model with parameters θ); restores the original θ after each call."""
    theta0 = get_flat_params(model)

    def wrapped(theta):
        set_flat_params(model, theta)
        try:
            return fun(model)
        finally:
            set_flat_params(model, theta0)

    return wrapped


def numerical_param_grad(model, loss_fn, x, y, eps: float = 1e-6):
    """Finite-difference ∇θ h for the averaged loss h.  (P,)"""
    phi = param_fun(model, lambda m: to_numpy(loss_fn(m(x), y)))
    return numerical_grad(phi, get_flat_params(model), eps)


def rel_error(a, b) -> float:
    """``max |a − b| / max(|a|, |b|)``: scale-free, 0 for identical arrays."""
    a, b = np.asarray(to_numpy(a), dtype=np.float64), np.asarray(to_numpy(b), dtype=np.float64)
    scale = max(np.abs(a).max(initial=0.0), np.abs(b).max(initial=0.0), np.finfo(np.float64).tiny)
    return float(np.abs(a - b).max(initial=0.0) / scale)
