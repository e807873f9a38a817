"""The one interface every method shares: ``info = opt.step(x, y, rng)``.

An optimizer holds the model and the loss.  A step does one whole iteration in
labelled phases ([MG15] Alg. 1; kfac-jax's layout):

    forward_backward   forward pass, averaged loss h, gradient ∇h (+ weight decay η θ)
    curvature          the statistics the method needs (nothing for SGD)
    inversion          factorisations / inverses (nothing for SGD)
    update             the step direction, momentum, θ ← θ + δ

and returns a dict with at least ``loss`` (h before the step), ``step_norm`` (‖δ‖)
and ``times`` (seconds per phase, GPU synchronised).  ``state_dict`` /
``load_state_dict`` carry everything a resumed run needs.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager

from ..backend import get_xp, synchronize, to_device, to_numpy
from ..errors import NonFiniteError
from ..grads import loss_and_grad
from ..params import get_flat_params, set_flat_params
from ..validate import check_number, check_state_array, check_state_number

PHASES = ("forward_backward", "curvature", "inversion", "update")


class PhaseTimer:
    """Wall-clock seconds per phase; synchronises the GPU before each reading."""

    def __init__(self, xp):
        self.xp = xp
        self.times = dict.fromkeys(PHASES, 0.0)

    @contextmanager
    def __call__(self, phase: str):
        synchronize(self.xp)
        start = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.xp)
            self.times[phase] += time.perf_counter() - start


class NonFiniteLossError(NonFiniteError):
    """The loss became NaN or Inf; the training loop stops on it."""


class Optimizer:
    """Base class.  Subclasses implement :meth:`_direction` (and state handling)."""

    name = "optimizer"
    direction_damping = None  # γ of the preconditioner (C + γ)⁻¹ of the step; None: no curvature (SGD)

    def __init__(self, model, loss_fn, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        self.model, self.loss_fn = model, loss_fn
        self.lr = check_number("lr (η)", lr, low=0, low_open=True)
        self.momentum = check_number("momentum (μ)", momentum, low=0, high=1)
        if self.momentum == 1:
            raise ValueError("momentum (μ) must be < 1, got 1")
        self.weight_decay = check_number("weight_decay", weight_decay, low=0)
        self.steps = 0  # k, iterations done
        self.velocity = None  # momentum buffer (P,)

    def __repr__(self) -> str:
        keys = ", ".join(f"{k}={v!r}" for k, v in self.hyper().items())
        return f"{type(self).__name__}({keys})"

    def hyper(self) -> dict:
        """The hyper-parameters as a plain dict (for logs and checkpoints)."""
        return {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay}

    def check_batch_size(self, n: int) -> None:
        """Refuse, before the first step, a batch size of n this optimizer cannot step on (any, here)."""

    # ---- the step ----------------------------------------------------------------------
    def step(self, x, y, rng=None) -> dict:
        """One iteration on the batch (x, y); returns what it did (see module docstring)."""
        xp = get_xp(x)
        timer = PhaseTimer(xp)
        with timer("forward_backward"):
            res = self._forward_backward(x, y)
            if not math.isfinite(res.loss):
                raise NonFiniteLossError(f"the loss became {res.loss} at iteration {self.steps + 1}")
            theta = get_flat_params(self.model)
            grad = res.grad + self.weight_decay * theta if self.weight_decay else res.grad
        info: dict = {}
        delta = self._direction(res, grad, theta, x, y, rng, timer, info)  # δ, the change of θ
        with timer("update"):
            set_flat_params(self.model, theta + delta)
            step_norm = float(xp.linalg.norm(delta))
        self._after_update(res, theta, x, y, timer, info)
        self.steps += 1
        info.update(loss=res.loss, step_norm=step_norm, times=dict(timer.times))
        return info

    def _forward_backward(self, x, y):
        """h, ∇h and the forward trace (:func:`kfac_ref.grads.loss_and_grad`)."""
        return loss_and_grad(self.model, self.loss_fn, x, y)

    def _direction(self, res, grad, theta, x, y, rng, timer, info):  # pragma: no cover - abstract
        """The change δ of θ for this step; may add diagnostics to ``info``."""
        raise NotImplementedError

    def _after_update(self, res, theta, x, y, timer, info) -> None:
        """Work that needs θ + δ (K-FAC's Levenberg–Marquardt test); nothing by default."""

    def _momentum_step(self, direction, nesterov: bool = False):
        """δ = −η v with v ← μ v + d (heavy ball) or −η (d + μ v) (Nesterov), PyTorch's convention."""
        if not self.momentum:
            return -self.lr * direction
        self.velocity = direction if self.velocity is None else self.momentum * self.velocity + direction
        if nesterov:
            return -self.lr * (direction + self.momentum * self.velocity)
        return -self.lr * self.velocity

    # ---- state ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Counters and buffers as NumPy arrays / Python scalars (see :mod:`kfac_ref.checkpoint`)."""
        return {"steps": self.steps, "velocity": to_numpy(self.velocity)}

    def check_state(self, state: dict, where: str = "state") -> None:
        """Raise a ValueError naming the entry unless ``state`` (a :meth:`state_dict`) fits this model.

        Called before anything is applied (:func:`kfac_ref.checkpoint.load`): a refused state changes nothing.
        """
        check_state_number(f"{where}['steps']", state["steps"], low=0, integer=True)
        check_state_array(f"{where}['velocity']", state["velocity"], (self.model.num_params,), optional=True)

    def load_state_dict(self, state: dict) -> None:
        device = self.model.device
        self.steps = int(state["steps"])
        self.velocity = None if state["velocity"] is None else to_device(state["velocity"], device)
