"""The flat parameter vector θ and its per-layer pieces (docs/math.md §1).

θ lists the Linear/Conv2d layers in network order; within a layer the weight
(raveled in C order, PyTorch's layout) and then the bias.  Every dense matrix in
kfac_ref — each Fisher, its block-diagonal and K-FAC views — is indexed this way.

K-FAC works instead with the layer matrix W̄ = [W | b] of shape (d_out, a_dim) and
its row-major vec: vec(W̄)[o·a_dim + i] = W̄[o, i].  :func:`wbar_to_flat`,
:func:`flat_to_wbar` and :func:`wbar_order` convert between the two orders.
"""

from __future__ import annotations

import numpy as np

from .backend import get_xp
from .errors import NonFiniteError


def _param_layers(model):
    layers = model.param_layers()
    if not layers:
        raise ValueError("the model has no Linear or Conv2d layer, so no parameters")
    return layers


def layer_slices(model) -> list[slice]:
    """The slice of θ that belongs to each Linear/Conv2d layer, in network order."""
    return slices_for(_param_layers(model))


def slices_for(layers) -> list[slice]:
    """Consecutive slices of θ for parameter layers given in network order."""
    out, start = [], 0
    for layer in layers:
        out.append(slice(start, start + layer.num_params))
        start += layer.num_params
    return out


def get_flat_params(model):
    """θ, a new array of shape (P,) in docs/math.md §1 order."""
    layers = _param_layers(model)
    xp = get_xp(layers[0].weight)
    return xp.concatenate([value.ravel() for layer in layers for _, value in layer.params()])


def set_flat_params(model, theta) -> None:
    """Write θ (P,) into the model's layers (copies; θ is not kept)."""
    layers = _param_layers(model)
    p = sum(layer.num_params for layer in layers)
    if getattr(theta, "shape", None) != (p,):
        raise ValueError(
            f"set_flat_params: theta has shape {getattr(theta, 'shape', type(theta))}, expected ({p},) for this model"
        )
    xp = get_xp(layers[0].weight)
    theta = xp.asarray(theta)
    bad = int(xp.count_nonzero(~xp.isfinite(theta)))
    if bad:  # e.g. an update that overflowed; the model is left as it was
        raise NonFiniteError(
            f"set_flat_params: θ would contain {bad} NaN/Inf value(s) "
            "(the update overflowed: the run diverged); the parameters were not changed"
        )
    start = 0
    for layer in layers:
        for name, value in layer.params():
            stop = start + value.size
            setattr(layer, name, theta[start:stop].reshape(value.shape).astype(value.dtype, copy=True))
            start = stop


def wbar_to_flat(layer, m, out=None):
    """(..., d_out, a_dim) layer matrices → (..., p_layer) in θ's order (weight, then bias).

    With ``out`` (a contiguous (p_layer,) array, e.g. a slice of θ's gradient) one (d_out, a_dim)
    matrix is written into it: one copy, no temporaries.
    """
    if out is not None:
        nw = layer.d_out * layer.d_in
        out[:nw].reshape(layer.d_out, layer.d_in)[...] = m[:, : layer.d_in]
        if layer.bias is not None:
            out[nw:] = m[:, layer.d_in]
        return out
    xp = get_xp(m)
    lead = m.shape[:-2]
    w = m[..., : layer.d_in].reshape(*lead, layer.d_out * layer.d_in)
    if layer.bias is None:
        return w
    return xp.concatenate([w, m[..., layer.d_in]], axis=-1)


def flat_to_wbar(layer, v):
    """(..., p_layer) in θ's order → (..., d_out, a_dim) layer matrices W̄ = [W | b]."""
    xp = get_xp(v)
    lead = v.shape[:-1]
    nw = layer.d_out * layer.d_in
    w = v[..., :nw].reshape(*lead, layer.d_out, layer.d_in)
    if layer.bias is None:
        return w
    return xp.concatenate([w, v[..., nw:, None]], axis=-1)


def wbar_order(layer) -> np.ndarray:
    """perm (p_layer,) with vec(W̄) = θ_layer[perm], vec row-major (docs/math.md §1).

    So a matrix M_flat in θ's order becomes M_flat[perm][:, perm] in vec(W̄)
    order (the order of the Kronecker product G ⊗ A), and back with argsort(perm).
    """
    idx = np.arange(layer.num_params)
    return np.asarray(flat_to_wbar(layer, idx)).reshape(-1)
