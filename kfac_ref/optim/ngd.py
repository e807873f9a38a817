"""Natural gradient descent with the full Fisher, and with its layer blocks.

Exact NGD ([A98]; the article's "NGD"):

    θ ← θ − η ν (F + λI)⁻¹ (∇h + η_wd θ)

with ν ≤ 1 the KL-clipping factor of :func:`.quadratic.kl_clip_factor` (κ = 0.1
by default, the safeguard against a step too long for the curvature — NGD has no
momentum to amplify it, unlike K-FAC's κ = 10⁻³ with μ = 0.9; ``kl_clip=None``
gives the plain step), F the Fisher of the chosen kind on the mini-batch (optionally a moving
average F ← ε F + (1 − ε) F_batch), solved either as the textbook does —
build F (P, P), Cholesky — or by the Woodbury identity, the same direction
from an (S·N, S·N) system (docs/math.md §7).

Block-diagonal NGD ([MG15] §4.2, the article's first approximation) keeps the
exact layer blocks F_ll and drops the cross-layer blocks:

    Δ_l = (F_ll + λI)⁻¹ ∇_l h   for every layer l.
"""

from __future__ import annotations

from ..backend import get_xp, to_device, to_numpy
from ..fisher.dense import blocks_from_stats, blocks_to_dense, dense_from_stats
from ..fisher.memory import check_dense_size
from ..fisher.seeds import check_kind, check_mc_samples
from ..fisher.solve import dense_solve, woodbury_solve_from_stats
from ..fisher.vectors import fisher_stats
from ..params import layer_slices
from ..validate import check_damping, check_number
from .base import Optimizer, needs_rng
from .quadratic import kl_clip_factor

SOLVERS = ("dense", "woodbury")


def _ema(old, new, decay: float):
    """X ← ε X + (1 − ε) X_batch; the first value is taken as is."""
    return new if old is None or decay == 0 else decay * old + (1 - decay) * new


class _FisherMethod(Optimizer):
    """Shared hyper-parameters of the Fisher-based methods."""

    def __init__(self, model, loss_fn, lr, momentum, weight_decay, damping, kind, mc_samples, ema_decay, kl_clip):
        super().__init__(model, loss_fn, lr, momentum, weight_decay)
        self.kl_clip = None if kl_clip is None else check_number("kl_clip (κ)", kl_clip, low=0, low_open=True)
        self.damping = check_damping(damping)
        self.kind = check_kind(kind)
        self.mc_samples = check_mc_samples(mc_samples, self.kind)
        self.ema_decay = check_number("ema_decay (ε)", ema_decay, low=0, high=1)
        if self.ema_decay == 1:
            raise ValueError("ema_decay (ε) must be < 1, got 1 (the Fisher would never change)")

    def hyper(self) -> dict:
        return {
            **super().hyper(),
            "damping": self.damping,
            "kind": self.kind,
            "mc_samples": self.mc_samples,
            "ema_decay": self.ema_decay,
            "kl_clip": self.kl_clip,
        }

    def _stats(self, res, x, y, rng):
        needs_rng(self.kind, rng)
        stats, _ = fisher_stats(self.model, self.loss_fn, x, y, self.kind, rng, self.mc_samples, trace=res.trace)
        return stats

    def _step_from(self, direction, grad, info):
        """KL-clip the natural-gradient direction (if asked), then momentum and η."""
        if self.kl_clip is not None:
            nu = kl_clip_factor(self.lr, self.kl_clip, float(direction @ grad))
            direction = nu * direction
            info["kl_clip_nu"] = nu
        return self._momentum_step(direction)


class NGD(_FisherMethod):
    """``NGD(model, loss_fn, lr=0.5, damping=0.3, kind="exact", solver="dense", kl_clip=0.1, ...)``."""

    name = "ngd"

    def __init__(
        self,
        model,
        loss_fn,
        lr: float = 0.5,
        momentum: float = 0.0,
        damping: float = 0.3,
        kind: str = "exact",
        solver: str = "dense",
        mc_samples: int = 1,
        ema_decay: float = 0.0,
        weight_decay: float = 0.0,
        kl_clip: float | None = 0.1,
        max_bytes=None,
    ):
        super().__init__(model, loss_fn, lr, momentum, weight_decay, damping, kind, mc_samples, ema_decay, kl_clip)
        if solver not in SOLVERS:
            raise ValueError(f"unknown solver {solver!r}: expected one of {SOLVERS}")
        if solver == "woodbury":
            if self.damping == 0:
                raise ValueError("solver='woodbury' needs damping (λ) > 0")
            if self.ema_decay:
                raise ValueError("solver='woodbury' works on the mini-batch Fisher: ema_decay must be 0")
        else:
            check_dense_size(model.num_params, model.dtype, max_bytes)
        self.solver = solver
        self.fisher = None  # the (averaged) dense Fisher, solver='dense' only

    def hyper(self) -> dict:
        return {**super().hyper(), "solver": self.solver}

    def _direction(self, res, grad, theta, x, y, rng, timer, info):
        n = x.shape[0]
        with timer("curvature"):
            stats = self._stats(res, x, y, rng)
            if self.solver == "dense":
                self.fisher = _ema(self.fisher, dense_from_stats(stats, n), self.ema_decay)  # F = VᵀV / N
        with timer("inversion"):
            if self.solver == "dense":
                direction = dense_solve(self.fisher, grad, self.damping)
            else:
                direction = woodbury_solve_from_stats(stats, grad, self.damping, n, layer_slices(self.model))
        with timer("update"):
            return self._step_from(direction, grad, info)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "fisher": to_numpy(self.fisher)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        f = state.get("fisher")
        self.fisher = None if f is None else to_device(f, self.model.device)


class BlockNGD(_FisherMethod):
    """``BlockNGD(model, loss_fn, lr=0.5, damping=0.3, kind="exact", kl_clip=0.1, ...)``: exact layer blocks."""

    name = "block-ngd"

    def __init__(
        self,
        model,
        loss_fn,
        lr: float = 0.5,
        momentum: float = 0.0,
        damping: float = 0.3,
        kind: str = "exact",
        mc_samples: int = 1,
        ema_decay: float = 0.0,
        weight_decay: float = 0.0,
        kl_clip: float | None = 0.1,
    ):
        super().__init__(model, loss_fn, lr, momentum, weight_decay, damping, kind, mc_samples, ema_decay, kl_clip)
        self.blocks = None  # [(p_l, p_l)] per layer

    def _direction(self, res, grad, theta, x, y, rng, timer, info):
        n = x.shape[0]
        xp = get_xp(grad)
        with timer("curvature"):
            stats = self._stats(res, x, y, rng)
            new = blocks_from_stats(stats, n)  # [F_ll]
            self.blocks = new if self.blocks is None else [_ema(o, b, self.ema_decay) for o, b in zip(self.blocks, new)]
        with timer("inversion"):
            parts = []
            for sl, block in zip(layer_slices(self.model), self.blocks):
                parts.append(dense_solve(block, grad[sl], self.damping))
            direction = xp.concatenate(parts)
        with timer("update"):
            return self._step_from(direction, grad, info)

    def dense_blocks(self):
        """The current block-diagonal matrix as (P, P) (for plots and tests)."""
        return blocks_to_dense(self.model, self.blocks)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "blocks": None if self.blocks is None else [to_numpy(b) for b in self.blocks]}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        b = state.get("blocks")
        self.blocks = None if b is None else [to_device(m, self.model.device) for m in b]
