"""Adam [KB15] with PyTorch's semantics and names (``torch.optim.Adam``), and AdamW's decoupled decay.

With d = ∇h(θ) (+ η_wd θ, the L2 form of weight decay) at iteration t = 1, 2, …

    m ← β₁ m + (1 − β₁) d,   v ← β₂ v + (1 − β₂) d²                 (moving averages, elementwise)
    θ ← θ − η m̂ / (√v̂ + ε),   m̂ = m / (1 − β₁ᵗ),  v̂ = v / (1 − β₂ᵗ)   (bias correction)

``amsgrad=True`` divides by the running maximum of v instead of v; ``decoupled_weight_decay=True``
(AdamW [LH19]) leaves d = ∇h and shrinks θ ← θ (1 − η η_wd) before the step.

Adam's v is a moving average of the squared mini-batch gradient — a diagonal estimate of
E[∇h²], close to (but not) the diagonal of the empirical Fisher of docs/math.md §3, and
the step divides by its *square root*: it is not a natural-gradient step (docs/math.md §13).
"""

from __future__ import annotations

from ..backend import get_xp, to_device, to_numpy
from ..validate import check_flag, check_number, check_state_array
from .base import Optimizer


class Adam(Optimizer):
    """``Adam(model, loss_fn, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
    decoupled_weight_decay=False)`` — PyTorch's defaults."""

    name = "adam"

    def __init__(
        self,
        model,
        loss_fn,
        lr: float = 1e-3,
        betas: tuple = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        decoupled_weight_decay: bool = False,
    ):
        self.decoupled_weight_decay = check_flag("decoupled_weight_decay", decoupled_weight_decay)
        wd = check_number("weight_decay", weight_decay, low=0)
        # the base class adds η_wd θ to the gradient: only for the L2 form
        super().__init__(model, loss_fn, lr, momentum=0.0, weight_decay=0.0 if self.decoupled_weight_decay else wd)
        self.decay = wd  # η_wd, whichever form
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas (β₁, β₂) must be a pair of numbers in [0, 1), got {betas!r}")
        b1 = check_number("betas[0] (β₁)", betas[0], low=0, high=1)
        b2 = check_number("betas[1] (β₂)", betas[1], low=0, high=1)
        if b1 == 1 or b2 == 1:
            raise ValueError(f"betas (β₁, β₂) must be < 1, got {betas!r} (the averages would never move)")
        self.betas = (b1, b2)
        self.eps = check_number("eps (ε)", eps, low=0)
        self.amsgrad = check_flag("amsgrad", amsgrad)
        self.exp_avg = None  # m (P,)
        self.exp_avg_sq = None  # v (P,)
        self.max_exp_avg_sq = None  # max_t v (P,), amsgrad only

    def hyper(self) -> dict:
        return {
            "lr": self.lr,
            "betas": self.betas,
            "eps": self.eps,
            "weight_decay": self.decay,
            "amsgrad": self.amsgrad,
            "decoupled_weight_decay": self.decoupled_weight_decay,
        }

    def _direction(self, res, grad, theta, x, y, rng, timer, info):
        with timer("update"):
            b1, b2 = self.betas
            t = self.steps + 1  # this step's index
            xp = get_xp(grad)
            m = xp.zeros_like(grad) if self.exp_avg is None else self.exp_avg
            v = xp.zeros_like(grad) if self.exp_avg_sq is None else self.exp_avg_sq
            self.exp_avg = b1 * m + (1 - b1) * grad  # m ← β₁ m + (1 − β₁) d
            self.exp_avg_sq = b2 * v + (1 - b2) * grad * grad  # v ← β₂ v + (1 − β₂) d²
            v_used = self.exp_avg_sq
            if self.amsgrad:
                old = v_used if self.max_exp_avg_sq is None else self.max_exp_avg_sq
                self.max_exp_avg_sq = v_used = xp.maximum(old, v_used)  # max over t of v
            step_size = self.lr / (1 - b1**t)  # η / (1 − β₁ᵗ)
            denom = (v_used**0.5) / (1 - b2**t) ** 0.5 + self.eps  # √v̂ + ε
            delta = -step_size * (self.exp_avg / denom)
            if self.decoupled_weight_decay and self.decay:
                delta = delta - self.lr * self.decay * theta  # θ (1 − η η_wd) − …, AdamW
            return delta

    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "exp_avg": to_numpy(self.exp_avg),
            "exp_avg_sq": to_numpy(self.exp_avg_sq),
            "max_exp_avg_sq": to_numpy(self.max_exp_avg_sq),
        }

    def check_state(self, state: dict, where: str = "state") -> None:
        """m (P,); v and max v (P,), ≥ 0 (averages of squares)."""
        super().check_state(state, where)
        p = (self.model.num_params,)
        check_state_array(f"{where}['exp_avg']", state.get("exp_avg"), p, optional=True)
        for key in ("exp_avg_sq", "max_exp_avg_sq"):
            check_state_array(f"{where}[{key!r}]", state.get(key), p, low=0, optional=True)

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        dev = self.model.device
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            setattr(self, key, None if state.get(key) is None else to_device(state[key], dev))
