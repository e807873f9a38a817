"""2-D convolution as im2col + one matrix product, with its hand-written backward.

Index legend: n sample, s seed vector, t output location (T = Ho·Wo),
k patch feature (K = C_in·kh·kw, plus 1 for the bias), o output channel.

Forward ([GM16] §2):   s_{n,t} = W̄ ā_{n,t},  ā_{n,t} = [patch_{n,t}; 1],  W̄ = [W.reshape(C_out, K) | b]

Backward for seeds g_{n,t} = ∂ℓ_n/∂s_{n,t} (per-sample scale):

    ∂ℓ_n/∂patch_{n,t} = W̄[:, :K]ᵀ g_{n,t}  → col2im → ∂ℓ_n/∂x_n
    ∂ℓ_n/∂W̄ = Σ_t g_{n,t} ā_{n,t}ᵀ   (weight sharing: a sum over locations, docs/math.md §5)
"""

from __future__ import annotations

import numpy as np

from .im2col import col2im, im2col, out_size
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
    patch matrix ā of shape (N, T, C_in·kh·kw + 1), T = Ho·Wo.
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

    def forward_cached(self, x):
        if x.ndim != 4:
            raise ValueError(f"{self!r}: input has shape {tuple(x.shape)}, expected (N, {self.in_channels}, H, W)")
        c_out, ho, wo = self.output_shape(x.shape[1:])
        n = x.shape[0]
        a_bar = im2col(
            x, self.kernel_size, self.kernel_size, self.stride, self.padding, ones=self.bias is not None
        )  # (N, T, a_dim)
        # s_{n,t} = W̄ ā_{n,t} for all t at once: W̄ ā_nᵀ, one (C_out, T) product per
        # sample, which is already the (C_out, Ho, Wo) layout of the output.  (The
        # single product ā W̄ᵀ of shape (N·T, C_out) would need a transpose, and the
        # non-contiguous result would slow down every element-wise layer after it.)
        s = self.wbar() @ a_bar.transpose(0, 2, 1)  # (N, C_out, T)
        out = s.reshape(n, c_out, ho, wo)  # (N, C_out, Ho, Wo)
        return out, {"a_bar": a_bar, "x_shape": x.shape}

    def backward(self, cache, grad_out):
        """grad_out : (S, N, C_out, Ho, Wo) → grad_in : (S, N, C_in, H, W)."""
        s_, n, c_out, ho, wo = grad_out.shape
        k, c_in = self.kernel_size, self.in_channels
        w = self.weight.reshape(c_out, self.d_in)  # (C_out, K)
        g = grad_out.reshape(s_ * n, c_out, ho * wo)  # (S·N, C_out, T)
        # ∂ℓ/∂patch_t = Wᵀ g_t for all t at once: Wᵀ g, one (K, T) product per sample.
        cols = (w.T @ g).reshape(s_, n, c_in, k, k, ho, wo)  # (S, N, C, kh, kw, Ho, Wo)
        # col2im takes (..., Ho, Wo, C, kh, kw); the transpose is a view, and in this
        # memory order each kernel offset's slice (..., C, Ho, Wo) that col2im adds
        # back is contiguous along Wo.
        cols = cols.transpose(0, 1, 5, 6, 2, 3, 4)  # (S, N, Ho, Wo, C, kh, kw)
        return col2im(cols, cache["x_shape"], k, k, self.stride, self.padding)

    def g_from_grad(self, grad_out):
        s_, n, c_out, ho, wo = grad_out.shape
        return grad_out.reshape(s_, n, c_out, ho * wo).transpose(0, 1, 3, 2)  # (S, N, T, C_out)
