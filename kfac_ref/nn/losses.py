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
from ..errors import NonFiniteError


def _check_outputs(name, f, *, finite: bool = True):
    """Raise a clear error unless f is a non-empty floating (N, C) array; return (N, C).

    With ``finite``, also refuse NaN/Inf entries (one device→host sync).
    """
    if not hasattr(f, "ndim") or not hasattr(f, "dtype"):
        raise TypeError(f"{name}: model outputs must be an array of shape (N, C), got {type(f).__name__}")
    if f.ndim != 2:
        raise ValueError(f"{name}: model outputs must have shape (N, C), got {tuple(f.shape)}")
    n, c = f.shape
    if n == 0:
        raise ValueError(
            f"{name}: the batch is empty (model outputs of shape {tuple(f.shape)}), expected at least one sample"
        )
    if c == 0:
        raise ValueError(f"{name}: model outputs have no columns (shape {tuple(f.shape)}), expected C ≥ 1")
    xp = get_xp(f)
    if not xp.issubdtype(f.dtype, xp.floating):
        raise TypeError(f"{name}: model outputs must be floating point, got {f.dtype}")
    if finite:
        _refuse_nonfinite(name, int(xp.count_nonzero(~xp.isfinite(f))))
    return n, c


def _refuse_nonfinite(name, bad: int) -> None:
    if bad:
        raise NonFiniteError(
            f"{name}: model outputs contain {bad} NaN/Inf value(s) (the loss likely diverged), expected finite logits"
        )


def _check_real_targets(name, f, y, bad, expected: str) -> None:
    """Real targets of f's shape (or (..., N, C)), floating, with no entry where ``bad(y)``; f finite.

    ``bad`` marks the entries that are not allowed (non-finite, or outside [0, 1]); one device→host sync.
    """
    n, c = _check_outputs(name, f, finite=False)
    if not hasattr(y, "shape") or not hasattr(y, "dtype"):
        raise TypeError(f"{name}: targets must be an array of shape {tuple(f.shape)}, got {type(y).__name__}")
    xp = get_xp(f, y)
    if y.ndim < 2 or tuple(y.shape[-2:]) != (n, c):
        raise ValueError(
            f"{name}: targets have shape {tuple(y.shape)}, expected {tuple(f.shape)} like the model outputs"
        )
    if not xp.issubdtype(y.dtype, xp.floating):
        raise TypeError(f"{name}: targets must be floating point, got {y.dtype}")
    counts = xp.stack([xp.count_nonzero(~xp.isfinite(f)), xp.count_nonzero(bad(y))]).tolist()  # one sync
    _refuse_nonfinite(name, counts[0])
    if counts[1]:
        raise ValueError(f"{name}: targets contain {counts[1]} {expected}")


def _check_num_samples(num_samples):
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise ValueError(f"number of sampled targets must be a positive integer, got {num_samples!r}")


def _check_rng(rng):
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"sampling targets needs an explicit numpy.random.Generator, got {type(rng).__name__}")


class Loss:
    """Common interface; see the module docstring.

    Every public method validates its inputs (shapes, target type and range,
    finite outputs, a non-empty batch) and names what it expected.
    """

    def __call__(self, f, y):
        """The averaged loss h = (1/N) Σ_n ℓ(f_n, y_n), a 0-d array."""
        return self.per_sample(f, y).mean()

    def check_outputs(self, f):
        """Raise a clear error unless f is a non-empty, finite (N, C) array; return (N, C)."""
        return _check_outputs(type(self).__name__, f)

    def check_target(self, f, y) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def per_sample(self, f, y):
        """ℓ_n, validated.  (N,)"""
        self.check_target(f, y)
        return self._per_sample(f, y)

    def grad(self, f, y):
        """∂ℓ_n/∂f_n, validated; targets may carry leading axes (several draws)."""
        self.check_target(f, y)
        return self._grad(f, y)

    def sample(self, f, rng, num_samples: int = 1):
        """Targets drawn from p(y | f_n), validated inputs."""
        self.check_outputs(f)
        _check_num_samples(num_samples)
        _check_rng(rng)
        return self._sample(f, rng, num_samples)

    def sampled_grad(self, f, rng, num_samples: int = 1):
        """(ŷ, ∂ℓ(f_n, ŷ)/∂f_n) for sampled targets: validated once (the sampled ŷ are valid)."""
        y_hat = self.sample(f, rng, num_samples)
        return y_hat, self._grad(f, y_hat)

    def output_fisher(self, f):
        """Λ_n, validated.  (N, C, C)"""
        self.check_outputs(f)
        return self._output_fisher(f)

    def sqrt_output_fisher(self, f):
        """S_n with S_n S_nᵀ = Λ_n, validated.  (N, C, C)"""
        self.check_outputs(f)
        return self._sqrt_output_fisher(f)

    def output_fisher_product(self, f, u):
        """Λ_n u_n for every sample, without forming Λ (N × C × C numbers: 2.5 GB for an
        autoencoder's C = 784 at N = 1,024).  f : (N, C);  u : (..., N, C) → (..., N, C)."""
        self.check_outputs(f)
        return self._output_fisher_product(f, u)

    def _output_fisher_product(self, f, u):
        """The dense product; each loss below has its closed form."""
        return get_xp(f).einsum("ncd,...nd->...nc", self._output_fisher(f), u)

    # the unchecked formulas, one per public method
    def _per_sample(self, f, y):  # pragma: no cover - abstract
        raise NotImplementedError

    def _grad(self, f, y):  # pragma: no cover - abstract
        raise NotImplementedError

    def _sample(self, f, rng, num_samples):  # pragma: no cover - abstract
        raise NotImplementedError

    def _output_fisher(self, f):  # pragma: no cover - abstract
        raise NotImplementedError

    def _sqrt_output_fisher(self, f):  # pragma: no cover - abstract
        raise NotImplementedError


class CrossEntropyLoss(Loss):
    """Softmax cross-entropy: ℓ(f, y) = −log softmax(f)_y = logsumexp(f) − f_y.

    f : (N, C) logits;  y : (N,) integer labels in [0, C) (``grad`` also takes (..., N)).
    Output Fisher: Λ = diag(p) − p pᵀ with p = softmax(f);  S[:, c] = √p_c (e_c − p).
    """

    def __repr__(self) -> str:
        return "CrossEntropyLoss()"

    def check_target(self, f, y) -> None:
        """Raise a clear error unless f is finite (N, C) and y holds integer labels in [0, C).

        y : (N,), or (..., N) (several draws per sample).  One device→host sync.
        """
        n, c = _check_outputs("CrossEntropyLoss", f, finite=False)
        xp = get_xp(f, y if hasattr(y, "dtype") else None)
        if not hasattr(y, "dtype") or not xp.issubdtype(y.dtype, xp.integer):
            raise TypeError(
                f"CrossEntropyLoss: labels must be an integer array of shape ({n},), "
                f"got {getattr(y, 'dtype', type(y).__name__)}"
            )
        if y.ndim < 1 or y.shape[-1] != n:
            raise ValueError(f"CrossEntropyLoss: labels have shape {tuple(y.shape)}, expected ({n},) for {n} samples")
        counts = xp.stack(
            [xp.count_nonzero(~xp.isfinite(f)), xp.count_nonzero((y < 0) | (y >= c))]
        ).tolist()  # one sync for both checks
        _refuse_nonfinite("CrossEntropyLoss", counts[0])
        if counts[1]:
            lo, hi = int(y.min()), int(y.max())
            raise ValueError(
                f"CrossEntropyLoss: labels must lie in [0, {c}) for {c} outputs, "
                f"got {counts[1]} outside, values in [{lo}, {hi}]"
            )

    @staticmethod
    def probs(f):
        """p = softmax(f) along the last axis, computed stably.  (N, C) → (N, C)."""
        xp = get_xp(f)
        z = f - f.max(axis=-1, keepdims=True)
        e = xp.exp(z)
        return e / e.sum(axis=-1, keepdims=True)

    def _per_sample(self, f, y):
        """ℓ_n = logsumexp(f_n) − f_{n, y_n}.  (N,)"""
        xp = get_xp(f)
        if y.ndim != 1:
            raise ValueError(f"CrossEntropyLoss: labels have shape {tuple(y.shape)}, expected ({f.shape[0]},)")
        m = f.max(axis=1)
        lse = m + xp.log(xp.exp(f - m[:, None]).sum(axis=1))
        return lse - xp.take_along_axis(f, y[:, None], axis=1)[:, 0]

    def _grad(self, f, y):
        """∂ℓ_n/∂f_n = p_n − e_{y_n}.  y : (..., N) → (..., N, C) (leading axes broadcast)."""
        xp = get_xp(f)
        p = self.probs(f)
        onehot = (y[..., None] == xp.arange(f.shape[1])).astype(f.dtype)  # (..., N, C)
        return p - onehot

    def _sample(self, f, rng, num_samples):
        """M targets per sample, ŷ ~ categorical(softmax(f_n)).  (M, N) int64.

        Inverse-CDF sampling with uniforms drawn on the CPU from ``rng``.
        """
        xp = get_xp(f)
        n, c = f.shape
        u = xp.asarray(rng.random((num_samples, n, 1)), dtype=f.dtype)  # (M, N, 1)
        cdf = xp.cumsum(self.probs(f), axis=1)  # (N, C)
        y = (u > cdf[None]).sum(axis=-1)  # (M, N)
        return xp.minimum(y, c - 1).astype(xp.int64)  # guard against cdf[-1] < 1 by rounding

    def _output_fisher(self, f):
        """Λ_n = diag(p_n) − p_n p_nᵀ.  (N, C, C)"""
        xp = get_xp(f)
        p = self.probs(f)
        return xp.einsum("nc,cd->ncd", p, xp.eye(f.shape[1], dtype=f.dtype)) - p[:, :, None] * p[:, None, :]

    def _output_fisher_product(self, f, u):
        """Λ_n u_n = p_n ⊙ u_n − p_n (p_nᵀ u_n).  (..., N, C)"""
        p = self.probs(f)
        return p * u - p * (p * u).sum(axis=-1, keepdims=True)

    def _sqrt_output_fisher(self, f):
        """S_n with S_n S_nᵀ = Λ_n; column c is √p_c (e_c − p).  (N, C, C), index [n, :, c]."""
        xp = get_xp(f)
        p = self.probs(f)  # (N, C)
        eye = xp.eye(f.shape[1], dtype=f.dtype)
        return (eye[None] - p[:, :, None]) * xp.sqrt(p)[:, None, :]  # (N, C, C)


class SquaredErrorLoss(Loss):
    """Squared error ℓ(f, y) = ½ ‖f − y‖², the NLL of N(y; f, I) up to a constant.

    f : (N, C);  y : (N, C) real targets (``grad`` also takes (..., N, C)).  Λ = I, S = I.
    """

    def __repr__(self) -> str:
        return "SquaredErrorLoss()"

    def check_target(self, f, y) -> None:
        """Raise a clear error unless f and y are finite, y of f's shape (or (..., N, C)).

        One device→host sync.
        """
        _check_real_targets(
            "SquaredErrorLoss", f, y, lambda y: ~get_xp(y).isfinite(y), "NaN/Inf value(s), expected finite"
        )

    def _per_sample(self, f, y):
        """ℓ_n = ½ ‖f_n − y_n‖².  (N,)"""
        if y.ndim != 2:
            raise ValueError(f"SquaredErrorLoss: targets have shape {tuple(y.shape)}, expected {tuple(f.shape)}")
        r = f - y
        return 0.5 * (r * r).sum(axis=1)

    def _grad(self, f, y):
        """∂ℓ_n/∂f_n = f_n − y_n.  y : (..., N, C) → (..., N, C)."""
        return f - y

    def _sample(self, f, rng, num_samples):
        """ŷ = f + ε, ε ~ N(0, I).  (M, N, C)"""
        xp = get_xp(f)
        eps = xp.asarray(rng.standard_normal((num_samples, *f.shape)), dtype=f.dtype)
        return f[None] + eps

    def _output_fisher(self, f):
        """Λ_n = I.  (N, C, C)"""
        xp = get_xp(f)
        return xp.broadcast_to(xp.eye(f.shape[1], dtype=f.dtype), (f.shape[0], f.shape[1], f.shape[1])).copy()

    def _sqrt_output_fisher(self, f):
        """S_n = I.  (N, C, C)"""
        return self._output_fisher(f)

    def _output_fisher_product(self, f, u):
        """Λ_n u_n = u_n.  (..., N, C)"""
        return u.copy()


class SigmoidCrossEntropyLoss(Loss):
    """Bernoulli cross-entropy on logits: ℓ(f, y) = Σ_c [softplus(f_c) − y_c f_c], p = σ(f).

    The negative log-likelihood of independent Bernoulli outputs with means p = σ(f)
    (PyTorch's ``BCEWithLogitsLoss(reduction="sum")`` per sample); the loss of [MG15] §13's
    deep autoencoders.  f : (N, C) logits;  y : (N, C) targets in [0, 1] (pixel
    intensities are allowed: the loss is then the cross-entropy to them; sampled targets
    are 0/1).  Output Fisher: Λ = diag(p (1 − p)), the Hessian of ℓ in f;
    S = diag(√(p (1 − p))).
    """

    def __repr__(self) -> str:
        return "SigmoidCrossEntropyLoss()"

    def check_target(self, f, y) -> None:
        """Raise a clear error unless f is finite (N, C) and y of f's shape (or (..., N, C)) lies in [0, 1].

        One device→host sync.
        """
        _check_real_targets(
            "SigmoidCrossEntropyLoss",
            f,
            y,
            lambda y: ~((y >= 0) & (y <= 1)),  # NaN fails the range test too
            "value(s) outside [0, 1], expected Bernoulli means",
        )

    @staticmethod
    def probs(f):
        """p = σ(f) = 1 / (1 + e^{−f}), computed without overflow.  (N, C) → (N, C)."""
        xp = get_xp(f)
        e = xp.exp(-xp.abs(f))  # ≤ 1
        return xp.where(f >= 0, 1 / (1 + e), e / (1 + e))

    def _per_sample(self, f, y):
        """ℓ_n = Σ_c softplus(f_nc) − y_nc f_nc, softplus(f) = max(f, 0) + log(1 + e^{−|f|}).  (N,)"""
        xp = get_xp(f)
        if y.ndim != 2:
            raise ValueError(f"SigmoidCrossEntropyLoss: targets have shape {tuple(y.shape)}, expected {tuple(f.shape)}")
        softplus = xp.maximum(f, 0) + xp.log1p(xp.exp(-xp.abs(f)))
        return (softplus - y * f).sum(axis=1)

    def _grad(self, f, y):
        """∂ℓ_n/∂f_n = σ(f_n) − y_n.  y : (..., N, C) → (..., N, C)."""
        return self.probs(f) - y

    def _sample(self, f, rng, num_samples):
        """ŷ ~ Bernoulli(σ(f)), uniforms drawn on the CPU from ``rng``.  (M, N, C) of 0/1 in f's dtype."""
        xp = get_xp(f)
        u = xp.asarray(rng.random((num_samples, *f.shape)), dtype=f.dtype)
        return (u < self.probs(f)[None]).astype(f.dtype)

    def _output_fisher(self, f):
        """Λ_n = diag(p_n (1 − p_n)).  (N, C, C)"""
        xp = get_xp(f)
        p = self.probs(f)
        return xp.einsum("nc,cd->ncd", p * (1 - p), xp.eye(f.shape[1], dtype=f.dtype))

    def _output_fisher_product(self, f, u):
        """Λ_n u_n = p_n (1 − p_n) ⊙ u_n.  (..., N, C)"""
        p = self.probs(f)
        return p * (1 - p) * u

    def _sqrt_output_fisher(self, f):
        """S_n = diag(√(p_n (1 − p_n))).  (N, C, C)"""
        xp = get_xp(f)
        p = self.probs(f)
        return xp.einsum("nc,cd->ncd", xp.sqrt(p * (1 - p)), xp.eye(f.shape[1], dtype=f.dtype))
