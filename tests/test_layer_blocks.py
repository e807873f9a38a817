"""The fast formulations of the layers against their definitions (float64, exact up to rounding).

Conv2d runs as one matrix product per block of output locations (kfac_ref.nn.im2col.BLOCK_BYTES);
results must not depend on where the blocks fall, and must match loops over the
definitions.  MaxPool2d's two pairwise stages must route the gradient to the first
maximum of each window in row-major order, as PyTorch does, also on ties.
"""

from __future__ import annotations

import numpy as np
import pytest

import kfac_ref
from kfac_ref import nn
from kfac_ref.nn import im2col as im2col_module

CONVS = [
    (lambda: nn.Conv2d(2, 3, 3, padding=1), (2, 5, 6)),
    (lambda: nn.Conv2d(3, 2, 2, stride=2), (3, 5, 5)),
    (lambda: nn.Conv2d(1, 2, 4, stride=3, padding=2, bias=False), (1, 7, 6)),
]


def _direct_conv(layer, x):
    """s[n, o, u, v] = Σ_{c,i,j} W[o, c, i, j] x_pad[n, c, u·s + i, v·s + j] + b[o], by loops."""
    k, s, p = layer.kernel_size, layer.stride, layer.padding
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    c_out, ho, wo = layer.output_shape(x.shape[1:])
    out = np.zeros((x.shape[0], c_out, ho, wo))
    for n in range(x.shape[0]):
        for u in range(ho):
            for v in range(wo):
                patch = xp[n, :, u * s : u * s + k, v * s : v * s + k]
                out[n, :, u, v] = np.tensordot(layer.weight, patch, axes=3)
    return out if layer.bias is None else out + layer.bias[:, None, None]


BLOCKS = {  # locations per block, from the output's (Ho, Wo)
    "one-location": lambda ho, wo: 1,
    "row-segments": lambda ho, wo: max(1, wo - 1),  # a row does not fit: segments of Wo − 1 and 1
    "uneven-rows": lambda ho, wo: 2 * wo,  # two whole rows per block, the last one alone when Ho is odd
    "whole-batch": lambda ho, wo: ho * wo,
}


@pytest.mark.parametrize("blocks", sorted(BLOCKS))
@pytest.mark.parametrize("make,in_shape", CONVS, ids=["s1-p1", "s2-k2", "s3-p2-nobias"])
def test_conv_blocks_match_the_definition(make, in_shape, blocks, monkeypatch, rng):
    layer = make()
    _, ho, wo = layer.output_shape(in_shape)
    per_block = BLOCKS[blocks](ho, wo)
    monkeypatch.setattr(im2col_module, "BLOCK_BYTES", per_block * layer.a_dim * 7 * 8)  # 7 samples, float64
    x = rng.standard_normal((7, *in_shape))
    out, cache = layer.forward_cached(x)
    np.testing.assert_allclose(out, _direct_conv(layer, x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.forward(x), out, rtol=1e-14, atol=1e-14)
    # The backward is the adjoint of the forward: <r, conv(x')> − bias part = <backward(r), x'> for any x'.
    r = rng.standard_normal((2, *out.shape))  # two seed vectors
    gx = layer.backward(cache, r)
    x2 = rng.standard_normal(x.shape)
    lin = _direct_conv(layer, x2) - (0 if layer.bias is None else layer.bias[:, None, None])
    for s in range(2):
        assert np.isclose((r[s] * lin).sum(), (gx[s] * x2).sum(), rtol=1e-12)
    # ā is the patch matrix of the definition: ā[n, t] = [x_pad[n, :, window t].ravel(); 1]
    a_bar = layer.a_bar(cache)
    k, s_, p = layer.kernel_size, layer.stride, layer.padding
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    for n, t in [(0, 0), (3, ho * wo - 1), (6, (ho * wo) // 2)]:
        u, v = divmod(t, wo)
        patch = xp[n, :, u * s_ : u * s_ + k, v * s_ : v * s_ + k].ravel()
        np.testing.assert_array_equal(a_bar[n, t], patch if layer.bias is None else np.append(patch, 1.0))


@pytest.mark.parametrize("block_bytes", [1, 4 * 19 * 9 * 8, 1 << 30], ids=["one-location", "uneven", "whole-batch"])
def test_batch_gradient_does_not_depend_on_blocks(block_bytes, monkeypatch, rng):
    """loss_and_grad's blocked ∂h/∂W̄ against the per-sample gradients' mean (einsum, no blocks).

    "uneven": no row fits, so each row is cut into segments of 4 and 2 locations in the first conv
    (a_dim 19, 6 × 6 locations, 9 samples) and of 2 and 1 in the second (a_dim 28, 3 × 3).
    """
    monkeypatch.setattr(im2col_module, "BLOCK_BYTES", block_bytes)
    model = kfac_ref.models.convnet(in_shape=(2, 6, 6), channels=(3, 4), hidden=5, num_classes=3)
    x, y = rng.standard_normal((9, 2, 6, 6)), rng.integers(0, 3, size=9)
    loss_fn = nn.CrossEntropyLoss()
    grad = kfac_ref.loss_and_grad(model, loss_fn, x, y).grad
    np.testing.assert_allclose(grad, kfac_ref.per_sample_grads(model, loss_fn, x, y).mean(0), rtol=1e-12, atol=1e-14)


POOLS = [(2, 2, 0), (3, 2, 1), (3, 1, 1), (2, 1, 0), (2, 3, 0), (4, 3, 2)]


@pytest.mark.parametrize("k,s,p", POOLS, ids=[f"k{k}-s{s}-p{p}" for k, s, p in POOLS])
def test_maxpool_routes_to_the_first_maximum_on_ties(k, s, p, rng):
    x = rng.integers(0, 3, size=(2, 2, 7, 6)).astype(float)  # many ties
    layer = nn.MaxPool2d(k, stride=s, padding=p)
    out, cache = layer.forward_cached(x)
    r = rng.standard_normal((2, *out.shape))  # two seed vectors
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-np.inf)
    ref_out, ref_gx = np.zeros(out.shape), np.zeros((2, *xp.shape))
    for n, c, u, v in np.ndindex(*out.shape):
        window = xp[n, c, u * s : u * s + k, v * s : v * s + k]
        i, j = np.unravel_index(np.argmax(window), window.shape)  # the first maximum, row-major
        ref_out[n, c, u, v] = window[i, j]
        ref_gx[:, n, c, u * s + i, v * s + j] += r[:, n, c, u, v]
    np.testing.assert_array_equal(out, ref_out)
    gx = layer.backward(cache, r)  # overlapping windows add up to k² shares, in another order than the loop's
    np.testing.assert_allclose(gx, ref_gx[..., p : p + 7, p : p + 6], rtol=1e-15, atol=4e-16 * np.abs(r).max())
    dx = rng.standard_normal((3, *x.shape))  # forward-mode: the tangent at the same arg-max
    ref_sel = np.zeros((3, *out.shape))
    dxp = np.pad(dx, ((0, 0), (0, 0), (0, 0), (p, p), (p, p)))
    for n, c, u, v in np.ndindex(*out.shape):
        window = xp[n, c, u * s : u * s + k, v * s : v * s + k]
        i, j = np.unravel_index(np.argmax(window), window.shape)
        ref_sel[:, n, c, u, v] = dxp[:, n, c, u * s + i, v * s + j]
    np.testing.assert_array_equal(layer.select(cache, dx), ref_sel)
