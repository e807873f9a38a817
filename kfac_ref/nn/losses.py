"""Losses as negative log-likelihoods, with what the Fisher needs (docs/math.md §2).

Index legend: m sampled target, n sample, c class / output coordinate.

For each loss ℓ(f, y) = −log p(y | f) this module gives

- the per-sample value ℓ_n and the averaged loss h = (1/N) Σ_n ℓ_n;
- the per-sample output gradient ∂ℓ_n/∂f_n (per-sample scale: *not* divided by N);
- targets sampled from the model's predictive distribution p(y | f_n),
  with an explicit NumPy random generator (used by the Monte-Carlo Fisher);
- the output Fisher Λ(f_n) = E_{y~p}[∇_f ℓ ∇_f ℓᵀ] and a factor S_n with
  S_n S_nᵀ = Λ(f_n), whose C columns, backpropagated, give the exact Fisher.

Random draws are made on the CPU from the generator and moved to the arrays'
device, so that one seed gives the same targets on NumPy and CuPy.
"""

from __future__ import annotations

import numpy as np

from ..backend import get_xp


def _check_outputs(name, f):
    if not hasattr(f, "ndim") or f.ndim != 2:
        raise ValueError(f"{name}: model outputs must have shape (N, C), got {getattr(f, 'shape', type(f))}")


def _check_num_samples(num_samples):
    if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise ValueError(f"number of sampled targets must be a positive integer, got {num_samples!r}")


def _check_rng(rng):
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"sampling targets needs an explicit numpy.random.Generator, got {type(rng).__name__}")


class Loss:
    """Common interface; see the module docstring."""

    def __call__(self, f, y):
        """The averaged loss h = (1/N) Σ_n ℓ(f_n, y_n), a 0-d array."""
        return self.per_sample(f, y).mean()

    def per_sample(self, f, y):  # pragma: no cover - abstract
        raise NotImplementedError

    def grad(self, f, y):  # pragma: no cover - abstract
        raise NotImplementedError


class CrossEntropyLoss(Loss):
    """Softmax cross-entropy: ℓ(f, y) = −log softmax(f)_y = logsumexp(f) − f_y.

    f : (N, C) logits;  y : (N,) integer labels in [0, C).
    Output Fisher: Λ = diag(p) − p pᵀ with p = softmax(f);  S[:, c] = √p_c (e_c − p).
    """

    def __repr__(self) -> str:
        return "CrossEntropyLoss()"

    def check_target(self, f, y) -> None:
        """Raise a clear error unless y holds N integer labels in [0, C)."""
        _check_outputs("CrossEntropyLoss", f)
        n, c = f.shape
        xp = get_xp(f)
        if not hasattr(y, "dtype") or not xp.issubdtype(y.dtype, xp.integer):
            raise TypeError(f"CrossEntropyLoss: labels must be an integer array of shape ({n},), "
                            f"got {getattr(y, 'dtype', type(y).__name__)}")
        if y.shape != (n,):
            raise ValueError(f"CrossEntropyLoss: labels have shape {tuple(y.shape)}, expected ({n},)")
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= c:
            raise ValueError(f"CrossEntropyLoss: labels must lie in [0, {c}) for {c} outputs, "
                             f"got values in [{lo}, {hi}]")

    @staticmethod
    def probs(f):
        """p = softmax(f) along the last axis, computed stably.  (N, C) → (N, C)."""
        xp = get_xp(f)
        z = f - f.max(axis=-1, keepdims=True)
        e = xp.exp(z)
        return e / e.sum(axis=-1, keepdims=True)

    def per_sample(self, f, y):
        """ℓ_n = logsumexp(f_n) − f_{n, y_n}.  (N,)"""
        self.check_target(f, y)
        xp = get_xp(f)
        m = f.max(axis=1)
        lse = m + xp.log(xp.exp(f - m[:, None]).sum(axis=1))
        return lse - xp.take_along_axis(f, y[:, None], axis=1)[:, 0]

    def grad(self, f, y):
        """∂ℓ_n/∂f_n = p_n − e_{y_n}.  y : (..., N) → (..., N, C) (leading axes broadcast)."""
        xp = get_xp(f)
        p = self.probs(f)
        onehot = (y[..., None] == xp.arange(f.shape[1])).astype(f.dtype)  # (..., N, C)
        return p - onehot

    def sample(self, f, rng, num_samples: int = 1):
        """M targets per sample, ŷ ~ categorical(softmax(f_n)).  (M, N) int64.

        Inverse-CDF sampling with uniforms drawn on the CPU from ``rng``.
        """
        _check_outputs("CrossEntropyLoss", f)
        _check_num_samples(num_samples)
        _check_rng(rng)
        xp = get_xp(f)
        n, c = f.shape
        u = xp.asarray(rng.random((num_samples, n, 1)))  # (M, N, 1)
        cdf = xp.cumsum(self.probs(f), axis=1)  # (N, C)
        y = (u > cdf[None]).sum(axis=-1)  # (M, N)
        return xp.minimum(y, c - 1).astype(xp.int64)  # guard against cdf[-1] < 1 by rounding

    def output_fisher(self, f):
        """Λ_n = diag(p_n) − p_n p_nᵀ.  (N, C, C)"""
        xp = get_xp(f)
        p = self.probs(f)
        return xp.einsum("nc,cd->ncd", p, xp.eye(f.shape[1], dtype=f.dtype)) - p[:, :, None] * p[:, None, :]

    def sqrt_output_fisher(self, f):
        """S_n with S_n S_nᵀ = Λ_n; column c is √p_c (e_c − p).  (N, C, C), index [n, :, c]."""
        xp = get_xp(f)
        p = self.probs(f)  # (N, C)
        eye = xp.eye(f.shape[1], dtype=f.dtype)
        return (eye[None] - p[:, :, None]) * xp.sqrt(p)[:, None, :]  # (N, C, C)


class SquaredErrorLoss(Loss):
    """Squared error ℓ(f, y) = ½ ‖f − y‖², the NLL of N(y; f, I) up to a constant.

    f : (N, C);  y : (N, C) real targets.  Λ = I, S = I.
    """

    def __repr__(self) -> str:
        return "SquaredErrorLoss()"

    def check_target(self, f, y) -> None:
        _check_outputs("SquaredErrorLoss", f)
        xp = get_xp(f)
        if not hasattr(y, "shape") or tuple(y.shape) != tuple(f.shape):
            raise ValueError(f"SquaredErrorLoss: targets have shape {getattr(y, 'shape', type(y))}, "
                             f"expected {tuple(f.shape)} like the model outputs")
        if not xp.issubdtype(y.dtype, xp.floating):
            raise TypeError(f"SquaredErrorLoss: targets must be floating point, got {y.dtype}")
        bad = int((~xp.isfinite(y)).sum())
        if bad:
            raise ValueError(f"SquaredErrorLoss: targets contain {bad} NaN/Inf value(s)")

    def per_sample(self, f, y):
        """ℓ_n = ½ ‖f_n − y_n‖².  (N,)"""
        self.check_target(f, y)
        r = f - y
        return 0.5 * (r * r).sum(axis=1)

    def grad(self, f, y):
        """∂ℓ_n/∂f_n = f_n − y_n.  y : (..., N, C) → (..., N, C)."""
        return f - y

    def sample(self, f, rng, num_samples: int = 1):
        """ŷ = f + ε, ε ~ N(0, I).  (M, N, C)"""
        _check_outputs("SquaredErrorLoss", f)
        _check_num_samples(num_samples)
        _check_rng(rng)
        xp = get_xp(f)
        eps = xp.asarray(rng.standard_normal((num_samples, *f.shape)), dtype=f.dtype)
        return f[None] + eps

    def output_fisher(self, f):
        """Λ_n = I.  (N, C, C)"""
        xp = get_xp(f)
        return xp.broadcast_to(xp.eye(f.shape[1], dtype=f.dtype), (f.shape[0], f.shape[1], f.shape[1])).copy()

    def sqrt_output_fisher(self, f):
        """S_n = I.  (N, C, C)"""
        return self.output_fisher(f)
