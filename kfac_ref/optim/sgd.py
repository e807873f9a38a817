"""Stochastic gradient descent with momentum (heavy-ball or Nesterov) and weight decay.

d = ∇h(θ) + η_wd θ
v ← μ v + d,   θ ← θ − η v              (heavy ball, PyTorch's convention)
θ ← θ − η (d + μ v)                      (Nesterov)
"""

from __future__ import annotations

from ..fisher.curvature import Identity
from ..validate import check_flag
from .base import Optimizer


class SGD(Optimizer):
    """``SGD(model, loss_fn, lr=0.1, momentum=0.9, nesterov=False, weight_decay=0.0)``."""

    name = "sgd"

    def __init__(
        self, model, loss_fn, lr: float = 0.1, momentum: float = 0.9, nesterov: bool = False, weight_decay: float = 0.0
    ):
        super().__init__(model, loss_fn, lr, momentum, weight_decay)
        self.nesterov = check_flag("nesterov", nesterov)
        if self.nesterov and not self.momentum:
            raise ValueError("nesterov=True needs momentum (μ) > 0")
        self.curvature = Identity(model)  # C = I: the preconditioned gradient is the gradient

    def hyper(self) -> dict:
        return {**super().hyper(), "nesterov": self.nesterov}

    def _direction(self, res, grad, theta, x, y, rng, timer, info):
        with timer("update"):
            return self._momentum_step(grad, self.nesterov)
