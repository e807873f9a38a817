"""SGD, Adam, exact NGD, block-diagonal NGD, K-FAC, block-tridiagonal K-FAC and EKFAC behind one interface.

Every optimizer is used the same way::

    opt = Cls(model, loss_fn, lr=..., **hyper)
    info = opt.step(x, y, rng=None)   # {"loss", "step_norm", "times", ...}
"""

from .adam import Adam
from .base import PHASES, NonFiniteLossError, Optimizer
from .ekfac import EKFAC
from .kfac import KFAC
from .kfac_tridiag import KFACTridiag
from .ngd import NGD, BlockNGD
from .sgd import SGD

OPTIMIZERS = {
    "sgd": SGD,
    "adam": Adam,
    "ngd": NGD,
    "block-ngd": BlockNGD,
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
    "Adam",
    "EKFAC",
    "KFAC",
    "NGD",
    "OPTIMIZERS",
    "PHASES",
    "SGD",
    "BlockNGD",
    "KFACTridiag",
    "NonFiniteLossError",
    "Optimizer",
    "make_optimizer",
]
