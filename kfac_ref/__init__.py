"""kfac_ref: SGD, exact natural gradient and K-FAC, every derivative written by hand.

Public entry points (see README.md):

- ``kfac_ref.nn``: layers and losses (PyTorch's names and layouts)
- ``kfac_ref.get_flat_params(model)``, ``kfac_ref.set_flat_params(model, theta)``
- ``kfac_ref.per_sample_grads(model, loss_fn, x, y)`` → (N, P),
  ``kfac_ref.batch_grad(model, loss_fn, x, y)`` → (P,)
- ``kfac_ref.forward`` / ``kfac_ref.backward``: per-sample statistics ā and g
- ``kfac_ref.fisher``: the exact / Monte-Carlo / empirical Fisher and its approximations
- ``kfac_ref.optim``: SGD, NGD, BlockNGD, KFAC, KFACTridiag, EKFAC;  ``kfac_ref.train``: the training loop
- ``kfac_ref.data``: digits, MNIST-format IDX, CIFAR-10;  ``kfac_ref.models``: ready-made nets
"""

from . import checkpoint, data, fisher, models, nn, optim, train
from .backprop import LayerStats, Trace, backward, forward
from .grads import batch_grad, loss_and_grad, per_sample_grads
from .params import get_flat_params, layer_slices, set_flat_params

__version__ = "0.1.0"

__all__ = [
    "LayerStats",
    "Trace",
    "backward",
    "batch_grad",
    "checkpoint",
    "data",
    "fisher",
    "forward",
    "get_flat_params",
    "layer_slices",
    "loss_and_grad",
    "models",
    "nn",
    "optim",
    "per_sample_grads",
    "set_flat_params",
    "train",
]
