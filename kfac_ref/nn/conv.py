"""2-D convolution as im2col + matrix products over blocks of samples, with its hand-written backward.

Index legend: n sample, s seed vector, t output location (T = Ho·Wo),
k patch feature (K = C_in·kh·kw, plus 1 for the bias), o output channel.

Forward ([GM16] §2):   s_{n,t} = W̄ ā_{n,t},  ā_{n,t} = [patch_{n,t}; 1],  W̄ = [W.reshape(C_out, K) | b]

Backward for seeds g_{n,t} = ∂ℓ_n/∂s_{n,t} (per-sample scale):

    ∂ℓ_n/∂patch_{n,t} = W̄[:, :K]ᵀ g_{n,t}  → col2im → ∂ℓ_n/∂x_n
    ∂ℓ_n/∂W̄ = Σ_t g_{n,t} ā_{n,t}ᵀ   (weight sharing: a sum over locations, docs/math.md §5)

Fast formulation: the patches are stored feature-major, cols = ā as (a_dim, N, T)
(:mod:`kfac_ref.nn.im2col`), and built block by block (blocks of samples small enough to stay
in the processor's cache): forward, each sample's product W̄ · cols[:, n] (C_out × T) lands in
the output's own layout; backward, a block is one (K, C_out) × (C_out, B·T) product, large
enough for a threaded BLAS, and col2im k² strided adds.
"""

from __future__ import annotations

import numpy as np

from ..backend import get_xp
from .im2col import block_size, col2im_into, out_size, pad2d, patches_into
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
    Input (N, C_in, H, W) → output (N, C_out, Ho, Wo).  The cache holds the
    patch matrix ā of shape (N, T, C_in·kh·kw + 1), T = Ho·Wo (a view of the
    feature-major patches; :meth:`forward` without a cache never keeps them whole).
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

    def _forward(self, x, keep: bool):
        """s = W̄ ā for each block of samples; keep=True keeps the whole patch matrix (for ∂ℓ/∂W̄ and K-FAC)."""
        if x.ndim != 4:
            raise ValueError(f"{self!r}: input has shape {tuple(x.shape)}, expected (N, {self.in_channels}, H, W)")
        c_out, ho, wo = self.output_shape(x.shape[1:])
        xp, n, t, a_dim = get_xp(x, self.weight), x.shape[0], ho * wo, self.a_dim
        dtype = xp.result_type(x.dtype, self.weight.dtype)
        x_pad, wbar = pad2d(x, self.padding), self.wbar()  # (N, C_in, Hp, Wp), (C_out, a_dim)
        block = block_size(n, a_dim * t * dtype.itemsize)
        cols = xp.empty((a_dim, n if keep else block, t), dtype=dtype)  # ā feature-major: ā[n, t] = cols[:, n, t]
        if self.bias is not None:
            cols[-1] = 1.0  # the homogeneous coordinate (docs/math.md §1)
        out = xp.empty((n, c_out, t), dtype=dtype)
        for n0 in range(0, n, block):
            b = min(block, n - n0)
            blk = cols[:, n0 : n0 + b] if keep else cols[:, :b]  # (a_dim, B, T)
            patches_into(blk[: self.d_in], x_pad[n0 : n0 + b], self.kernel_size, self.kernel_size, self.stride)
            xp.matmul(wbar, blk.transpose(1, 0, 2), out=out[n0 : n0 + b])  # W̄ ā_nᵀ per sample: (B, C_out, T) in place
        cache = {"a_bar": cols.transpose(1, 2, 0), "x_shape": x.shape} if keep else None  # ā : (N, T, a_dim)
        return out.reshape(n, c_out, ho, wo), cache

    def backward(self, cache, grad_out):
        """grad_out : (S, N, C_out, Ho, Wo) → grad_in : (S, N, C_in, H, W).

        ∂ℓ/∂cols = Wᵀ g for a block of samples at once (one product), then col2im adds it back.
        """
        xp = get_xp(grad_out, self.weight)
        s_, n, c_out, ho, wo = grad_out.shape
        k, p, m, t = self.kernel_size, self.padding, s_ * n, ho * wo
        _, c_in, h, w = cache["x_shape"]
        w_t = self.weight.reshape(c_out, self.d_in).T  # (K, C_out), a view
        g = grad_out.reshape(m, c_out, t)  # (S·N, C_out, T)
        dx = xp.empty((m, c_in, h, w), dtype=grad_out.dtype)  # (S·N, C_in, H, W)
        block = block_size(m, self.a_dim * t * grad_out.dtype.itemsize)
        g_blk = xp.empty((c_out, block, t), dtype=grad_out.dtype)  # reused buffers
        d_blk = xp.empty(self.d_in * block * t, dtype=grad_out.dtype)
        dx_blk = xp.empty((c_in, block, h + 2 * p, w + 2 * p), dtype=grad_out.dtype)
        for n0 in range(0, m, block):
            b = min(block, m - n0)
            xp.copyto(g_blk[:, :b], g[n0 : n0 + b].transpose(1, 0, 2))  # (C_out, B, T): runs of T values
            d = xp.matmul(w_t, g_blk[:, :b].reshape(c_out, b * t), out=d_blk[: self.d_in * b * t].reshape(-1, b * t))
            col2im_into(dx_blk[:, :b], d.reshape(self.d_in, b, t), k, k, self.stride)  # (C_in, B, Hp, Wp)
            dx[n0 : n0 + b] = dx_blk[:, :b, p : p + h, p : p + w].transpose(1, 0, 2, 3)
        return dx.reshape(s_, n, c_in, h, w)

    def g_from_grad(self, grad_out):
        s_, n, c_out, ho, wo = grad_out.shape
        return grad_out.reshape(s_, n, c_out, ho * wo).transpose(0, 1, 3, 2)  # (S, N, T, C_out)
