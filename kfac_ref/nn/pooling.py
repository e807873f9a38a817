"""Max and average pooling over square windows, with stride and padding.

Windows are strided views of the (padded) input, as in im2col; the backward
passes scatter the gradient back with one slice-add per kernel offset (kh·kw
of them), vectorised over samples, channels and seed vectors.

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
            raise ValueError(f"{self.name}: padding must be an integer in [0, kernel_size // 2 = "
                             f"{kernel_size // 2}], got {padding!r}")
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

    def _windows(self, x, pad_value):
        if x.ndim != 4:
            raise ValueError(f"{self!r}: input has shape {tuple(x.shape)}, expected (N, C, H, W)")
        self.output_shape(x.shape[1:])
        k = self.kernel_size
        return windows(pad2d(x, self.padding, pad_value), k, k, self.stride)  # (N, C, Ho, Wo, k, k)

    def _scatter(self, per_offset, grad_out, x_shape):
        """Σ over kernel offsets (i, j) of per_offset(i, j) · grad_out, placed back on the input."""
        xp = get_xp(grad_out)
        k, s, p = self.kernel_size, self.stride, self.padding
        *lead, ho, wo = grad_out.shape
        h, w = x_shape[-2:]
        dx = xp.zeros((*lead, h + 2 * p, w + 2 * p), dtype=grad_out.dtype)  # (S, N, C, Hp, Wp)
        for i in range(k):
            for j in range(k):
                dx[..., i : i + s * ho : s, j : j + s * wo : s] += per_offset(i, j, grad_out)
        return dx[..., p : p + h, p : p + w]


class MaxPool2d(_Pool2d):
    """``MaxPool2d(kernel_size, stride=None, padding=0)``: (N, C, H, W) → (N, C, Ho, Wo)."""

    name = "MaxPool2d"

    def forward(self, x):
        return self._windows(x, -np.inf).max(axis=(4, 5))

    def forward_cached(self, x):
        win = self._windows(x, -np.inf)
        n, c, ho, wo, k, _ = win.shape
        flat = win.reshape(n, c, ho, wo, k * k)  # (N, C, Ho, Wo, k²)
        idx = flat.argmax(axis=-1)  # (N, C, Ho, Wo), first maximum on ties
        out = get_xp(x).take_along_axis(flat, idx[..., None], axis=-1)[..., 0]
        return out, {"argmax": idx, "x_shape": x.shape}

    def backward(self, cache, grad_out):
        idx, k = cache["argmax"], self.kernel_size
        return self._scatter(lambda i, j, g: g * (idx == i * k + j), grad_out, cache["x_shape"])


class AvgPool2d(_Pool2d):
    """``AvgPool2d(kernel_size, stride=None, padding=0)``: (N, C, H, W) → (N, C, Ho, Wo)."""

    name = "AvgPool2d"

    def forward(self, x):
        return self._windows(x, 0.0).mean(axis=(4, 5))

    def forward_cached(self, x):
        return self.forward(x), {"x_shape": x.shape}

    def backward(self, cache, grad_out):
        scaled = grad_out * (1.0 / (self.kernel_size * self.kernel_size))
        return self._scatter(lambda i, j, g: scaled, grad_out, cache["x_shape"])
