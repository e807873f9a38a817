"""Max and average pooling over square windows, with stride and padding.

Windows are strided views of the (padded) input, as in im2col.  Both passes
loop over the k² kernel offsets (i, j), never over samples: at one offset,
``win[..., i, j]`` is the (N, C, Ho, Wo) array of every window's (i, j)-th
element, so the forward pass is k² element-wise operations on whole arrays and
the backward pass k² slice-adds (plain writes when the windows do not overlap),
vectorised over samples, channels and seed vectors.
(Reducing over the two small trailing window axes instead, ``win.max(axis=(4, 5))``,
gives the same numbers but runs a short inner loop per window and is several
times slower.)

    MaxPool2d:  y = max over the window;  ∂y/∂x = 1 at the (first) arg-max, 0 elsewhere.
                Padding is −∞ (never selected), as in PyTorch.
    AvgPool2d:  y = (1/k²) Σ window;      ∂y/∂x = 1/k² on every window element.
                Zero padding is counted in the mean (PyTorch's count_include_pad=True).
"""

from __future__ import annotations

import numpy as np

from ..backend import get_xp
from .im2col import out_size, pad2d, windows
from .module import Layer


class _Pool2d(Layer):
    name = "Pool2d"

    def __init__(self, kernel_size: int, stride=None, padding: int = 0):
        stride = kernel_size if stride is None else stride
        for nm, v in (("kernel_size", kernel_size), ("stride", stride)):
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{self.name}: {nm} must be a positive integer, got {v!r}")
        if not isinstance(padding, (int, np.integer)) or not 0 <= padding <= kernel_size // 2:
            raise ValueError(
                f"{self.name}: padding must be an integer in [0, kernel_size // 2 = "
                f"{kernel_size // 2}], got {padding!r}"
            )
        self.kernel_size, self.stride, self.padding = int(kernel_size), int(stride), int(padding)

    def __repr__(self) -> str:
        return f"{self.name}({self.kernel_size}, stride={self.stride}, padding={self.padding})"

    def output_shape(self, in_shape):
        if len(in_shape) != 3:
            raise ValueError(f"{self!r}: per-sample input shape {tuple(in_shape)}, expected (C, H, W)")
        c, h, w = in_shape
        k, s, p = self.kernel_size, self.stride, self.padding
        if h + 2 * p < k or w + 2 * p < k:
            raise ValueError(f"{self!r}: input of {h}×{w} is smaller than the {k}×{k} window")
        return (c, out_size(h, k, s, p), out_size(w, k, s, p))

    @property
    def offsets(self) -> list[tuple[int, int]]:
        """The k² kernel offsets (i, j) in row-major order, (0, 0) first."""
        return [(i, j) for i in range(self.kernel_size) for j in range(self.kernel_size)]

    def _windows(self, x, pad_value):
        if x.ndim != 4:
            raise ValueError(f"{self!r}: input has shape {tuple(x.shape)}, expected (N, C, H, W)")
        self.output_shape(x.shape[1:])
        k = self.kernel_size
        return windows(pad2d(x, self.padding, pad_value), k, k, self.stride)  # (N, C, Ho, Wo, k, k)

    def _scatter(self, weight, grad_out, x_shape):
        """grad_in = Σ over kernel offsets (i, j) of grad_out ⊙ weight(i, j), each term placed
        back on the input elements that offset reads (the adjoint of taking ``win[..., i, j]``).

        grad_out : (S, N, C, Ho, Wo) → grad_in : (S, N, C, H, W)
        """
        xp = get_xp(grad_out)
        k, s, p = self.kernel_size, self.stride, self.padding
        *lead, ho, wo = grad_out.shape
        h, w = x_shape[-2:]
        dx = xp.zeros((*lead, h + 2 * p, w + 2 * p), dtype=grad_out.dtype)  # (S, N, C, Hp, Wp)
        for i, j in self.offsets:
            target = dx[..., i : i + s * ho : s, j : j + s * wo : s]  # (S, N, C, Ho, Wo), a view of dx
            if s >= k:  # windows do not overlap: each input element gets one term, written in place
                xp.multiply(grad_out, weight(i, j), out=target)
            else:
                target += grad_out * weight(i, j)
        return dx[..., p : p + h, p : p + w]


class MaxPool2d(_Pool2d):
    """``MaxPool2d(kernel_size, stride=None, padding=0)``: (N, C, H, W) → (N, C, Ho, Wo)."""

    name = "MaxPool2d"

    def forward(self, x):
        return self._max(self._windows(x, -np.inf))

    def forward_cached(self, x):
        """The cache holds, per kernel offset (i, j), where that offset is the window's arg-max:

        first_max : (k, k, N, C, Ho, Wo) bool, one True per window (finite inputs):
                    the first maximum in (i, j) row-major order on ties, as PyTorch.
        """
        xp = get_xp(x)
        win = self._windows(x, -np.inf)  # (N, C, Ho, Wo, k, k)
        out = self._max(win)  # (N, C, Ho, Wo)
        k = self.kernel_size
        first_max = xp.empty((k, k, *out.shape), dtype=bool)  # (k, k, N, C, Ho, Wo)
        taken = xp.zeros(out.shape, dtype=bool)  # windows whose arg-max is already placed
        for i, j in self.offsets:
            hit = (win[..., i, j] == out) & ~taken  # (N, C, Ho, Wo)
            first_max[i, j] = hit
            taken |= hit
        return out, {"first_max": first_max, "x_shape": x.shape}

    def backward(self, cache, grad_out):
        first_max = cache["first_max"]  # ∂y/∂x: 1 at the window's first arg-max
        return self._scatter(lambda i, j: first_max[i, j], grad_out, cache["x_shape"])

    def _max(self, win):
        """max over the window, one element-wise maximum per kernel offset.  (N, C, Ho, Wo)"""
        xp = get_xp(win)
        out = win[..., 0, 0].copy()  # (N, C, Ho, Wo), a new array, not a view of x
        for i, j in self.offsets[1:]:
            xp.maximum(out, win[..., i, j], out=out)
        return out


class AvgPool2d(_Pool2d):
    """``AvgPool2d(kernel_size, stride=None, padding=0)``: (N, C, H, W) → (N, C, Ho, Wo)."""

    name = "AvgPool2d"

    def forward(self, x):
        win = self._windows(x, 0.0)  # (N, C, Ho, Wo, k, k)
        total = win[..., 0, 0].copy()  # (N, C, Ho, Wo), a new array, not a view of x
        for i, j in self.offsets[1:]:
            total += win[..., i, j]
        return total * (1.0 / (self.kernel_size * self.kernel_size))

    def forward_cached(self, x):
        return self.forward(x), {"x_shape": x.shape}

    def backward(self, cache, grad_out):
        weight = 1.0 / (self.kernel_size * self.kernel_size)  # ∂y/∂x = 1/k² on every window element
        return self._scatter(lambda i, j: weight, grad_out, cache["x_shape"])
