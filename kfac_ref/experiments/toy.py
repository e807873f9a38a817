"""The empirical-vs-true Fisher toy of [KBH19] (docs/math.md §10), built from kfac_ref pieces.

Linear regression with a unit-variance Gaussian likelihood, x_n = [1, z_n], z_n ~ LogNormal(0, 0.75),
θ* = (2, 2); the model is ``Sequential(Linear(2, 1, bias=False))`` (θ is its 1×2 weight) with
``SquaredErrorLoss``, so ∇h (:func:`kfac_ref.batch_grad`), the exact Fisher XᵀX / N and the
empirical Fisher (1/N) Σ_n r_n² x_n x_nᵀ (:func:`kfac_ref.fisher.dense`) all come from the package.
The three methods of notebook 01 and their settings (:data:`SETTINGS`) are docs/math.md §10's:
gradient descent, NGD (Newton's method here: one step to the least-squares solution, §8.4) and
empirical-Fisher descent, which far from θ* follows the samples the current θ fits worst.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import nn
from ..data.synthetic import lognormal_regression
from ..fisher import dense, dense_solve
from ..grads import batch_grad
from ..params import set_flat_params

METHODS = ("gd", "ngd", "empirical")
#: method → (step η, damping λ), the settings of docs/math.md §10
SETTINGS = {"gd": (1 / 3, 0.0), "ngd": (1.0, 0.0), "empirical": (3.0, 1e-8)}
#: the starting points of docs/math.md §10
STARTS = ((2.0, 4.5), (1.0, 0.0), (4.5, 3.0), (-0.5, 3.0))
#: which Fisher kind preconditions each method (None: plain gradient descent)
FISHER_KIND = {"gd": None, "ngd": "exact", "empirical": "empirical"}


@dataclass(frozen=True)
class Toy:
    """The data of the toy.

    x          : (N, 2)  inputs [1, z_n]
    y          : (N, 1)  targets
    theta_star : (2,)    the parameters the data were generated with
    """

    x: np.ndarray
    y: np.ndarray
    theta_star: np.ndarray

    @property
    def loss_fn(self):
        """½ (f − y)², the negative log-likelihood of N(y; f, 1) up to a constant."""
        return nn.SquaredErrorLoss()


def make_toy(n: int = 1000, seed: int = 0) -> Toy:
    """The docs/math.md §10 data set (:func:`kfac_ref.data.lognormal_regression`)."""
    x, y, theta_star = lognormal_regression(n, seed)
    return Toy(x=x, y=y, theta_star=theta_star)


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: expected one of {METHODS}")
    return method


def _theta(theta) -> np.ndarray:
    theta = np.asarray(theta, dtype=np.float64)
    if theta.shape != (2,):
        raise ValueError(f"θ must have shape (2,) for the toy's Linear(2→1, bias=False), got {theta.shape}")
    return theta


def model_at(theta) -> nn.Sequential:
    """A fresh ``Sequential(Linear(2, 1, bias=False))`` whose weight is θ (no shared state)."""
    model = nn.Sequential(nn.Linear(2, 1, bias=False), seed=None)
    set_flat_params(model, _theta(theta))
    return model


def loss(toy: Toy, theta) -> float:
    """h(θ) = (1/N) Σ_n ½ (x_nᵀ θ − y_n)²."""
    return float(toy.loss_fn(model_at(theta)(toy.x), toy.y))


def grad(toy: Toy, theta) -> np.ndarray:
    """∇h(θ) = (1/N) Σ_n r_n x_n.  (2,)"""
    return batch_grad(model_at(theta), toy.loss_fn, toy.x, toy.y)


def fisher(toy: Toy, theta, kind: str) -> np.ndarray:
    """The ``"exact"`` or ``"empirical"`` Fisher at θ.  (2, 2)

    exact:     XᵀX / N (the same at every θ);   empirical: (1/N) Σ_n r_n² x_n x_nᵀ.
    """
    if kind not in ("exact", "empirical"):
        raise ValueError(f"the toy compares the 'exact' and 'empirical' Fishers, got kind {kind!r}")
    return dense(model_at(theta), toy.loss_fn, toy.x, toy.y, kind)


def least_squares(toy: Toy) -> np.ndarray:
    """θ_LS = argmin_θ h(θ), by ``numpy.linalg.lstsq`` (an independent reference).  (2,)"""
    return np.linalg.lstsq(toy.x, toy.y[:, 0], rcond=None)[0]


def direction(toy: Toy, theta, method: str, damping: float = 0.0) -> np.ndarray:
    """The (unscaled) descent direction d with θ ← θ − η d.  (2,)

    "gd": ∇h;  "ngd": (F + λI)⁻¹ ∇h;  "empirical": (F_emp(θ) + λI)⁻¹ ∇h.
    """
    kind = FISHER_KIND[_check_method(method)]
    g = grad(toy, theta)
    if kind is None:
        return g
    return dense_solve(fisher(toy, theta, kind), g, damping)


def trajectory(
    toy: Toy, method: str, theta0, steps: int, lr: float | None = None, damping: float | None = None
) -> np.ndarray:
    """The iterates θ_0, θ_1, …, θ_steps of one method.  (steps + 1, 2)

    ``lr`` (η) and ``damping`` (λ) default to the method's :data:`SETTINGS`.
    """
    default_lr, default_damping = SETTINGS[_check_method(method)]
    lr = default_lr if lr is None else float(lr)
    damping = default_damping if damping is None else float(damping)
    if not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    path = np.empty((steps + 1, 2))  # (steps + 1, 2)
    path[0] = _theta(theta0)
    for k in range(steps):
        path[k + 1] = path[k] - lr * direction(toy, path[k], method, damping)
    return path


def loss_grid(toy: Toy, t0, t1) -> np.ndarray:
    """h on the grid θ = (t0[j], t1[i]), for contour plots.  (len(t1), len(t0))

    h is quadratic, so the grid is evaluated exactly from three moments of the
    data instead of a forward pass per point (``tests/test_toy.py`` checks it
    against :func:`loss`):

        h(θ) = ½ θᵀ (XᵀX/N) θ − θᵀ (Xᵀy/N) + ½ yᵀy/N
    """
    n = toy.x.shape[0]
    xx = toy.x.T @ toy.x / n  # (2, 2)
    xy = toy.x.T @ toy.y[:, 0] / n  # (2,)
    yy = float(toy.y[:, 0] @ toy.y[:, 0]) / n
    a, b = np.meshgrid(np.asarray(t0, dtype=np.float64), np.asarray(t1, dtype=np.float64))  # (n1, n0) each
    quad = xx[0, 0] * a * a + 2 * xx[0, 1] * a * b + xx[1, 1] * b * b
    return 0.5 * quad - (xy[0] * a + xy[1] * b) + 0.5 * yy  # (n1, n0)


def residuals(toy: Toy, theta) -> np.ndarray:
    """r_n = x_nᵀ θ − y_n, the per-sample output gradients that weight F_emp.  (N,)"""
    return toy.loss_fn.grad(model_at(theta)(toy.x), toy.y)[:, 0]
