"""Brute-force references built from per-sample *label* gradients (kfac_ref.grads.per_sample_grads).

They share no code with the Fisher seeds or the Kronecker-factor functions: every
Fisher kind is written as a weighted sum over label gradients,

    F = (1/N) Σ_n Σ_c w_{n,c} ∇ℓ(x_n, y_c) ∇ℓ(x_n, y_c)ᵀ

- exact, cross-entropy: labels c = 1 … C, weights p_{n,c}                     (docs/math.md §3)
- exact, squared error: targets y_c = f(x_n) − e_c (so ∇_f ℓ = e_c), weights 1
- empirical: the data labels, weight 1.
"""

from __future__ import annotations

import numpy as np

from kfac_ref import nn
from kfac_ref.grads import per_sample_grads
from kfac_ref.params import layer_slices, wbar_order


def weighted_label_grads(model, loss, x, y, kind):
    """[(U (N, P), w (N,))] with F = (1/N) Σ_terms Σ_n w_n u_n u_nᵀ."""
    f = model(x)
    if kind == "empirical":
        return [(per_sample_grads(model, loss, x, y), np.ones(x.shape[0]))]
    if isinstance(loss, nn.CrossEntropyLoss):
        p = loss.probs(f)  # (N, C)
        return [(per_sample_grads(model, loss, x, np.full(x.shape[0], c)), p[:, c]) for c in range(f.shape[1])]
    eye = np.eye(f.shape[1])
    return [(per_sample_grads(model, loss, x, f - eye[c]), np.ones(x.shape[0])) for c in range(f.shape[1])]


def fisher_from_grads(terms):
    """(1/N) Σ Σ w u uᵀ.  (P, P)"""
    n = terms[0][0].shape[0]
    return sum((u * w[:, None]).T @ u for u, w in terms) / n


def layer_inputs(model, x):
    """ā_l = [a_l; 1] (N, d_in + 1) for every Linear layer, by a plain forward pass (MLPs)."""
    out = []
    for layer in model.layers:
        if isinstance(layer, nn.Linear):
            out.append(np.hstack([x, np.ones((x.shape[0], 1))]) if layer.bias is not None else x)
        x = layer(x)
    return out


def bias_grads(model, u):
    """g_l (N, d_out) per layer: the bias gradient of a per-sample gradient (N, P) — ā's last entry is 1."""
    return [u[:, sl][:, layer.d_out * layer.d_in :] for layer, sl in zip(model.param_layers(), layer_slices(model))]


def to_wbar_order(model, m):
    """A (P, P) matrix in θ's order reindexed to the concatenated row-major vec(W̄_l) order."""
    perm = np.concatenate(
        [np.asarray(wbar_order(layer)) + sl.start for layer, sl in zip(model.param_layers(), layer_slices(model))]
    )
    return m[np.ix_(perm, perm)]


def from_wbar_order(model, m):
    perm = np.concatenate(
        [np.asarray(wbar_order(layer)) + sl.start for layer, sl in zip(model.param_layers(), layer_slices(model))]
    )
    out = np.empty_like(m)
    out[np.ix_(perm, perm)] = m
    return out
