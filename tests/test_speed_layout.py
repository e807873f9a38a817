"""Images stored sample-minor and patches rebuilt block by block (kfac_ref.nn.layout, Conv2d.patch_blocks).

References: the whole patch matrix built at once by :func:`kfac_ref.nn.im2col.im2col` (pad the
whole batch, one copy per kernel offset) and einsum over it; float64, 1e-12.  Each check runs with
the default blocks and with blocks of one output row (``BLOCK_BYTES`` = 1), so the block loop runs.
"""

from __future__ import annotations

import numpy as np
import pytest

from kfac_ref import jvp, nn
from kfac_ref.backprop import forward
from kfac_ref.fisher.kfac import factors_from_stats
from kfac_ref.fisher.vectors import fisher_stats
from kfac_ref.grads import loss_and_grad
from kfac_ref.nn import im2col as im2col_module
from kfac_ref.nn.im2col import im2col, pad2d
from kfac_ref.nn.layout import in_image_layout
from tests.helpers import classification_batch, tiny_convnet

TOL = dict(rtol=1e-12, atol=1e-13)


@pytest.fixture(params=["default blocks", "one-row blocks"])
def blocks(request, monkeypatch):
    if request.param == "one-row blocks":
        monkeypatch.setattr(im2col_module, "BLOCK_BYTES", 1)
    return request.param


def reference_patches(layer, x):
    """ā (N, T, a_dim) of ``layer`` for input x, the whole batch at once."""
    cols = im2col(x, layer.kernel_size, layer.kernel_size, layer.stride, layer.padding, ones=layer.bias is not None)
    return np.ascontiguousarray(cols)


@pytest.mark.parametrize("stride, padding, bias", [(1, 1, True), (2, 0, False), (1, 2, True)])
def test_conv_forward_weight_gradient_and_patches_against_the_whole_patch_matrix(rng, blocks, stride, padding, bias):
    layer = nn.Conv2d(2, 3, 3, stride=stride, padding=padding, bias=bias, rng=rng)
    x = rng.standard_normal((5, 2, 7, 7))
    a_ref = reference_patches(layer, x)  # (N, T, a_dim)
    y, cache = layer.forward_cached(x)
    n, c_out, ho, wo = y.shape
    s_ref = np.einsum("ntk,ok->not", a_ref, layer.wbar()).reshape(n, c_out, ho, wo)
    np.testing.assert_allclose(y, s_ref, **TOL)
    np.testing.assert_allclose(layer.forward(x), s_ref, **TOL)
    g = rng.standard_normal((n, ho * wo, c_out))
    assert "a_bar" not in cache  # the forward pass keeps the padded input only
    np.testing.assert_allclose(layer.wbar_grad_sum(cache, g), np.einsum("ntd,ntk->dk", g, a_ref), **TOL)
    m = rng.standard_normal((4, layer.a_dim))
    np.testing.assert_allclose(layer.patch_product(cache, m), np.einsum("rk,ntk->rtn", m, a_ref).reshape(4, -1), **TOL)
    np.testing.assert_allclose(layer.a_bar(cache), a_ref, **TOL)  # built when read, then kept
    assert "a_bar" in cache
    np.testing.assert_allclose(layer.wbar_grad_sum(cache, g), np.einsum("ntd,ntk->dk", g, a_ref), **TOL)


def test_images_are_stored_sample_minor_through_the_layers(rng):
    """Conv2d, the activation and the pooling layer return (N, C, H, W) views of (C, H, W, N) buffers,
    Flatten a view of them, and the backward pass hands each Conv2d a (C, H, W, S, N) gradient."""
    model = tiny_convnet(seed=1)
    x, y = classification_batch(rng, 4, (2, 6, 6), 3)
    h = x
    for layer in model.layers:
        h = layer.forward(h)
        if h.ndim == 4:
            assert h.transpose(1, 2, 3, 0).flags.c_contiguous, layer
        if isinstance(layer, nn.Flatten):
            assert h.T.flags.c_contiguous  # (C·H·W, N)
            break
    res = loss_and_grad(model, nn.CrossEntropyLoss(), x, y)
    for st in res.stats:
        if st.layer.kind == "conv":  # g (S, N, T, C_out) of a Conv2d, stored (C_out, T, S, N)
            assert st.g.transpose(3, 2, 0, 1).flags.c_contiguous


def test_a_training_step_never_builds_the_patch_matrix_and_k_fac_builds_it_once(rng, blocks):
    model = tiny_convnet(seed=3)
    x, y = classification_batch(rng, 6, (2, 6, 6), 3)
    res = loss_and_grad(model, nn.CrossEntropyLoss(), x, y)
    conv_caches = [c for layer, c in zip(model.layers, res.trace.caches) if isinstance(layer, nn.Conv2d)]
    assert conv_caches and all("a_bar" not in c for c in conv_caches)
    per_sample = np.concatenate([st.per_sample_wbar_grads()[0].reshape(6, -1) for st in res.stats], axis=1)
    np.testing.assert_allclose(np.concatenate([m.ravel() for m in res.layer_grads]), per_sample.mean(axis=0), **TOL)
    stats, _ = fisher_stats(model, nn.CrossEntropyLoss(), x, y, "mc", np.random.default_rng(0), 1, trace=res.trace)
    factors_from_stats(stats)
    assert all("a_bar" in c for c in conv_caches)  # built by the first read, shared by the trace's readers


def test_forward_mode_rebuilds_the_patches_block_by_block(rng, blocks):
    """J v by blocks (ā never built) against J v after ā was built whole: the same tangents."""
    model = tiny_convnet(seed=4)
    x, _ = classification_batch(rng, 5, (2, 6, 6), 3)
    v = rng.standard_normal((2, model.num_params))
    trace = forward(model, x)
    by_blocks = jvp.jvp(model, trace, v)
    for layer, cache in zip(model.layers, trace.caches):
        if isinstance(layer, nn.Conv2d):
            assert "a_bar" not in cache
            layer.a_bar(cache)
    np.testing.assert_allclose(by_blocks, jvp.jvp(model, trace, v), **TOL)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_keeps_its_input_and_builds_a_bar_only_when_read(rng, bias):
    """Σ_n g_n ā_nᵀ from the cached input alone ([gᵀ a | gᵀ 1]) against einsum over ā = [a; 1]."""
    layer = nn.Linear(5, 3, bias=bias, rng=rng)
    x = rng.standard_normal((7, 5))
    a_ref = np.concatenate([x, np.ones((7, 1))], axis=1) if bias else x  # (N, a_dim)
    _, cache = layer.forward_cached(x)
    g = rng.standard_normal((7, 1, 3))
    np.testing.assert_allclose(layer.wbar_grad_sum(cache, g), np.einsum("nd,nk->dk", g[:, 0], a_ref), **TOL)
    assert "a_bar" not in cache
    np.testing.assert_array_equal(layer.a_bar(cache), a_ref[:, None, :])  # built when read, then kept
    assert "a_bar" in cache
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3), seed=0)
    xb, yb = classification_batch(rng, 8, (4,), 3)
    res = loss_and_grad(model, nn.CrossEntropyLoss(), xb, yb)
    assert all("a_bar" not in c for c in res.trace.caches if c is not None and "x" in c)  # an SGD step: never


def test_forward_mode_writes_its_tangents_only(rng):
    """J v twice on one trace: the same tangents, and every cache array bit for bit as before."""
    model = tiny_convnet(seed=5)
    x, _ = classification_batch(rng, 4, (2, 6, 6), 3)
    v = rng.standard_normal((2, model.num_params))
    trace = forward(model, x)
    for layer, cache in zip(model.layers, trace.caches):
        if isinstance(layer, nn.Conv2d):
            layer.a_bar(cache)  # the one addition a reader may make, made first
    before = [{k: np.copy(a) for k, a in c.items() if hasattr(a, "strides")} for c in trace.caches if c is not None]
    first = jvp.jvp(model, trace, v)
    np.testing.assert_array_equal(jvp.jvp(model, trace, v), first)
    after = [c for c in trace.caches if c is not None]
    for b, c in zip(before, after):
        for k, a in b.items():
            np.testing.assert_array_equal(c[k], a)


@pytest.mark.parametrize("n", [1, 64, 130])  # one partial block, one whole, two whole and a partial one
@pytest.mark.parametrize("padding", [0, 2])
def test_a_users_batch_is_transposed_into_the_image_layout_block_by_block(rng, n, padding):
    """pad2d(image_layout_out=True) of a C-ordered (N, C, H, W) batch (64 samples per block, nn.layout.assign)
    against np.pad: the same values, stored (C, Hp, Wp, N); with seeds too, stored (C, H, W, S, N)."""
    x = rng.standard_normal((n, 3, 5, 4))
    got = pad2d(x, padding, 0.5, image_layout_out=True)
    np.testing.assert_array_equal(got, np.pad(x, ((0, 0), (0, 0), (padding,) * 2, (padding,) * 2), constant_values=0.5))
    assert got.transpose(1, 2, 3, 0).flags.c_contiguous
    seeds = rng.standard_normal((2, n, 3, 5, 4))
    moved = in_image_layout(seeds)
    np.testing.assert_array_equal(moved, seeds)
    assert moved.transpose(2, 3, 4, 0, 1).flags.c_contiguous and in_image_layout(moved) is moved


@pytest.mark.parametrize("padding", [1, 2, 3])
@pytest.mark.parametrize("image_layout_out", [False, True])
@pytest.mark.parametrize("stored_as", ["C order", "image layout", "seeds in the image layout"])
def test_pad2d_writes_its_frame_and_the_input_nothing_else(rng, monkeypatch, padding, image_layout_out, stored_as):
    """pad2d fills only the frame of padding and copies x into the rest: with every buffer it allocates
    poisoned with NaN first, so that a position it forgets shows, it equals np.pad, whatever x's layout
    and whether the result keeps x's order or is stored in the image layout."""
    from kfac_ref.nn import layout

    def poisoned(allocate):
        def alloc(*args, **kwargs):
            out = allocate(*args, **kwargs)
            out[...] = np.nan
            return out

        return alloc

    monkeypatch.setattr(im2col_module, "image_layout", poisoned(layout.image_layout))
    monkeypatch.setattr(im2col_module, "empty_in_layout", poisoned(layout.empty_in_layout))
    x = rng.standard_normal((2, 5, 3, 7, 4) if stored_as.startswith("seeds") else (5, 3, 7, 4))
    if stored_as != "C order":
        x = in_image_layout(x)
    got = pad2d(x, padding, -np.inf, image_layout_out=image_layout_out)
    pads = ((0, 0),) * (x.ndim - 2) + ((padding, padding),) * 2
    np.testing.assert_array_equal(got, np.pad(x, pads, constant_values=-np.inf))
    kept = in_image_layout(x) if image_layout_out else x  # the order the result must keep
    assert layout.layout_order(got) == layout.layout_order(kept)
