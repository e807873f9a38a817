"""The curvature protocol: every Fisher structure updates, refreshes, applies and turns dense.

A structure C approximates the Fisher F of one kind (docs/math.md §3) with a form that is
cheap to invert.  Every structure — :class:`~.dense.Dense`, :class:`~.dense.BlockDiagonal`,
:class:`~.diagonal.Diagonal`, :class:`~.kfac.Kronecker`, :class:`~.ekfac.EKFAC`,
:class:`~.tridiag.BlockTridiagonal`, and :class:`Identity` for SGD — answers the same calls,
in the order of one step of [MG15] Alg. 1 (docs/architecture.md)::

    C.statistic(stats, n)     this batch's statistic, from the layer statistics (ā, g) of the
                              Fisher seeds of n samples (:func:`~.vectors.fisher_stats`)
    C.update(stats, n)        fold it into the moving average (every T_cov steps):
                                  X ← ε_k X + (1 − ε_k) X_batch,  ε_k = min(1 − 1/k, ε)   [MG15 §5]
    C.refresh(γ)              factorise / invert for damping γ (every T_inv steps)
    C.apply(layer_grads, γ)   the preconditioned gradient (C + γ)⁻¹ ∇h per layer, W̄ form
    C.to_dense()              the undamped C as (P, P) in θ's order
    C.inverse_dense(γ)        the damped inverse that ``apply`` multiplies by, (P, P)
    C.state_dict(), C.load_state_dict(state)
    C.memory(), C.refresh_cost()   entries stored, and the order of the work of one refresh

``exact_damping``: whether γ enters exactly (then ``apply`` follows a new γ at once, for
free); a factored damping ([MG15] §6.3) is baked in at ``refresh`` and ``apply`` refuses
another γ.  A structure whose inverse also reads the latest batch (EKFAC's scalings) has
``refit_due`` / ``refit``; the others never ask for it.
"""

from __future__ import annotations

import copy

import numpy as np

from ..backend import get_xp, to_device, to_numpy
from ..params import flat_to_wbar, layer_slices, wbar_to_flat
from ..validate import check_damping, check_number, check_state_array, check_state_number


def check_decay(ema_decay) -> float:
    """ε ∈ [0, 1): the weight of the old average (ε = 1 would never change it)."""
    eps = check_number("ema_decay (ε)", ema_decay, low=0, high=1)
    if eps == 1:
        raise ValueError("ema_decay (ε) must be < 1, got 1 (the curvature would never change)")
    return eps


def moving_average(old, batch, k: int, decay: float):
    """X ← ε_k X + (1 − ε_k) X_batch, ε_k = min(1 − 1/k, ε), over nested lists of arrays.

    The k-th update: the first (k = 1, or no ``old``) takes the batch value, ε_k = 0.
    """
    eps = min(1 - 1 / k, decay)
    if old is None or eps == 0:
        return batch
    if isinstance(batch, (list, tuple)):
        return type(batch)(moving_average(o, b, k, decay) for o, b in zip(old, batch))
    return eps * old + (1 - eps) * batch


def saved_inverse(state: dict, where: str, gamma):
    """``state["inverses"]`` of a checkpoint, or None; an inverse without its γ (or a γ without it) is refused."""
    saved = state["inverses"]
    if (saved is None) != (gamma is None):
        raise ValueError(f"{where}['inverses'] and {where}['inverse_damping'] must both be set or both be null")
    return saved


def tree_to_numpy(tree):
    """Nested lists of arrays → nested lists of NumPy arrays (None stays None)."""
    if tree is None:
        return None
    if isinstance(tree, (list, tuple)):
        return [tree_to_numpy(t) for t in tree]
    return to_numpy(tree)


class Curvature:
    """Base of the structures: the moving average, the state and the dense inverse, written once.

    A structure sets ``averaged`` (the names of its moving-averaged statistics) and defines
    ``statistic``, ``refresh``, ``apply`` and ``to_dense``.
    """

    name = "curvature"
    averaged: tuple = ()
    symmetric: tuple = ()  # the averaged statistics made of symmetric matrices (packed by a distributed run)
    exact_damping = True

    def __init__(self, model, ema_decay: float = 0.0):
        self.model = model
        self.ema_decay = check_decay(ema_decay)
        self.updates = 0  # k in ε_k
        self.damping = None  # γ of the last refresh (None: never refreshed)
        for name in self.averaged:
            setattr(self, name, None)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(ema_decay={self.ema_decay})"

    def check_damping(self, damping: float) -> float:
        """λ this structure can be damped with (λ = 0 allowed unless it says otherwise)."""
        return check_damping(damping)

    # ---- statistics ------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """Whether a batch has been folded in."""
        return self.updates > 0

    def statistic(self, stats, n: int) -> dict:  # pragma: no cover - abstract
        """{name: batch value} for every name of ``averaged``, from the layer statistics of n samples."""
        raise NotImplementedError

    def update(self, stats, n: int) -> None:
        """Fold this batch's statistic into the moving averages (see :meth:`fold`)."""
        self.fold(self.statistic(stats, n))

    def fold(self, batch: dict) -> None:
        """X ← ε_k X + (1 − ε_k) X_batch for every averaged statistic, one k for all ([MG15] §5)."""
        self.updates += 1
        for name, value in batch.items():
            setattr(self, name, moving_average(getattr(self, name), value, self.updates, self.ema_decay))

    def refit_due(self, step: int, refreshing: bool) -> bool:
        """Whether :meth:`refit` wants this step's statistics (EKFAC's scalings); never by default."""
        return False

    # ---- refresh and apply -----------------------------------------------------------
    @property
    def refreshed(self) -> bool:
        return self.damping is not None

    def refresh(self, damping: float) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def apply(self, layer_grads, damping: float | None = None) -> list:  # pragma: no cover - abstract
        """[(d_out, a_dim)] → [(d_out, a_dim)]: (C + γ)⁻¹ per layer; γ None: the refreshed one."""
        raise NotImplementedError

    def _damping_for(self, damping):
        """The γ ``apply`` uses: a new one only where the damping is exact."""
        if not self.refreshed:
            raise ValueError(f"{self.name}: no inverse yet — refresh(damping) before apply")
        if damping is None or damping == self.damping:
            return self.damping
        if not self.exact_damping:
            raise ValueError(
                f"{self.name}: its damping γ = {self.damping:g} is factored into the inverse; "
                f"refresh({damping:g}) to use another"
            )
        return damping

    def apply_flat(self, grad, damping: float | None = None):
        """:meth:`apply` on a flat (P,) vector in θ's order.  (P,) → (P,)"""
        layers = self.model.param_layers()
        grads = [flat_to_wbar(layer, grad[sl]) for layer, sl in zip(layers, layer_slices(self.model))]
        return get_xp(grad).concatenate(
            [wbar_to_flat(layer, d) for layer, d in zip(layers, self.apply(grads, damping))]
        )

    # ---- dense views -----------------------------------------------------------------
    def to_dense(self):  # pragma: no cover - abstract
        """The undamped curvature C as (P, P) in θ's order."""
        raise NotImplementedError

    def inverse_dense(self, damping: float):
        """The damped inverse ``apply`` multiplies by after ``refresh(damping)``, (P, P), column by column.

        Built on a copy: the structure's own inverse is left as it was.
        """
        other = copy.copy(self)
        other.refresh(damping)
        p = self.model.num_params
        like = self._array_like()
        xp = get_xp(like)
        eye = xp.eye(p, dtype=like.dtype)
        return xp.stack([other.apply_flat(e) for e in eye], axis=1)

    def _array_like(self):
        """An array of the structure's backend and dtype (the first averaged statistic's)."""
        first = getattr(self, self.averaged[0])
        while isinstance(first, (list, tuple)):
            first = first[0]
        return first

    # ---- size --------------------------------------------------------------------------
    def memory(self) -> int:
        """Entries stored by the statistics and the inverse."""
        raise NotImplementedError  # pragma: no cover - abstract

    def refresh_cost(self) -> int:
        """The order of the arithmetic of one refresh (flops, constants dropped)."""
        raise NotImplementedError  # pragma: no cover - abstract

    # ---- state -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Plain data: the counter k, the averaged statistics, γ of the inverse, and the inverse."""
        return {
            "stat_updates": self.updates,
            **{name: tree_to_numpy(getattr(self, name)) for name in self.averaged},
            "inverse_damping": self.damping,
            **self._inverse_state(),
        }

    def state_shapes(self) -> dict:
        """{name: shape} of every averaged statistic for this model: nested lists (per layer, per pair) of tuples."""
        return {}

    def check_state(self, state: dict, where: str = "state") -> None:
        """Raise a ValueError naming the entry unless ``state`` (a :meth:`state_dict`) fits this model.

        Everything :meth:`load_state_dict` would apply is checked first — also the entries a
        fresh structure holds as None — so that a refused state changes nothing.
        """
        k = check_state_number(f"{where}['stat_updates']", state["stat_updates"], low=0, integer=True)
        for name, shape in self.state_shapes().items():  # present once a batch has been folded in
            check_state_array(f"{where}[{name!r}]", state[name], shape, optional=k == 0)
        gamma = check_state_number(f"{where}['inverse_damping']", state["inverse_damping"], low=0, optional=True)
        self._check_inverse_state(state, where, gamma)

    def _check_inverse_state(self, state: dict, where: str, gamma) -> None:
        """Check what :meth:`_inverse_state` saved (nothing by default)."""

    def load_state_dict(self, state: dict) -> None:
        dev = self.model.device
        self.updates = int(state["stat_updates"])
        for name in self.averaged:
            setattr(self, name, _pairs(tree_to_device_list(state[name], dev)))
        self.damping = None if state["inverse_damping"] is None else float(state["inverse_damping"])
        self._load_inverse_state(state)

    def _inverse_state(self) -> dict:
        """What the inverse needs beyond the statistics and γ (nothing by default: rebuilt by refresh)."""
        return {}

    def _load_inverse_state(self, state: dict) -> None:
        """Restore the inverse; by default rebuild it from the statistics at the saved γ."""
        if self.damping is not None and self.ready:
            self.refresh(self.damping)


def tree_to_device_list(tree, device):
    """Nested lists of NumPy arrays → the same nesting on ``device``."""
    if tree is None:
        return None
    if isinstance(tree, (list, tuple)):
        return [tree_to_device_list(t, device) for t in tree]
    return to_device(np.asarray(tree), device)


def _pairs(tree):
    """Inner two-element lists (a per-layer pair such as (A, G)) as tuples, as the update builds them."""
    if isinstance(tree, list) and tree and all(isinstance(t, list) and len(t) == 2 for t in tree):
        return [tuple(t) for t in tree]
    return tree


class Identity(Curvature):
    """C = I, no statistics: the preconditioner of SGD.  apply is the identity."""

    name = "identity"

    def __init__(self, model):
        super().__init__(model)
        self.updates, self.damping = 1, 0.0  # nothing to fold or refresh

    def statistic(self, stats, n):
        return {}

    def refresh(self, damping):
        self.damping = 0.0

    def apply(self, layer_grads, damping=None):
        return list(layer_grads)

    def to_dense(self):
        xp = get_xp(self.model.param_layers()[0].weight)
        return xp.eye(self.model.num_params, dtype=self.model.dtype)

    def memory(self):
        return 0

    def refresh_cost(self):
        return 0
