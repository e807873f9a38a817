"""Fully-connected layer  s = W a + b  with its hand-written backward.

Index legend: n sample, s seed vector, i input feature, o output unit.

Forward, in homogeneous coordinates (docs/math.md §1, [MG15] §3):
    ā_n = [a_n; 1],   s_n = W̄ ā_n,   W̄ = [W | b]  (d_out, d_in + 1)
Backward, for a seed g_n = ∂ℓ_n/∂s_n (per-sample scale):
    ∂ℓ_n/∂a_n = Wᵀ g_n,   ∂ℓ_n/∂W̄ = g_n ā_nᵀ
"""

from __future__ import annotations

import numpy as np

from ..backend import get_xp
from ..validate import check_positive_int
from .module import ParamLayer, float_dtype


class Linear(ParamLayer):
    """``Linear(in_features, out_features, bias=True)`` in PyTorch's layout.

    weight : (out_features, in_features);  bias : (out_features,)
    Input (N, in_features) → output (N, out_features).  The cache holds the input a, and
    ā of shape (N, 1, in_features + 1) once it is read (T = 1 location, docs/math.md §4).
    """

    kind = "linear"

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, rng=None, dtype=np.float64):
        check_positive_int("Linear", in_features=in_features, out_features=out_features)
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.d_in, self.d_out = self.in_features, self.out_features
        dtype = float_dtype(dtype, f"Linear({self.d_in}→{self.d_out})")
        self.weight = np.zeros((self.d_out, self.d_in), dtype=dtype)
        self.bias = np.zeros(self.d_out, dtype=dtype) if bias else None
        self.reset_parameters(rng)

    def __repr__(self) -> str:
        return f"Linear({self.d_in}→{self.d_out}{'' if self.bias is not None else ', bias=False'})"

    def _check(self, x):
        if x.ndim != 2 or x.shape[1] != self.d_in:
            raise ValueError(f"{self!r}: input has shape {tuple(x.shape)}, expected (N, {self.d_in})")

    def forward(self, x):
        self._check(x)
        out = x @ self.weight.T  # (N, d_out)
        if self.bias is not None:
            out += self.bias
        return out

    def forward_cached(self, x):
        """s = W a + b (one product, as W̄ ā without forming W̄); the cache keeps the input a (N, d_in),
        from which ā = [a; 1] is built when first read (:meth:`a_bar`)."""
        self._check(x)
        return self.forward(x), {"x": x}

    def a_bar(self, cache):
        """ā (N, 1, a_dim) = [a; 1], built from the cached input the first time it is read (K-FAC's
        factors, per-sample gradients) and kept in the cache."""
        if "a_bar" not in cache:
            x = cache["x"]
            xp = get_xp(x, self.weight)
            a_bar = xp.empty((x.shape[0], 1, self.a_dim), dtype=xp.result_type(x.dtype, self.weight.dtype))
            a_bar[:, 0, : self.d_in] = x
            if self.bias is not None:
                a_bar[:, 0, -1] = 1.0  # homogeneous coordinate, last (docs/math.md §1)
            cache["a_bar"] = a_bar
        return cache["a_bar"]

    def wbar_grad_sum(self, cache, g):
        """Σ_n g_n ā_nᵀ = [Σ_n g_n a_nᵀ | Σ_n g_n]: g (N, 1, d_out) → (d_out, a_dim), without building ā."""
        x, gm = cache["x"], g[:, 0, :]  # (N, d_in), (N, d_out)
        xp = get_xp(x, gm)
        total = xp.empty((self.d_out, self.a_dim), dtype=xp.result_type(x.dtype, gm.dtype))
        xp.matmul(gm.T, x, out=total[:, : self.d_in])
        if self.bias is not None:
            total[:, -1] = gm.sum(axis=0)  # the ones column of ā (summed contiguously: a strided out= is 5× slower)
        return total

    def backward(self, cache, grad_out):
        """grad_out : (S, N, d_out) → grad_in : (S, N, d_in), stored as the input was: rows (S, N, d_in),
        or (d_in, S, N) for an input stored (d_in, N) (a Flatten of images: kfac_ref.nn.layout)."""
        x = cache["x"]
        if x.shape[0] > 1 and x.strides[0] < x.strides[1]:  # the input is stored (d_in, N)
            s_, n, d_out = grad_out.shape
            grad_t = self.weight.T @ grad_out.reshape(s_ * n, d_out).T  # (d_in, S·N)
            return grad_t.reshape(self.d_in, s_, n).transpose(1, 2, 0)
        return grad_out @ self.weight  # (S, N, d_in)

    def g_from_grad(self, grad_out):
        return grad_out[:, :, None, :]  # (S, N, 1, d_out)

    def output_shape(self, in_shape):
        if tuple(in_shape) != (self.d_in,):
            raise ValueError(f"{self!r}: per-sample input shape {tuple(in_shape)}, expected ({self.d_in},)")
        return (self.d_out,)
