"""SGD, exact NGD, block-diagonal NGD and K-FAC behind one interface.

Every optimizer is used the same way::

    opt = Cls(model, loss_fn, lr=..., **hyper)
    info = opt.step(x, y, rng=None)   # {"loss", "step_norm", "times", ...}
"""

from .base import PHASES, NonFiniteLossError, Optimizer
from .kfac import KFAC
from .ngd import NGD, BlockNGD
from .sgd import SGD

OPTIMIZERS = {"sgd": SGD, "ngd": NGD, "block-ngd": BlockNGD, "kfac": KFAC}


def make_optimizer(name: str, model, loss_fn, **hyper):
    """Build an optimizer by its short name ('sgd', 'ngd', 'block-ngd', 'kfac')."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}: expected one of {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[name](model, loss_fn, **hyper)


__all__ = ["KFAC", "NGD", "OPTIMIZERS", "PHASES", "SGD", "BlockNGD", "NonFiniteLossError", "Optimizer",
           "make_optimizer"]
