"""The dense Fisher (P, P) and its block-diagonal part, in θ's order (docs/math.md §1, §3).

    F = (1/N) Σ_n Σ_s u_{s,n} u_{s,n}ᵀ = Vᵀ V / N
    block-diagonal: F_bd[l, l] = F[l, l] for every layer l, zero across layers  [MG15 §4.2]

Each function refuses, before allocating, a matrix above ``max_bytes``
(:mod:`.memory`).
"""

from __future__ import annotations

from ..backend import get_xp
from ..params import flat_to_wbar, layer_slices, wbar_to_flat
from ..validate import check_damping
from .curvature import Curvature
from .memory import check_dense_size
from .solve import cholesky_solve, damped_cholesky, woodbury_solve_from_stats
from .vectors import fisher_stats, vectors_from_stats


def dense(model, loss_fn, x, y, kind: str, rng=None, mc_samples: int = 1, max_bytes=None):
    """The Fisher of ``kind`` ("exact", "mc", "empirical") on the batch.  (P, P)"""
    check_dense_size(model.num_params, model.dtype, max_bytes)
    stats, _ = fisher_stats(model, loss_fn, x, y, kind, rng, mc_samples)
    return dense_from_stats(stats, x.shape[0])


def dense_from_stats(stats, n: int):
    """F = Vᵀ V / N from the statistics of N samples' Fisher seeds.  (P, P)"""
    v = vectors_from_stats(stats)  # (K, P)
    return (v.T @ v) / n  # the 1/N of F = (1/N) Σ_n …


def layer_blocks(model, loss_fn, x, y, kind: str, rng=None, mc_samples: int = 1):
    """The exact diagonal blocks F[l, l] (p_l, p_l) of the Fisher, one per layer, θ's order."""
    stats, _ = fisher_stats(model, loss_fn, x, y, kind, rng, mc_samples)
    return blocks_from_stats(stats, x.shape[0])


def blocks_from_stats(stats, n: int):
    """The diagonal blocks F[l, l] = V_lᵀ V_l / N, one per layer's statistics.  [(p_l, p_l)]"""
    blocks = []
    for st in stats:
        u = vectors_from_stats([st])  # (K, p_l)
        blocks.append((u.T @ u) / n)
    return blocks


def block_diagonal(model, loss_fn, x, y, kind: str, rng=None, mc_samples: int = 1, max_bytes=None):
    """The block-diagonal Fisher as a dense (P, P) matrix: layer blocks of F, zeros elsewhere."""
    check_dense_size(model.num_params, model.dtype, max_bytes, "dense block-diagonal Fisher")
    blocks = layer_blocks(model, loss_fn, x, y, kind, rng, mc_samples)
    return blocks_to_dense(model, blocks)


def blocks_to_dense(model, blocks):
    """Place per-layer (p_l, p_l) blocks on the diagonal of a zero (P, P) matrix."""
    xp = get_xp(blocks[0])
    p = model.num_params
    out = xp.zeros((p, p), dtype=blocks[0].dtype)
    for sl, block in zip(layer_slices(model), blocks):
        out[sl, sl] = block
    return out


# ---- the structures (protocol: .curvature) ---------------------------------------------------
SOLVERS = ("dense", "woodbury")


class Dense(Curvature):
    """The full Fisher F (P, P) — exact NGD [A98]; (F + γI)⁻¹ ∇h two ways (docs/math.md §7).

    ``solver="dense"``: statistic F = VᵀV / N, averaged; refresh: Cholesky of F + γI, O(P³/3);
    apply: two triangular solves, O(P²).  ``solver="woodbury"``: keeps this batch's seed
    statistics instead of F (no average: ε must be 0) and solves a K × K system per apply,
    O(P K² + K³), K = S·N; refresh only records γ.
    """

    name = "dense"
    averaged = ("fisher",)

    def __init__(self, model, ema_decay: float = 0.0, solver: str = "dense", max_bytes=None):
        if solver not in SOLVERS:
            raise ValueError(f"unknown solver {solver!r}: expected one of {SOLVERS}")
        super().__init__(model, ema_decay)
        self.solver = solver
        if solver == "woodbury":
            if self.ema_decay:
                raise ValueError("solver='woodbury' works on the mini-batch Fisher: ema_decay must be 0")
            self.averaged = ()  # nothing averaged: the batch's statistics are kept as they are
            self.batch = None  # (stats, n) of the last update
        else:
            check_dense_size(model.num_params, model.dtype, max_bytes)
        self.low = None  # Cholesky factor of F + γI (solver="dense")

    def check_damping(self, damping):
        damping = super().check_damping(damping)
        if self.solver == "woodbury" and damping == 0:
            raise ValueError("solver='woodbury' needs damping (λ) > 0")
        return damping

    def statistic(self, stats, n):
        return {"fisher": dense_from_stats(stats, n)}  # F = VᵀV / N   (P, P)

    def update(self, stats, n):
        if self.solver == "woodbury":
            self.updates, self.batch = self.updates + 1, (stats, n)
        else:
            super().update(stats, n)

    def refresh(self, damping):
        self.damping = check_damping(damping)
        if self.solver == "dense":
            self.low = damped_cholesky(self.fisher, self.damping)  # F + γI = L Lᵀ

    def apply(self, layer_grads, damping=None):
        gamma = self._damping_for(damping)
        layers = self.model.param_layers()
        g = get_xp(layer_grads[0]).concatenate([wbar_to_flat(la, v) for la, v in zip(layers, layer_grads)])
        if self.solver == "woodbury":
            stats, n = self.batch
            d = woodbury_solve_from_stats(stats, g, gamma, n, layer_slices(self.model))
        else:
            low = self.low if gamma == self.damping else damped_cholesky(self.fisher, gamma)
            d = cholesky_solve(low, g)  # (F + γI)⁻¹ g
        return [flat_to_wbar(la, d[sl]) for la, sl in zip(layers, layer_slices(self.model))]

    def to_dense(self):
        if self.solver == "woodbury":
            return dense_from_stats(*self.batch)
        return self.fisher

    def _array_like(self):
        return self.to_dense()

    def memory(self):
        p = self.model.num_params
        return 2 * p * p if self.solver == "dense" else 0

    def refresh_cost(self):
        return self.model.num_params**3 // 3 if self.solver == "dense" else 0

    def state_shapes(self):
        p = self.model.num_params
        return {"fisher": (p, p)} if self.solver == "dense" else {}

    def _load_inverse_state(self, state):
        if self.solver == "dense":
            super()._load_inverse_state(state)


class BlockDiagonal(Curvature):
    """The exact layer blocks F_ll, zero across layers ([MG15] §4.2): Δ_l = (F_ll + γI)⁻¹ ∇_l h.

    statistic: F_ll = V_lᵀ V_l / N per layer; refresh: one Cholesky per block, O(Σ_l p_l³/3);
    apply: two triangular solves per layer.
    """

    name = "block-diagonal"
    averaged = ("blocks",)

    def statistic(self, stats, n):
        return {"blocks": blocks_from_stats(stats, n)}  # [(p_l, p_l)]

    def refresh(self, damping):
        self.damping = check_damping(damping)
        self.lows = [damped_cholesky(b, self.damping) for b in self.blocks]

    def apply(self, layer_grads, damping=None):
        gamma = self._damping_for(damping)
        lows = self.lows if gamma == self.damping else [damped_cholesky(b, gamma) for b in self.blocks]
        return [
            flat_to_wbar(la, cholesky_solve(low, wbar_to_flat(la, v)))
            for la, low, v in zip(self.model.param_layers(), lows, layer_grads)
        ]

    def to_dense(self):
        return blocks_to_dense(self.model, self.blocks)

    def state_shapes(self):
        return {"blocks": [(la.num_params, la.num_params) for la in self.model.param_layers()]}

    def memory(self):
        return 2 * sum(la.num_params**2 for la in self.model.param_layers())

    def refresh_cost(self):
        return sum(la.num_params**3 // 3 for la in self.model.param_layers())
