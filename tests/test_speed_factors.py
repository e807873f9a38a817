"""K-FAC's factors in the layouts backprop gives them, against loops over samples, seeds and locations.

A Conv2d layer's ā is a transposed view of its feature-major patches and its g a transposed
view of the output gradient (:mod:`kfac_ref.backprop`); :func:`~kfac_ref.fisher.kfac.factor_a`
and :func:`~kfac_ref.fisher.kfac.factor_g` read them in place.  The reference is the definition
(docs/math.md §4–5), one outer product at a time.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kfac_ref import nn
from kfac_ref.backend import to_device, to_numpy
from kfac_ref.backprop import backward, forward
from kfac_ref.fisher.kfac import factor_a, factor_g
from kfac_ref.nn.layout import columns
from tests.helpers import tiny_convnet

ROOT = Path(__file__).resolve().parents[1]


def loop_factors(a_bar, g):
    """A = (1/N) Σ_{n,t} ā ā ᵀ and G = (1/(N T)) Σ_{s,n,t} g gᵀ, term by term (float64)."""
    a_bar, g = np.asarray(a_bar, dtype=np.float64), np.asarray(g, dtype=np.float64)
    s_, n, t, d = g.shape
    a = np.zeros((a_bar.shape[-1],) * 2)
    gg = np.zeros((d, d))
    for i in range(n):
        for j in range(t):
            a += np.outer(a_bar[i, j], a_bar[i, j])
            for s in range(s_):
                gg += np.outer(g[s, i, j], g[s, i, j])
    return a / n, gg / (n * t)


def layer_statistics(device, dtype, seeds=3, stride=1):
    """Every layer's (ā, g) of tiny_convnet for ``seeds`` random seed vectors per sample."""
    rng = np.random.default_rng(7)
    model = tiny_convnet(seed=3, stride=stride, in_shape=(2, 10, 10)).astype(dtype).to(device)
    x = to_device(rng.standard_normal((5, 2, 10, 10)).astype(dtype), device)
    trace = forward(model, x)
    e = to_device(rng.standard_normal((seeds, *trace.output.shape)).astype(dtype), device)
    stats, _ = backward(model, trace, e)
    return stats


@pytest.mark.parametrize("stride", [1, 2])
def test_factors_of_backprop_statistics_match_the_loop(device, stride):
    stats = layer_statistics(device, np.float64, stride=stride)
    assert [st.layer.kind for st in stats] == ["conv", "conv", "linear"]
    for st in stats:
        a_ref, g_ref = loop_factors(to_numpy(st.a_bar), to_numpy(st.g))
        np.testing.assert_allclose(to_numpy(factor_a(st.a_bar)), a_ref, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(to_numpy(factor_g(st.g)), g_ref, rtol=1e-12, atol=1e-14)


def test_conv_statistics_are_the_views_the_factors_read_in_place():
    """ā and g of a Conv2d layer are transposed views of contiguous (a_dim, T, N) and (d_out, T, S, N)
    arrays (feature-major patches, gradient in the image layout: kfac_ref.nn.layout), so that the
    factors and the weight gradient read them as matrices without a copy."""
    conv = layer_statistics("cpu", np.float64)[0]
    assert conv.layer.kind == "conv" and conv.g.shape[0] == 3 and conv.g.shape[2] > 1
    assert not conv.a_bar.flags.c_contiguous and conv.a_bar.transpose(2, 1, 0).flags.c_contiguous
    assert not conv.g.flags.c_contiguous and conv.g.transpose(3, 2, 0, 1).flags.c_contiguous
    for src in (conv.a_bar, conv.g):
        assert np.shares_memory(columns(src), src)  # a view, not a copy


def test_float32_factors_stay_float32_and_agree_with_float64(device):
    for s32, s64 in zip(layer_statistics(device, np.float32), layer_statistics(device, np.float64)):
        for f in (factor_a, factor_g):
            args = (s32.a_bar,) if f is factor_a else (s32.g,)
            ref = f(s64.a_bar) if f is factor_a else f(s64.g)
            got = f(*args)
            assert got.dtype == np.float32
            np.testing.assert_allclose(to_numpy(got), to_numpy(ref), rtol=1e-5, atol=1e-6)


def test_factor_g_of_a_contiguous_g_is_the_same_formula(rng):
    """g in any layout (here C-contiguous (S, N, T, d_out), a copy for the per-sample products)."""
    g = rng.standard_normal((2, 4, 3, 5))
    np.testing.assert_allclose(factor_g(g), loop_factors(np.zeros((4, 3, 1)), g)[1], rtol=1e-12)


def test_the_cli_thread_limit_reaches_scipys_own_blas():
    """--threads (default 1 on the CPU) must limit SciPy's BLAS too: K-FAC's refresh solves with it.

    threadpoolctl limits only the libraries loaded when the limit is set; SciPy's BLAS is
    loaded lazily, at the first triangular solve.  A fresh interpreter shows the difference.
    """
    code = (
        "import argparse, numpy as np\n"
        "from threadpoolctl import threadpool_info\n"
        "from kfac_ref.experiments.arguments import blas_threads\n"
        "from kfac_ref.backend import solve_triangular\n"
        "with blas_threads(argparse.Namespace(threads=None, device='cpu')):\n"
        "    solve_triangular(np.eye(3), np.ones(3))\n"
        "    print(sorted({p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas'}))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[1]"  # every BLAS loaded, SciPy's included, at one thread


def test_the_factors_leave_the_statistics_as_they_were(rng):
    """The factors only read ā and g (views of the trace and of the output gradient)."""
    model = tiny_convnet(seed=1)
    x = rng.standard_normal((4, 2, 6, 6))
    trace = forward(model, x)
    stats, _ = backward(model, trace, nn.CrossEntropyLoss().grad(trace.output, np.array([0, 1, 2, 0])))
    before = [(st.a_bar.copy(), st.g.copy()) for st in stats]
    for st in stats:
        factor_a(st.a_bar), factor_g(st.g)
    for st, (a, g) in zip(stats, before):
        np.testing.assert_array_equal(st.a_bar, a)
        np.testing.assert_array_equal(st.g, g)
