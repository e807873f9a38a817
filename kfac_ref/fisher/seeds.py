"""Which vectors are backpropagated: the only thing that tells the Fisher kinds apart.

For a batch with outputs f_n, each kind picks S seed vectors e_{s,n} = ∂ℓ/∂f_n
per sample such that, with u_{s,n} = J_nᵀ e_{s,n} the backpropagated gradient,

    F = (1/N) Σ_n Σ_s u_{s,n} u_{s,n}ᵀ                                 (docs/math.md §3)

- ``"exact"``:     the C columns of S_n, S_n S_nᵀ = Λ(f_n)  → (1/N) Σ_n J_nᵀ Λ_n J_n  [A98]
- ``"mc"``:        ∇_f ℓ(f_n, ŷ_{m,n}) / √M for M targets ŷ ~ p(y | f_n)  (unbiased for F) [MG15]
- ``"empirical"``: ∇_f ℓ(f_n, y_n) with the data labels (not an estimate of F) [KBH19]

The 1/√M folds the Monte-Carlo average into the seeds, so every kind is
reduced by the same (1/N) Σ_n Σ_s.
"""

from __future__ import annotations

import numpy as np

KINDS = ("exact", "mc", "empirical")


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown Fisher kind {kind!r}: expected one of {KINDS} "
                         "(the word 'Fisher' alone is ambiguous, docs/math.md §3)")
    return kind


def check_mc_samples(mc_samples) -> int:
    if isinstance(mc_samples, bool) or not isinstance(mc_samples, (int, np.integer)) or mc_samples < 1:
        raise ValueError(f"mc_samples must be an integer ≥ 1, got {mc_samples!r}")
    return int(mc_samples)


def fisher_seeds(loss_fn, f, y, kind: str, rng=None, mc_samples: int = 1):
    """Seed vectors (S, N, C) for one Fisher kind; F = (1/N) Σ_n Σ_s (J_nᵀ e_{s,n})(…)ᵀ.

    f : (N, C) model outputs;  y : data targets (only read for ``"empirical"``);
    rng : numpy Generator (required for ``"mc"``);  mc_samples : M (``"mc"`` only).
    S = C for "exact", M for "mc", 1 for "empirical".
    """
    check_kind(kind)
    mc_samples = check_mc_samples(mc_samples)
    if kind == "exact":
        return loss_fn.sqrt_output_fisher(f).transpose(2, 0, 1)  # (C, N, C): seed c is column c of S_n
    if kind == "mc":
        if not isinstance(rng, np.random.Generator):
            raise ValueError("kind='mc' samples targets and needs an explicit rng=numpy.random.Generator")
        y_hat = loss_fn.sample(f, rng, mc_samples)  # (M, N) or (M, N, C)
        return loss_fn.grad(f, y_hat) / np.sqrt(mc_samples)  # (M, N, C)
    if y is None:
        raise ValueError("kind='empirical' uses the data labels: y must be given")
    loss_fn.per_sample(f, y)  # validates the targets
    return loss_fn.grad(f, y)[None]  # (1, N, C)
