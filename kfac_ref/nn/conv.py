"""2-D convolution as im2col + matrix products over blocks of locations, with its hand-written backward.

Index legend: n sample, s seed vector, t output location (T = Ho·Wo),
k patch feature (K = C_in·kh·kw, plus 1 for the bias), o output channel.

Forward ([GM16] §2):   s_{n,t} = W̄ ā_{n,t},  ā_{n,t} = [patch_{n,t}; 1],  W̄ = [W.reshape(C_out, K) | b]

Backward for seeds g_{n,t} = ∂ℓ_n/∂s_{n,t} (per-sample scale):

    ∂ℓ_n/∂patch_{n,t} = W̄[:, :K]ᵀ g_{n,t}  → col2im → ∂ℓ_n/∂x_n
    ∂ℓ_n/∂W̄ = Σ_t g_{n,t} ā_{n,t}ᵀ   (weight sharing: a sum over locations, docs/math.md §5)

Fast formulation: images are stored sample-minor, (C, H, W, N) in memory
(:mod:`kfac_ref.nn.layout`), and the patches feature-major, cols = ā as (a_dim, T·N)
(:mod:`kfac_ref.nn.im2col`), built a block of output locations at a time (whole rows, or part of
one row, small enough to stay in the processor's cache).  Then a block's forward is one product
W̄ (C_out, a_dim) × cols (a_dim, B) written straight into the output's columns, and its input
gradient one product Wᵀ (K, C_out) × g (C_out, B) followed by col2im's k² strided adds, B the
block's locations times N.
"""

from __future__ import annotations

import math

import numpy as np

from ..backend import get_xp
from .im2col import col2im_add, location_blocks, out_size, pad2d, patches_into, reads
from .layout import columns, image_layout, stored
from .module import ParamLayer, float_dtype


def _pair(v, name):
    if isinstance(v, (tuple, list)):
        if len(v) != 2 or v[0] != v[1]:
            raise ValueError(f"Conv2d: only square {name} is supported, got {v!r}")
        v = v[0]
    if not isinstance(v, (int, np.integer)):
        raise ValueError(f"Conv2d: {name} must be an integer, got {v!r}")
    return int(v)


class Conv2d(ParamLayer):
    """``Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True)``.

    weight : (C_out, C_in, kh, kw);  bias : (C_out,)  (PyTorch's layout)
    Input (N, C_in, H, W) → output (N, C_out, Ho, Wo), stored (C_out, Ho, Wo, N).  The cache holds
    the padded input, stored (C_in, Hp, Wp, N); the patch matrix ā of shape (N, T, C_in·kh·kw + 1),
    T = Ho·Wo, nine times its size for a 3×3 kernel, is built whole only when read (:meth:`a_bar`:
    K-FAC's factors); the forward pass, the weight gradient and forward mode rebuild it block by
    block (:meth:`patch_blocks`),
    which costs about what writing it to memory and reading it back did (docs/benchmarks.md).
    Without padding, an x already stored sample-minor (a previous layer's output) is cached itself,
    as a saved tensor: change it in place between the forward and the backward pass and the
    gradient changes with it.
    """

    kind = "conv"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        bias: bool = True,
        *,
        rng=None,
        dtype=np.float64,
    ):
        k, s, p = _pair(kernel_size, "kernel_size"), _pair(stride, "stride"), _pair(padding, "padding")
        for nm, v in (("in_channels", in_channels), ("out_channels", out_channels), ("kernel_size", k), ("stride", s)):
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"Conv2d: {nm} must be a positive integer, got {v!r}")
        if p < 0:
            raise ValueError(f"Conv2d: padding must be ≥ 0, got {p}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride, self.padding = k, s, p
        self.d_in, self.d_out = self.in_channels * k * k, self.out_channels
        dtype = float_dtype(dtype, f"Conv2d({self.in_channels}→{self.out_channels})")
        self.weight = np.zeros((self.out_channels, self.in_channels, k, k), dtype=dtype)
        self.bias = np.zeros(self.out_channels, dtype=dtype) if bias else None
        self.reset_parameters(rng)

    def __repr__(self) -> str:
        extra = f", stride={self.stride}" if self.stride != 1 else ""
        extra += f", padding={self.padding}" if self.padding else ""
        extra += ", bias=False" if self.bias is None else ""
        return f"Conv2d({self.in_channels}→{self.out_channels}, {self.kernel_size}×{self.kernel_size}{extra})"

    def output_shape(self, in_shape):
        if len(in_shape) != 3 or in_shape[0] != self.in_channels:
            raise ValueError(f"{self!r}: per-sample input shape {tuple(in_shape)}, expected ({self.in_channels}, H, W)")
        c, h, w = in_shape
        k, s, p = self.kernel_size, self.stride, self.padding
        if h + 2 * p < k or w + 2 * p < k:
            raise ValueError(
                f"{self!r}: input of {h}×{w} (padded {h + 2 * p}×{w + 2 * p}) is smaller than the {k}×{k} kernel"
            )
        return (self.out_channels, out_size(h, k, s, p), out_size(w, k, s, p))

    def forward(self, x):
        return self._forward(x, keep=False)[0]

    def forward_cached(self, x):
        return self._forward(x, keep=True)

    def weight_only(self, x):
        """W * x, the convolution without the bias: the input's share of a forward-mode tangent.
        (N, C_in, H, W) → (N, C_out, Ho, Wo), stored (C_out, Ho, Wo, N)."""
        return self._forward(x, keep=False, bias=False)[0]

    def _forward(self, x, keep: bool, bias: bool = True):
        """s = W̄ ā, a block of locations at a time; keep=True caches the padded input, from which ā is rebuilt."""
        if x.ndim != 4:
            raise ValueError(f"{self!r}: input has shape {tuple(x.shape)}, expected (N, {self.in_channels}, H, W)")
        c_out, ho, wo = self.output_shape(x.shape[1:])
        xp, n = get_xp(x, self.weight), x.shape[0]
        x_pad = pad2d(x, self.padding, image_layout_out=True)  # (N, C_in, Hp, Wp), stored (C_in, Hp, Wp, N)
        w = self.wbar() if bias else self.weight.reshape(c_out, self.d_in)  # (C_out, a_dim) or (C_out, K)
        out = xp.empty((c_out, ho, wo, n), dtype=xp.result_type(x.dtype, self.weight.dtype))  # the image layout
        flat = out.reshape(c_out, -1)  # (C_out, T·N)
        for t0, t1, blk in self.patch_blocks(stored(x_pad)):
            xp.matmul(w, blk[: w.shape[1]], out=flat[:, t0 * n : t1 * n])  # W̄ ā for locations t0 … t1 − 1
        cache = {"x_pad": x_pad, "x_shape": x.shape} if keep else None
        return out.transpose(3, 0, 1, 2), cache

    def patch_blocks(self, x_pad):
        """ā a block of locations at a time from the padded input x_pad (C_in, Hp, Wp, N): yields
        (t0, t1, ā of locations t0 … t1 − 1 as (a_dim, (t1 − t0)·N)), columns t0·N … t1·N − 1 of the
        whole (a_dim, T·N), each block written over the previous one in one reused buffer."""
        xp, (_, hp, wp, n), k, s = get_xp(x_pad), x_pad.shape, self.kernel_size, self.stride
        ho, wo = (hp - k) // s + 1, (wp - k) // s + 1
        dtype = xp.result_type(x_pad.dtype, self.weight.dtype)
        blocks, widest = self._location_blocks(ho, wo, n, dtype)
        buf = xp.empty((self.a_dim, widest * n), dtype=dtype)  # reused
        if self.bias is not None:
            buf[-1] = 1.0  # the homogeneous coordinate (docs/math.md §1)
        for rows, cols, t0, t1 in blocks:
            blk = buf[:, : (t1 - t0) * n]
            shape = (self.d_in, rows.stop - rows.start, cols.stop - cols.start, n)
            patches_into(blk[: self.d_in].reshape(shape), x_pad[:, reads(rows, k, s), reads(cols, k, s)], k, k, s)
            yield t0, t1, blk

    def _location_blocks(self, ho: int, wo: int, n: int, dtype):
        """The blocks of output locations for n samples (:func:`~kfac_ref.nn.im2col.location_blocks`, sized by
        a block's patches), and the most locations any block holds (the reused buffer's width over n)."""
        blocks = list(location_blocks(ho, wo, self.a_dim * n * dtype.itemsize))
        return blocks, max(t1 - t0 for *_, t0, t1 in blocks)

    def a_bar(self, cache):
        """ā (N, T, a_dim), a view of the feature-major patches stored (a_dim, T, N): built from the
        cached input the first time it is read (K-FAC's factors, per-sample gradients) and kept in the cache."""
        if "a_bar" not in cache:
            x_pad, k = stored(cache["x_pad"]), self.kernel_size  # (C_in, Hp, Wp, N)
            _, ho, wo = self.output_shape(cache["x_shape"][1:])
            xp, n = get_xp(x_pad), x_pad.shape[-1]
            cols = xp.empty((self.a_dim, ho, wo, n), dtype=xp.result_type(x_pad.dtype, self.weight.dtype))
            patches_into(cols[: self.d_in], x_pad, k, k, self.stride)  # written in place, no block buffer
            if self.bias is not None:
                cols[-1] = 1.0  # the homogeneous coordinate (docs/math.md §1)
            cache["a_bar"] = cols.reshape(self.a_dim, ho * wo, n).transpose(2, 1, 0)
        return cache["a_bar"]

    def patch_product(self, cache, m):
        """m ā: m (R, a_dim) → (R, T·N), columns in (t, n) order; block by block unless ā is already built."""
        if "a_bar" in cache:
            return super().patch_product(cache, m)
        xp, x_pad = get_xp(m), stored(cache["x_pad"])
        n, t = x_pad.shape[-1], math.prod(self.output_shape(cache["x_shape"][1:])[1:])
        out = xp.empty((m.shape[0], t * n), dtype=xp.result_type(m.dtype, x_pad.dtype))
        for t0, t1, blk in self.patch_blocks(x_pad):
            xp.matmul(m, blk, out=out[:, t0 * n : t1 * n])
        return out

    def wbar_grad_sum(self, cache, g):
        """Σ_{n,t} g āᵀ: g (N, T, d_out) → (d_out, a_dim), block by block unless ā is already built.

        Computed as its transpose Σ ā gᵀ (a_dim, d_out): with N·T ≫ a_dim, d_out, OpenBLAS runs this
        orientation 13–20% faster in float32 (docs/benchmarks.md).
        """
        xp, gm = get_xp(g), columns(g)  # gm : (d_out, T·N), a view of a gradient in the image layout
        if "a_bar" in cache:
            return (columns(self.a_bar(cache)) @ gm.T).T
        x_pad = stored(cache["x_pad"])
        n = x_pad.shape[-1]
        total = xp.zeros((self.a_dim, self.d_out), dtype=xp.result_type(g.dtype, x_pad.dtype))
        for t0, t1, blk in self.patch_blocks(x_pad):
            total += blk @ gm[:, t0 * n : t1 * n].T
        return total.T

    def backward(self, cache, grad_out):
        """grad_out : (S, N, C_out, Ho, Wo) → grad_in : (S, N, C_in, H, W), both in the image layout.

        ∂ℓ/∂cols = Wᵀ g for a block of output locations at once (one product), then col2im adds it back.
        """
        xp = get_xp(grad_out, self.weight)
        s_, n, c_out, ho, wo = grad_out.shape
        k, p, m = self.kernel_size, self.padding, s_ * n
        _, c_in, h, w = cache["x_shape"]
        w_t = self.weight.reshape(c_out, self.d_in).T  # (K, C_out), a view
        g = stored(grad_out).reshape(c_out, -1)  # (C_out, Ho·Wo·S·N): a view of a gradient in the image layout
        dx = image_layout(xp, (s_, n, c_in, h + 2 * p, w + 2 * p), grad_out.dtype)
        dx_pad = stored(dx).reshape(c_in, h + 2 * p, w + 2 * p, m)  # (C_in, Hp, Wp, S·N)
        dx_pad[...] = 0.0
        blocks, widest = self._location_blocks(ho, wo, m, grad_out.dtype)
        d_blk = xp.empty((self.d_in, widest * m), dtype=grad_out.dtype)  # reused
        for rows, cols, t0, t1 in blocks:
            d = xp.matmul(w_t, g[:, t0 * m : t1 * m], out=d_blk[:, : (t1 - t0) * m])  # (K, (t1 − t0)·S·N)
            d = d.reshape(self.d_in, rows.stop - rows.start, cols.stop - cols.start, m)
            col2im_add(dx_pad[:, reads(rows, k, self.stride), reads(cols, k, self.stride)], d, k, k, self.stride)
        return dx[..., p : p + h, p : p + w]  # a view: drops the padding

    def g_from_grad(self, grad_out):
        s_, n, c_out, ho, wo = grad_out.shape
        return grad_out.reshape(s_, n, c_out, ho * wo).transpose(0, 1, 3, 2)  # (S, N, T, C_out)
