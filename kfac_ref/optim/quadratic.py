"""Step-size rules from quadratic models of the loss ([MG15] §6–7; KL-clipping).

With F the *exact* mini-batch Fisher, λ the damping and η_wd the weight decay,

    M(δ) = ½ δᵀ (F + (λ + η_wd) I) δ + ∇hᵀ δ                     (docs/math.md §6)

- rescaling and momentum [MG15 §7]: δ = α Δ + μ δ₀ with (α, μ) minimising M,
  a 2×2 linear system whose entries vᵀ F w come from forward mode
  (:func:`kfac_ref.jvp.fisher_gram_jvp`);
- Levenberg–Marquardt [MG15 §6.5]: ρ = (h(θ + δ) − h(θ)) / (M(δ) − M(0));
  ρ > 3/4 → λ ← ω₁ λ,  ρ < 1/4 → λ ← λ / ω₁,  ω₁ = (19/20)^{T₁};
- KL-clipping ([BGM17] Ba, Grosse & Martens 2017, distributed K-FAC; the default of the PyTorch K-FAC
  implementations): η² ∇hᵀ F̃⁻¹ ∇h = δᵀF̃δ for the un-accumulated step δ = −η F̃⁻¹∇h,
  twice its second-order KL when F̃ is the Fisher; ν = min(1, √(κ / (η² ∇hᵀ F̃⁻¹ ∇h)))
  bounds that form by κ before momentum (with momentum μ the step's form can reach κ/(1 − μ)²), so a
  poor curvature estimate (a tiny eigenvalue, a stale inverse) cannot make the
  step arbitrarily long whatever η is.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import NonFiniteError


def rescale_coefficients(fisher_gram, dot_gram, grad_dots, damping: float):
    """(α, μ) minimising M(α Δ + μ δ₀), and the model change M(δ) − M(0).

    fisher_gram : (k, k)  [vᵢᵀ F vⱼ] for v = (Δ,) or (Δ, δ₀)
    dot_gram    : (k, k)  [vᵢᵀ vⱼ]
    grad_dots   : (k,)    [∇hᵀ vᵢ]
    damping     : λ + η_wd
    Returns (coefficients as k Python floats, model change).  With k = 1:
    α = −∇hᵀΔ / (Δᵀ (F + λ I) Δ)  (docs/math.md §6).
    """
    q = np.asarray(fisher_gram, dtype=np.float64) + damping * np.asarray(dot_gram, dtype=np.float64)
    b = np.asarray(grad_dots, dtype=np.float64)
    coef = -np.linalg.lstsq(q, b, rcond=None)[0]  # lstsq: δ₀ ∥ Δ makes q singular
    change = float(0.5 * coef @ q @ coef + b @ coef)
    return [float(c) for c in coef], change  # Python floats: they keep a float32 step float32


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


def kl_clip_factor(lr: float, kappa: float, nat_dot_grad: float) -> float:
    """ν = min(1, √κ / (η √q)), q = ∇hᵀ F̃⁻¹ ∇h: bounds η² ν² q (twice the un-accumulated step's quadratic KL) by κ.

    nat_dot_grad : q (F̃ the damped curvature the step was preconditioned with).
    Computed as (√κ / √q) / η, never forming η² q, so that the bound holds for any finite η
    (η² q overflows to ∞ above η ≈ 10¹⁵⁴, which made ν = 0 and froze θ).  A non-positive q
    (a zero gradient) leaves the step as it is.  Raises :class:`~kfac_ref.errors.NonFiniteError`
    when q is not finite, and ValueError when ν underflows to 0 (η too large to represent the
    clipped step ν η F̃⁻¹∇h).
    """
    if not math.isfinite(nat_dot_grad):
        raise NonFiniteError(
            f"KL-clipping: ∇hᵀF̃⁻¹∇h = {nat_dot_grad} is not finite (the gradient or the curvature overflowed)"
        )
    if nat_dot_grad <= 0:
        return 1.0
    nu = math.sqrt(kappa) / math.sqrt(nat_dot_grad) / lr
    if nu == 0.0:
        raise ValueError(
            f"KL-clipping: lr (η) = {lr:g} is too large: the clipped step's factor ν = √κ / (η √q) "
            f"underflows to 0 (κ = {kappa:g}, q = ∇hᵀF̃⁻¹∇h = {nat_dot_grad:g}); use a smaller lr"
        )
    return min(1.0, nu)


def scaled_change(change: float, coef, grad_dots, lr: float) -> float:
    """M(η δ) − M(0) from M(δ) − M(0) = q/2 + b, b = ∇hᵀδ: M is quadratic, so η² q/2 + η b."""
    b = float(sum(c * g for c, g in zip(coef, grad_dots)))
    return lr * lr * (change - b) + lr * b
