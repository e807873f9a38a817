"""Flatten: (N, C, H, W) → (N, C·H·W), and back in the backward pass."""

from __future__ import annotations

import math

from .module import Layer


class Flatten(Layer):
    """``Flatten()``: keeps the batch axis, flattens the rest in C order (as PyTorch)."""

    def forward(self, x):
        return x.reshape(x.shape[0], -1)

    def forward_cached(self, x):
        return self.forward(x), {"x_shape": x.shape}

    def backward(self, cache, grad_out):
        """grad_out : (S, N, D) → ``(S, N, *x_shape[1:])``."""
        return grad_out.reshape(grad_out.shape[:2] + tuple(cache["x_shape"][1:]))

    def output_shape(self, in_shape):
        return (math.prod(in_shape),)
