"""kfac_ref: SGD, exact natural gradient and K-FAC, every derivative written by hand.

Public entry points (see README.md):

- ``kfac_ref.nn``: layers and losses (PyTorch's names and layouts)
- ``kfac_ref.get_flat_params(model)``, ``kfac_ref.set_flat_params(model, theta)``
- ``kfac_ref.per_sample_grads(model, loss_fn, x, y)`` → (N, P),
  ``kfac_ref.batch_grad(model, loss_fn, x, y)`` → (P,)
- ``kfac_ref.forward`` / ``kfac_ref.backward``: per-sample statistics ā and g
"""

from . import fisher, nn
from .backprop import LayerStats, Trace, backward, forward
from .grads import batch_grad, loss_and_grad, per_sample_grads
from .params import get_flat_params, layer_slices, set_flat_params

__version__ = "0.1.0"

__all__ = [
    "LayerStats", "Trace", "backward", "batch_grad", "forward", "get_flat_params",
    "fisher", "layer_slices", "loss_and_grad", "nn", "per_sample_grads", "set_flat_params",
]
