"""Flatten: (N, C, H, W) → (N, C·H·W), and back in the backward pass."""

from __future__ import annotations

import math

from .layout import in_image_layout
from .module import Layer


class Flatten(Layer):
    """``Flatten()``: keeps the batch axis, flattens the rest in C order (as PyTorch).

    An image stored sample-minor (:mod:`kfac_ref.nn.layout`) flattens to a view stored (C·H·W, N),
    and the gradient goes back in that layout.
    """

    def forward(self, x):
        return x.reshape(x.shape[0], -1)  # a view when x is stored (C, H, W, N); else a copy

    def forward_cached(self, x):
        return self.forward(x), {"x_shape": x.shape}

    def backward(self, cache, grad_out):
        """grad_out : (S, N, D) → ``(S, N, *x_shape[1:])``, images in the image layout."""
        grad = grad_out.reshape(grad_out.shape[:2] + tuple(cache["x_shape"][1:]))
        return in_image_layout(grad) if grad.ndim == 5 else grad

    def output_shape(self, in_shape):
        return (math.prod(in_shape),)
