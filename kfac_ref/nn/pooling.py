"""Max and average pooling over square windows, with stride and padding.

A k×k window separates into two 1-D windows: first along the width (every input
row reduced to Wo values), then along the height (Hp rows reduced to Ho).  Each
stage takes k strided views of its input, one per kernel offset j,

    x[..., j : j + s·(Wo − 1) + 1 : s]     the j-th element of every window   (..., Hp, Wo)

and combines them pairwise, element-wise over whole arrays: 2k operations on
big arrays instead of k² (or a short inner loop per window, as
``windows(x).max(axis=(-2, -1))`` would run, several times slower).  With
k = s = 2 the views are those of ``x.reshape(N, C, Hp, Wo, 2)``.  The backward pass
runs the two stages in reverse, each as k slice-writes (slice-adds when windows
overlap), vectorised over samples, channels and seed vectors.

    MaxPool2d:  y = max over the window;  ∂y/∂x = 1 at the (first) arg-max, 0 elsewhere.
                Padding is −∞ (never selected), as in PyTorch.
    AvgPool2d:  y = (1/k²) Σ window;      ∂y/∂x = 1/k² on every window element.
                Zero padding is counted in the mean (PyTorch's count_include_pad=True).
"""

from __future__ import annotations

import numpy as np

from ..backend import get_xp
from .im2col import out_size, pad2d
from .layout import image_layout
from .module import Layer

W_AXIS, H_AXIS = -1, -2  # the two stages: along the width, then along the height


def offset_view(v, axis: int, j: int, stride: int, n_out: int):
    """The j-th element of each of the n_out windows along ``axis`` (−1 or −2): a strided view."""
    index = [slice(None)] * v.ndim
    index[axis] = slice(j, j + stride * (n_out - 1) + 1, stride)
    return v[tuple(index)]


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

    def _padded(self, x, pad_value):
        """x padded with ``pad_value``, and the output size (Ho, Wo)."""
        if x.ndim != 4:
            raise ValueError(f"{self!r}: input has shape {tuple(x.shape)}, expected (N, C, H, W)")
        _, ho, wo = self.output_shape(x.shape[1:])
        return pad2d(x, self.padding, pad_value), (ho, wo)

    def _views(self, v, axis: int, n_out: int):
        return [offset_view(v, axis, j, self.stride, n_out) for j in range(self.kernel_size)]

    def _spread(self, grad, axis: int, size: int, fill):
        """The adjoint of one stage: each offset's share of the gradient goes back to the elements that
        offset read.  grad : (..., n_out) along ``axis`` → (..., size) along ``axis``, in the image layout.
        ``fill(grad, targets)`` writes the shares into the k offset views of the result."""
        shape = list(grad.shape)
        shape[axis] = size
        out = image_layout(get_xp(grad), shape, grad.dtype)
        k, s, n_out = self.kernel_size, self.stride, grad.shape[axis]
        if s > k:
            out[...] = 0.0  # gaps between the windows: elements no window reads get no gradient
        else:  # offsets j < s write every element before s·n_out once; only the tail is zeroed
            offset_view(out, axis, s * n_out, 1, size - s * n_out)[...] = 0.0
        fill(grad, self._views(out, axis, n_out))
        return out

    def _by_offset(self, share):
        """A ``fill`` from offset j's share ``share(j, grad, out)`` (written into ``out``, or returned when
        ``out`` is None): the first s offsets of all windows are disjoint and written in place; with
        overlapping windows (s < k) offset j adds onto what offsets j − s, … wrote."""

        def fill(grad, targets):
            for j, target in enumerate(targets):
                if j < self.stride:
                    share(j, grad, target)
                else:
                    target += share(j, grad, None)

        return fill

    def _unpad(self, dx, x_shape):
        p, (h, w) = self.padding, x_shape[-2:]
        return dx[..., p : p + h, p : p + w]


class MaxPool2d(_Pool2d):
    """``MaxPool2d(kernel_size, stride=None, padding=0)``: (N, C, H, W) → (N, C, Ho, Wo)."""

    name = "MaxPool2d"

    def forward(self, x):
        x_pad, (ho, wo) = self._padded(x, -np.inf)
        rows = self._stage(x_pad, W_AXIS, wo, pick=False)[0]  # (N, C, Hp, Wo): max along each window row
        return self._stage(rows, H_AXIS, ho, pick=False)[0]  # (N, C, Ho, Wo)

    def forward_cached(self, x):
        """The cache holds each stage's arg-max, the first maximum on ties (row-major order, as PyTorch):

        pick_w : (N, C, Hp, Wo) int8, the column j of the largest element of each window row
        pick_h : (N, C, Ho, Wo) int8, the row i whose maximum is the window's maximum
        """
        x_pad, (ho, wo) = self._padded(x, -np.inf)
        rows, pick_w = self._stage(x_pad, W_AXIS, wo)  # (N, C, Hp, Wo)
        out, pick_h = self._stage(rows, H_AXIS, ho)  # (N, C, Ho, Wo)
        return out, {"pick_w": pick_w, "pick_h": pick_h, "x_shape": x.shape}

    def backward(self, cache, grad_out):
        """grad_out : (S, N, C, Ho, Wo) → grad_in : (S, N, C, H, W); ∂y/∂x routes each gradient to its arg-max."""
        hp, wp = (v + 2 * self.padding for v in cache["x_shape"][-2:])
        g_rows = self._spread(grad_out, H_AXIS, hp, self._route(cache["pick_h"]))  # (S, N, C, Hp, Wo)
        dx = self._spread(g_rows, W_AXIS, wp, self._route(cache["pick_w"]))  # (S, N, C, Hp, Wp)
        return self._unpad(dx, cache["x_shape"])

    def select(self, cache, v):
        """v at each window's arg-max, the forward-mode derivative.  (K, N, C, H, W) → (K, N, C, Ho, Wo)"""
        xp = get_xp(v)
        (ho, wo), v = cache["pick_h"].shape[-2:], pad2d(v, self.padding)
        for axis, pick, n_out in ((W_AXIS, cache["pick_w"], wo), (H_AXIS, cache["pick_h"], ho)):
            views = self._views(v, axis, n_out)
            v = views[0].copy(order="K") if len(views) == 1 else views[0]  # keeps the (image) layout
            for j in range(1, self.kernel_size):
                v = xp.where(pick == j, views[j], v)  # offset j where it held the maximum
        return v

    def _stage(self, v, axis: int, n_out: int, pick: bool = True):
        """Max over the k offsets along ``axis``, and (``pick``) which offset held it (the first on ties)."""
        xp = get_xp(v)
        views = self._views(v, axis, n_out)
        best = xp.maximum(views[0], views[1]) if len(views) > 1 else views[0].copy(order="K")
        if not pick:  # the forward pass alone (evaluation): the arg-max is not needed
            for j in range(2, self.kernel_size):
                xp.maximum(best, views[j], out=best)
            return best, None
        which = (xp.empty_like if len(views) > 1 else xp.zeros_like)(best, dtype=np.int8)  # best's layout
        if len(views) > 1:
            xp.greater(views[1], views[0], out=which.view(np.bool_))  # offset 1 where strictly larger, else 0
        for j in range(2, self.kernel_size):
            hit = xp.greater(views[j], best).view(np.int8)  # 1 where strictly larger: an earlier offset wins ties
            xp.maximum(best, views[j], out=best)
            xp.multiply(hit, j, out=hit)
            xp.maximum(which, hit, out=which)  # j where it won, as which < j before: no masked copy
        return best, which

    def _route(self, pick):
        """A ``fill`` routing the gradient to the arg-max: offset j's share is grad where ``pick == j``,
        else 0 (broadcast over seeds S).  Two disjoint offsets (k = 2 ≤ s) take one product and one
        difference: grad·[pick = 1], and grad minus that (exact: grad − grad·1 = 0, grad − grad·0 = grad)."""
        xp = get_xp(pick)
        if self.kernel_size == 2 <= self.stride:

            def fill(grad, targets):
                xp.multiply(grad, pick.view(np.bool_), out=targets[1])  # pick is 0 or 1
                xp.subtract(grad, targets[1], out=targets[0])

            return fill
        return self._by_offset(lambda j, grad, out: xp.multiply(grad, pick == j, out=out))


class AvgPool2d(_Pool2d):
    """``AvgPool2d(kernel_size, stride=None, padding=0)``: (N, C, H, W) → (N, C, Ho, Wo)."""

    name = "AvgPool2d"

    def forward(self, x):
        x_pad, (ho, wo) = self._padded(x, 0.0)
        rows = self._sum(x_pad, W_AXIS, wo)  # (N, C, Hp, Wo)
        total = self._sum(rows, H_AXIS, ho)  # (N, C, Ho, Wo)
        total *= 1.0 / (self.kernel_size * self.kernel_size)
        return total

    def forward_cached(self, x):
        return self.forward(x), {"x_shape": x.shape}

    def backward(self, cache, grad_out):
        """grad_out : (S, N, C, Ho, Wo) → grad_in : (S, N, C, H, W); ∂y/∂x = 1/k² on every window element."""
        hp, wp = (v + 2 * self.padding for v in cache["x_shape"][-2:])
        xp = get_xp(grad_out)

        def copy(j, grad, out):
            return grad.copy(order="K") if out is None else xp.copyto(out, grad)

        g = grad_out * (1.0 / (self.kernel_size * self.kernel_size))
        fill = self._by_offset(copy)
        dx = self._spread(self._spread(g, H_AXIS, hp, fill), W_AXIS, wp, fill)  # (S, N, C, Hp, Wp)
        return self._unpad(dx, cache["x_shape"])

    def _sum(self, v, axis: int, n_out: int):
        views = self._views(v, axis, n_out)
        total = views[0].copy(order="K")
        for view in views[1:]:
            total += view
        return total
