"""The element-wise nonlinearities' values against a 40-digit reference, over their whole range.

Reference: Python's :mod:`decimal` (40 significant digits), independent of NumPy's exp.
Sigmoid is computed as 1 / (1 + e^−x) with e^−x capped (nn/activations.py); these tests hold it
to 3 ulps wherever σ(x) > e·tiny, to e·tiny (a normal number, never subnormal) below that,
and to no floating-point warning anywhere.
"""

from __future__ import annotations

from decimal import Decimal, localcontext

import numpy as np
import pytest

from kfac_ref import nn


def sigmoid_reference(x) -> np.ndarray:
    """σ(x) in 40 digits, rounded once to float64.  x : (M,) → (M,)"""
    out = []
    with localcontext() as ctx:
        ctx.prec = 40
        for v in np.clip(np.asarray(x, dtype=np.float64), -5000, 5000):  # beyond: 0 and 1 in any float
            out.append(float(1 / (1 + (-Decimal(float(v))).exp())))
    return np.array(out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_is_within_three_ulps_and_never_overflows_or_goes_subnormal(rng, dtype):
    finfo = np.finfo(dtype)
    x = np.concatenate(
        [
            np.linspace(-1000, 1000, 4001),
            rng.standard_normal(500) * 30,
            [0.0, -0.0, 1e-30, -1e-30, 87.0, -87.0, -88.7, -103.0, 708.0, -708.0, -745.5],
        ]
    ).astype(dtype)
    x = np.concatenate([x, [finfo.max, -finfo.max]]).astype(dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = nn.Sigmoid().forward(x)
    assert y.dtype == dtype and y.shape == x.shape
    ref = sigmoid_reference(x)
    floor = np.e * float(finfo.tiny)  # below this the cap holds σ at e·tiny
    exact = ref > floor * (1 + 8 * float(finfo.eps))
    ulps = np.abs(y[exact].astype(np.float64) - ref[exact]) / (ref[exact] * float(finfo.eps))
    assert ulps.max() <= 3.0, f"{ulps.max():.2f} ulps at x = {x[exact][ulps.argmax()]!r}"
    assert exact.sum() > 1000 and (~exact).sum() > 100  # both regimes are exercised
    assert np.all(y[~exact] >= finfo.tiny), "σ went subnormal"
    assert np.all(np.abs(y[~exact].astype(np.float64) - ref[~exact]) <= 1.01 * floor)


def test_sigmoid_of_infinities_and_nan():
    y = nn.Sigmoid().forward(np.array([np.inf, -np.inf, np.nan]))
    assert y[0] == 1.0 and 0 < y[1] <= np.e * np.finfo(np.float64).tiny * 1.01 and np.isnan(y[2])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_keeps_the_layout_and_its_cached_derivative(rng, dtype):
    x = rng.standard_normal((3, 4, 5, 6)).astype(dtype).transpose(3, 0, 1, 2)  # sample-minor, as Conv2d returns
    y, cache = nn.Sigmoid().forward_cached(x)
    ref = sigmoid_reference(x.ravel()).reshape(x.shape)
    np.testing.assert_allclose(y, ref, rtol=4 * np.finfo(dtype).eps)
    np.testing.assert_allclose(cache["dphi"], ref * (1 - ref), rtol=16 * np.finfo(dtype).eps)
    assert y.strides == x.strides  # element-wise layers keep the order they are given (nn/layout.py)
