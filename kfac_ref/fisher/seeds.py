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

import math

import numpy as np

KINDS = ("exact", "mc", "empirical")


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(
            f"unknown Fisher kind {kind!r}: expected one of {KINDS} "
            "(the word 'Fisher' alone is ambiguous, docs/math.md §3)"
        )
    return kind


def check_mc_samples(mc_samples, kind: str | None = None) -> int:
    """M ≥ 1; with ``kind`` given, M ≠ 1 only for kind 'mc' (the other kinds draw nothing)."""
    if isinstance(mc_samples, bool) or not isinstance(mc_samples, (int, np.integer)) or mc_samples < 1:
        raise ValueError(f"mc_samples must be an integer ≥ 1, got {mc_samples!r}")
    if kind is not None and kind != "mc" and mc_samples != 1:
        raise ValueError(
            f"mc_samples={mc_samples} is only used by kind='mc'; kind={kind!r} draws no "
            "targets (leave mc_samples=1 or choose kind='mc')"
        )
    return int(mc_samples)


def check_fisher_args(kind: str, mc_samples, rng) -> int:
    """The one preamble of every Fisher computation: a known kind, M ≥ 1 (≠ 1 only for 'mc'),
    and for 'mc' an explicit generator (a ``TypeError`` otherwise).  Returns M."""
    check_kind(kind)
    mc_samples = check_mc_samples(mc_samples, kind)
    if kind == "mc" and not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"kind='mc' samples targets and needs an explicit rng=numpy.random.Generator, got {type(rng).__name__}"
        )
    return mc_samples


def fisher_seeds(loss_fn, f, y, kind: str, rng=None, mc_samples: int = 1):
    """Seed vectors (S, N, C) for one Fisher kind; F = (1/N) Σ_n Σ_s (J_nᵀ e_{s,n})(…)ᵀ.

    f : (N, C) model outputs;  y : data targets (only read for ``"empirical"``);
    rng : numpy Generator (required for ``"mc"``);  mc_samples : M (``"mc"`` only).
    S = C for "exact", M for "mc", 1 for "empirical".
    """
    mc_samples = check_fisher_args(kind, mc_samples, rng)
    if kind == "exact":
        return loss_fn.sqrt_output_fisher(f).transpose(2, 0, 1)  # (C, N, C): seed c is column c of S_n
    if kind == "mc":
        _, seeds = loss_fn.sampled_grad(f, rng, mc_samples)  # ŷ (M, N) or (M, N, C) → (M, N, C)
        return seeds / math.sqrt(mc_samples)  # a Python float: keeps float32 seeds float32
    if y is None:
        raise ValueError("kind='empirical' uses the data labels: y must be given")
    if getattr(y, "ndim", 0) not in (1, 2) or len(y) != f.shape[0]:
        raise ValueError(
            f"kind='empirical': targets have shape {getattr(y, 'shape', type(y))}, "
            f"expected one per sample ({f.shape[0]})"
        )
    return loss_fn.grad(f, y)[None]  # (1, N, C), validates the targets
