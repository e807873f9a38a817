"""SGD, Adam and the Fisher-preconditioned methods behind one interface.

Every optimizer is used the same way::

    opt = Cls(model, loss_fn, lr=..., **hyper)
    info = opt.step(x, y, rng=None)   # {"loss", "step_norm", "times", ...}

A Fisher-preconditioned method is one :class:`~.preconditioned.Preconditioned` optimizer
([MG15] Alg. 1) with a curvature structure of :mod:`kfac_ref.fisher` (``opt.curvature``)
and its default hyper-parameters (docs/hyperparameters.md): each is defined below in one entry.
"""

from ..fisher.dense import BlockDiagonal, Dense
from ..fisher.diagonal import Diagonal
from ..fisher.ekfac import EKFAC as EKFACCurvature
from ..fisher.kfac import Kronecker
from ..fisher.tridiag import BlockTridiagonal
from .adam import Adam
from .base import PHASES, NonFiniteLossError, Optimizer
from .preconditioned import Preconditioned, define
from .sgd import SGD

# NGD's arguments; exact NGD [A98]: θ ← θ − η ν (C + λI)⁻¹ (∇h + η_wd θ), ν the KL-clipping factor
_NGD = {"lr": 0.5, "momentum": 0.0, "damping": 0.3, "kind": "exact"}
_NGD_REST = {"mc_samples": 1, "ema_decay": 0.0, "weight_decay": 0.0, "kl_clip": 0.1}
# K-FAC's arguments [MG15]: T_cov / T_inv schedules, KL-clipping (κ = 10⁻³) with momentum, §7 rescaling, LM
_KFAC = {"lr": 0.1, "momentum": 0.9, "damping": 0.3, "kind": "mc", "mc_samples": 1, "T_cov": 1, "T_inv": 1}
_KFAC_REST = {
    "weight_decay": 0.0,
    "stats_fraction": 1.0,
    "kl_clip": 1e-3,
    "rescale": False,
    "model_fraction": 1.0,
    "adapt_damping": False,
    "T_adapt": 5,
    "omega": None,
    "min_damping": 1e-8,
}

NGD = define(
    "NGD",
    "ngd",
    lambda m, h: Dense(m, h["ema_decay"], h["solver"], h["max_bytes"]),
    {**_NGD, "solver": "dense", **_NGD_REST, "max_bytes": None},
    """``NGD(model, loss_fn, lr=0.5, damping=0.3, kind="exact", solver="dense", kl_clip=0.1, ...)``: full F.""",
    damp_weight_decay=False,
)
BlockNGD = define(
    "BlockNGD",
    "block-ngd",
    lambda m, h: BlockDiagonal(m, h["ema_decay"]),
    {**_NGD, **_NGD_REST},
    """``BlockNGD(model, loss_fn, lr=0.5, damping=0.3, kind="exact", kl_clip=0.1, ...)``: exact layer blocks.""",
    damp_weight_decay=False,
)
DiagNGD = define(
    "DiagNGD",
    "diag-ngd",
    lambda m, h: Diagonal(m, h["ema_decay"]),
    {**_NGD, **_NGD_REST},
    """``DiagNGD(model, loss_fn, lr=0.5, damping=0.3, kind="exact", kl_clip=0.1, ...)``: diag F + λI.""",
    damp_weight_decay=False,
)
KFAC = define(
    "KFAC",
    "kfac",
    lambda m, h: Kronecker(m, h["ema_decay"], h["damping_mode"]),
    {**_KFAC, "ema_decay": 0.95, "damping_mode": "factored", **_KFAC_REST},
    """``KFAC(model, loss_fn, lr=0.1, momentum=0.9, damping=0.3, kind="mc", kl_clip=1e-3, ...)``.

    See docs/hyperparameters.md for every hyper-parameter, its symbol in [MG15] and its default.""",
)
KFACTridiag = define(
    "KFACTridiag",
    "kfac-tridiag",
    lambda m, h: BlockTridiagonal(m, h["ema_decay"], h["damping_mode"]),
    {**_KFAC, "ema_decay": 0.95, "damping_mode": "factored", **_KFAC_REST},
    """``KFACTridiag(model, loss_fn, lr=0.1, momentum=0.9, damping=0.3, kind="mc", kl_clip=1e-3, ...)``.

    K-FAC's hyper-parameters; the model must be a chain of Linear layers (an MLP).""",
)
EKFAC = define(
    "EKFAC",
    "ekfac",
    lambda m, h: EKFACCurvature(m, h["ema_decay"], h["T_scale"]),
    {**_KFAC, "ema_decay": 0.95, **_KFAC_REST, "T_scale": 1},
    """``EKFAC(model, loss_fn, lr=0.1, momentum=0.9, damping=0.3, kind="mc", T_scale=1, kl_clip=1e-3, ...)``.

    K-FAC's hyper-parameters (damping is exact: λ = 0 allowed) and ``T_scale``, the period of
    the scalings' refit.""",
)

OPTIMIZERS = {
    "sgd": SGD,
    "adam": Adam,
    "ngd": NGD,
    "block-ngd": BlockNGD,
    "diag-ngd": DiagNGD,
    "kfac": KFAC,
    "kfac-tridiag": KFACTridiag,
    "ekfac": EKFAC,
}


def make_optimizer(name: str, model, loss_fn, **hyper):
    """Build an optimizer by its short name (a key of :data:`OPTIMIZERS`)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}: expected one of {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[name](model, loss_fn, **hyper)


__all__ = [
    "EKFAC",
    "Adam",
    "KFAC",
    "NGD",
    "OPTIMIZERS",
    "PHASES",
    "SGD",
    "BlockNGD",
    "DiagNGD",
    "KFACTridiag",
    "NonFiniteLossError",
    "Optimizer",
    "Preconditioned",
    "make_optimizer",
]
