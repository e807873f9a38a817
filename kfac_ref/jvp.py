"""Forward mode: Jacobian-vector products J v through a traced forward pass.

For a direction v in parameter space (θ's order) the output tangent ḟ_n = J_n v
(J_n = ∂f(x_n)/∂θ) is carried through the layers in the order of the forward
pass, reading the caches a :func:`kfac_ref.backprop.forward` left:

    Linear / Conv2d   ṡ = W ȧ + V̄ ā              (V̄ = v reshaped like W̄ = [W | b]; ȧ = 0 at the input)
    ReLU/Tanh/Sigmoid ȧ' = φ'(s) ⊙ ṡ
    MaxPool2d         ȧ' = ȧ at each window's arg-max
    AvgPool2d         ȧ' = the window mean of ȧ
    Flatten           a reshape

Each rule is a plain function in :data:`RULES` (one per layer type), so the
layers themselves stay forward/backward pairs.  With several directions at once
(k of them) every array carries a leading axis k.

What it is for: the exact-Fisher quadratic forms of [MG15] §7,

    vᵀ F w = (1/N) Σ_n (J_n v)ᵀ Λ_n (J_n w)                          (docs/math.md §6)

cost one forward pass per direction here, instead of C backward passes (one per
column of S_n) through :func:`kfac_ref.fisher.products.quadratic_form_from_stats`.
"""

from __future__ import annotations

from .backend import get_xp
from .backprop import BlockTrace
from .nn import AvgPool2d, Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sigmoid, Tanh
from .nn.blocks import concat_in_layout, run_blocks
from .nn.layout import stored
from .params import flat_to_wbar, layer_slices


def _linear(layer, cache, dx, vbar):
    """ṡ = ȧ Wᵀ + ā V̄ᵀ.  dx : (k, N, d_in) or None, vbar : (k, d_out, a_dim) → (k, N, d_out)."""
    a_bar = layer.a_bar(cache)[:, 0]  # (N, a_dim)
    ds = a_bar @ vbar.transpose(0, 2, 1)  # (k, N, d_out): the parameter direction
    if dx is not None:
        ds = ds + dx @ layer.weight.T  # the input tangent
    return ds


def _conv(layer, cache, dx, vbar):
    """ṡ = conv(ȧ; W) + V̄ ā_t at every location.  → (k, N, C_out, Ho, Wo), each direction stored (C_out, Ho, Wo, N).

    Both terms are products over all samples and locations at once: the k directions' V̄ stacked,
    (k·C_out, a_dim) × ā (a_dim, N·T), and per direction the convolution W * ȧ (:meth:`Conv2d.weight_only`).
    """
    n, c_in, h, w = cache["x_shape"]
    c_out, ho, wo = layer.output_shape((c_in, h, w))
    k, t = vbar.shape[0], ho * wo
    ds = layer.patch_product(cache, vbar.reshape(k * c_out, -1)).reshape(k, c_out, t * n)  # the parameter direction
    if dx is not None:
        for i in range(k):  # the input tangent: the convolution of ȧ without the bias, patches by blocks
            ds[i] += stored(layer.weight_only(dx[i])).reshape(c_out, -1)  # (C_out, T·N), a view
    return ds.reshape(k, c_out, ho, wo, n).transpose(0, 4, 1, 2, 3)


def _elementwise(layer, cache, dx, vbar):
    """ȧ' = φ'(s) ⊙ ṡ, written over ṡ: every tangent here is an array this pass made (never the caller's)."""
    return get_xp(dx).multiply(dx, cache["dphi"], out=dx)


def _maxpool(layer, cache, dx, vbar):
    """The tangent at each window's (first) arg-max."""
    return layer.select(cache, dx)  # (k, N, C, Ho, Wo)


def _avgpool(layer, cache, dx, vbar):
    """Pooling is linear: each direction's tangent pooled.  → (k, N, C, Ho, Wo), each stored (C, Ho, Wo, N)."""
    parts = [layer.forward(d) for d in dx]  # (N, C, Ho, Wo) each
    n, c, ho, wo = parts[0].shape
    out = get_xp(dx).empty((len(parts), c, ho, wo, n), dtype=parts[0].dtype).transpose(0, 4, 1, 2, 3)
    for i, part in enumerate(parts):
        out[i] = part
    return out


def _flatten(layer, cache, dx, vbar):
    return dx.reshape(dx.shape[0], dx.shape[1], -1)


RULES = {
    Linear: _linear,
    Conv2d: _conv,
    ReLU: _elementwise,
    Tanh: _elementwise,
    Sigmoid: _elementwise,
    MaxPool2d: _maxpool,
    AvgPool2d: _avgpool,
    Flatten: _flatten,
}


def jvp(model, trace, vectors):
    """J v for each direction: vectors (k, P) in θ's order → output tangents ``(k, N, *out_shape)``.

    A :class:`~kfac_ref.backprop.BlockTrace` (``model.workers`` > 1) runs each block on its own thread.
    """
    xp = get_xp(vectors)
    vectors = xp.asarray(vectors)
    if vectors.ndim != 2 or vectors.shape[1] != model.num_params:
        raise ValueError(f"jvp: vectors have shape {tuple(vectors.shape)}, expected (k, {model.num_params})")
    if isinstance(trace, BlockTrace):
        parts = run_blocks(lambda block: jvp(model, block, vectors), trace.blocks)
        return concat_in_layout(parts, 1)  # samples: axis 1
    slices = iter(layer_slices(model))
    dx = None  # the input does not depend on θ
    for layer, cache in zip(model.layers, trace.caches):
        rule = RULES.get(type(layer))
        if rule is None:
            raise TypeError(f"jvp: no forward-mode rule for {layer!r}")
        vbar = flat_to_wbar(layer, vectors[:, next(slices)]) if layer.has_params else None  # (k, d_out, a_dim)
        if dx is None and vbar is None:
            continue  # still independent of θ (layers before the first parameter layer)
        dx = rule(layer, cache, dx, vbar)
    return dx


def fisher_gram_jvp(model, loss_fn, trace, vectors):
    """[vᵢᵀ F vⱼ] for the exact Fisher of the traced batch, by forward mode.  (k, k)

    F = (1/N) Σ_n J_nᵀ Λ_n J_n (docs/math.md §3), so vᵢᵀ F vⱼ = (1/N) Σ_n (J_n vᵢ)ᵀ Λ_n (J_n vⱼ).
    """
    xp = get_xp(vectors)
    jv = jvp(model, trace, vectors)  # (k, N, C)
    lam_jv = loss_fn.output_fisher_product(trace.output, jv)  # (k, N, C): Λ_n J_n vⱼ, Λ never formed
    n = trace.output.shape[0]
    return xp.einsum("inc,jnc->ij", jv, lam_jv) / n  # the 1/N of F
