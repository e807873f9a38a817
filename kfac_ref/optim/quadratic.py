"""The exact quadratic model of [MG15] §6–7: step rescaling, momentum, and the LM rule.

With F the *exact* mini-batch Fisher, λ the damping and η_wd the weight decay,

    M(δ) = ½ δᵀ (F + (λ + η_wd) I) δ + ∇hᵀ δ                     (MATH.md §6)

- rescaling and momentum [MG15 §7]: δ = α Δ + μ δ₀ with (α, μ) minimising M,
  a 2×2 linear system whose entries vᵀ F w come from
  :func:`kfac_ref.fisher.products.quadratic_form_from_stats`;
- Levenberg–Marquardt [MG15 §6.5]: ρ = (h(θ + δ) − h(θ)) / (M(δ) − M(0));
  ρ > 3/4 → λ ← ω₁ λ,  ρ < 1/4 → λ ← λ / ω₁,  ω₁ = (19/20)^{T₁}.
"""

from __future__ import annotations

import numpy as np


def rescale_coefficients(fisher_gram, dot_gram, grad_dots, damping: float):
    """(α, μ) minimising M(α Δ + μ δ₀), and the model change M(δ) − M(0).

    fisher_gram : (k, k)  [vᵢᵀ F vⱼ] for v = (Δ,) or (Δ, δ₀)
    dot_gram    : (k, k)  [vᵢᵀ vⱼ]
    grad_dots   : (k,)    [∇hᵀ vᵢ]
    damping     : λ + η_wd
    Returns (coefficients (k,), model change).  With k = 1:
    α = −∇hᵀΔ / (Δᵀ (F + λ I) Δ)  (MATH.md §6).
    """
    q = np.asarray(fisher_gram, dtype=np.float64) + damping * np.asarray(dot_gram, dtype=np.float64)
    b = np.asarray(grad_dots, dtype=np.float64)
    coef = -np.linalg.lstsq(q, b, rcond=None)[0]  # lstsq: δ₀ ∥ Δ makes q singular
    return coef, float(0.5 * coef @ q @ coef + b @ coef)


def model_change(delta_f_delta: float, delta_dot_delta: float, grad_dot_delta: float, damping: float) -> float:
    """M(δ) − M(0) = ½ δᵀ(F + λI)δ + ∇hᵀδ."""
    return 0.5 * (delta_f_delta + damping * delta_dot_delta) + grad_dot_delta


def lm_ratio(h_old: float, h_new: float, change: float) -> float:
    """ρ = (h(θ + δ) − h(θ)) / (M(δ) − M(0)): how well the model predicted the change."""
    if change >= 0:  # the model predicts no decrease: treat the step as untrustworthy
        return -np.inf
    return (h_new - h_old) / change


def lm_update(damping: float, rho: float, omega: float) -> float:
    """The Levenberg–Marquardt rule: shrink λ when ρ > 3/4, grow it when ρ < 1/4."""
    if rho > 0.75:
        return damping * omega
    if rho < 0.25:
        return damping / omega
    return damping
