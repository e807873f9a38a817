"""``model.workers = k``: the batch split into k blocks of samples on k threads gives the same numbers.

The reference is the same model with ``workers = 1`` (one pass over the whole batch); the
samples are independent, so every per-sample quantity agrees to rounding (float64, 1e-12),
and the batch sums differ only by the order of their terms.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from kfac_ref import jvp, nn, optim
from kfac_ref.backend import to_numpy
from kfac_ref.backprop import BlockTrace, Trace, backward, forward
from kfac_ref.fisher.kfac import factors_from_stats
from kfac_ref.fisher.vectors import fisher_stats
from kfac_ref.grads import loss_and_grad, per_sample_grads
from kfac_ref.nn import blocks
from kfac_ref.nn.blocks import sample_blocks
from tests.helpers import classification_batch, tiny_convnet, tiny_mlp

TOL = dict(rtol=1e-12, atol=1e-14)
NETS = {"convnet": (tiny_convnet, (2, 6, 6)), "mlp": (tiny_mlp, (4,))}


@pytest.fixture(autouse=True)
def blocks_of_any_size(monkeypatch):
    """These tiny networks would not be split by the size rule (MIN_BLOCK_ELEMENTS): split them anyway."""
    monkeypatch.setattr(blocks, "MIN_BLOCK_ELEMENTS", 1)


def twins(make, workers):
    """The same network twice: one pass over the batch, and ``workers`` blocks."""
    one, split = make(seed=5), make(seed=5)
    split.workers = workers
    return one, split


def close(a, b):
    np.testing.assert_allclose(to_numpy(a), to_numpy(b), **TOL)


@pytest.mark.parametrize("workers", [2, 3])
@pytest.mark.parametrize("net", NETS)
def test_loss_gradient_and_statistics_equal_the_unsplit_pass(net, workers, device, rng):
    make, in_shape = NETS[net]
    one, split = (m.to(device) for m in twins(make, workers))
    x, y = classification_batch(rng, 11, in_shape, 3, device)
    ref, got = loss_and_grad(one, nn.CrossEntropyLoss(), x, y), loss_and_grad(split, nn.CrossEntropyLoss(), x, y)
    assert isinstance(ref.trace, Trace) and isinstance(got.trace, BlockTrace) and len(got.trace.blocks) == workers
    assert got.loss == pytest.approx(ref.loss, rel=1e-14)
    close(got.grad, ref.grad)
    for g_ref, g_got in zip(ref.layer_grads, got.layer_grads):
        close(g_got, g_ref)
    close(got.trace.output, ref.trace.output)
    assert len(got.stats) == len(ref.stats)
    for st_ref, st_got in zip(ref.stats, got.stats):  # merged on reading, in the unsplit layout
        assert st_got.layer is split.param_layers()[ref.stats.index(st_ref)]
        assert st_got.a_bar.shape == st_ref.a_bar.shape and st_got.g.shape == st_ref.g.shape
        close(st_got.a_bar, st_ref.a_bar)
        close(st_got.g, st_ref.g)
        assert st_got.a_bar.strides == st_ref.a_bar.strides  # e.g. a Conv2d's ā stays feature-major


def test_kfac_statistics_and_factors_from_a_blocked_trace(rng):
    one, split = twins(tiny_convnet, 2)
    x, y = classification_batch(rng, 9, (2, 6, 6), 3)
    for kind, m in (("exact", 1), ("mc", 2)):
        ref, _ = fisher_stats(one, nn.CrossEntropyLoss(), x, y, kind, np.random.default_rng(3), m)
        got, trace = fisher_stats(split, nn.CrossEntropyLoss(), x, y, kind, np.random.default_rng(3), m)
        assert isinstance(trace, BlockTrace)
        for st_ref, st_got in zip(ref, got):
            close(st_got.a_bar, st_ref.a_bar)
            close(st_got.g, st_ref.g)
        for (a_ref, g_ref), (a_got, g_got) in zip(factors_from_stats(ref), factors_from_stats(got)):
            close(a_got, a_ref)
            close(g_got, g_ref)


def test_per_sample_gradients_and_input_gradients(rng):
    one, split = twins(tiny_convnet, 3)
    x, y = classification_batch(rng, 7, (2, 6, 6), 3)
    close(per_sample_grads(split, nn.CrossEntropyLoss(), x, y), per_sample_grads(one, nn.CrossEntropyLoss(), x, y))
    seeds = rng.standard_normal((2, 7, 3))
    _, gx_ref = backward(one, forward(one, x), seeds, input_grad=True)
    _, gx_got = backward(split, forward(split, x), seeds, input_grad=True)
    assert gx_got.shape == (2, 7, 2, 6, 6)
    close(gx_got, gx_ref)


def test_forward_mode_reads_the_merged_caches(rng):
    """A BlockTrace merges its blocks' caches into whole-batch ones; jvp runs block by block: the same tangents."""
    one, split = twins(tiny_convnet, 2)
    x, _ = classification_batch(rng, 6, (2, 6, 6), 3)
    v = rng.standard_normal((2, one.num_params))
    t_ref, t_got = forward(one, x), forward(split, x)
    for c_ref, c_got in zip(t_ref.caches, t_got.caches):
        assert (c_ref is None) == (c_got is None)
        if c_ref is not None:
            assert c_ref.keys() == c_got.keys()
            for k, v_ref in c_ref.items():
                if hasattr(v_ref, "shape") and v_ref.dtype.kind == "f":  # a block's product rounds its own way
                    np.testing.assert_allclose(c_got[k], v_ref, rtol=1e-13, atol=1e-15)
                elif hasattr(v_ref, "shape"):  # masks and arg-max picks
                    np.testing.assert_array_equal(c_got[k], v_ref)
                else:
                    assert c_got[k] == v_ref
    close(jvp.jvp(split, t_got, v), jvp.jvp(one, t_ref, v))


def test_kfac_trains_the_same_with_two_workers(rng):
    """Three K-FAC steps (factors and inverses every step) on both twins: the same parameters."""
    x, y = classification_batch(rng, 16, (2, 6, 6), 3)
    thetas = []
    for workers in (1, 2):
        model = tiny_convnet(seed=2)
        model.workers = workers
        opt = optim.KFAC(model, nn.CrossEntropyLoss(), lr=0.1, damping=0.1, T_cov=1, T_inv=1)
        gen = np.random.default_rng(4)
        for _ in range(3):
            opt.step(x, y, gen)
        thetas.append(np.concatenate([to_numpy(v).ravel() for _, v in model.params()]))
    np.testing.assert_allclose(thetas[1], thetas[0], rtol=1e-10, atol=1e-13)


def test_float32_stays_float32(rng):
    one, split = twins(tiny_convnet, 2)
    one.astype(np.float32), split.astype(np.float32)
    x, y = classification_batch(rng, 10, (2, 6, 6), 3)
    x = x.astype(np.float32)
    ref, got = loss_and_grad(one, nn.CrossEntropyLoss(), x, y), loss_and_grad(split, nn.CrossEntropyLoss(), x, y)
    assert got.grad.dtype == np.float32 and got.trace.output.dtype == np.float32
    assert all(st.a_bar.dtype == np.float32 and st.g.dtype == np.float32 for st in got.stats)
    np.testing.assert_allclose(got.grad, ref.grad, rtol=1e-5, atol=1e-6)


def test_fewer_samples_than_workers(rng):
    one, split = twins(tiny_mlp, 4)
    x, y = classification_batch(rng, 2, (4,), 3)
    got = loss_and_grad(split, nn.CrossEntropyLoss(), x, y)
    assert isinstance(got.trace, BlockTrace) and got.trace.bounds == ((0, 1), (1, 2))
    close(got.grad, loss_and_grad(one, nn.CrossEntropyLoss(), x, y).grad)
    x1, y1 = x[:1], y[:1]
    assert isinstance(loss_and_grad(split, nn.CrossEntropyLoss(), x1, y1).trace, Trace)  # one sample: one block


@pytest.mark.parametrize("n, workers", [(10, 2), (11, 3), (3, 5), (1024, 2), (7, 1)])
def test_sample_blocks_cover_the_batch_in_order(n, workers):
    bounds = sample_blocks(n, workers)
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(b[1] == c[0] for b, c in zip(bounds[:-1], bounds[1:]))  # contiguous, in order
    sizes = [n1 - n0 for n0, n1 in bounds]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1 and len(bounds) == min(n, workers)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", None])
def test_workers_must_be_a_positive_integer(bad):
    model = tiny_mlp()
    with pytest.raises(ValueError, match=r"Sequential.workers must be a positive integer, got"):
        model.workers = bad
    assert model.workers == 1


def test_bad_input_is_refused_for_the_whole_batch_before_any_block_runs(rng):
    one, split = twins(tiny_convnet, 2)
    x, y = classification_batch(rng, 8, (2, 6, 6), 3)
    x[6, 0, 0, 0] = np.nan
    messages = []
    for model in (one, split):
        with pytest.raises(ValueError, match="NaN/Inf") as err:
            loss_and_grad(model, nn.CrossEntropyLoss(), x, y)
        messages.append(str(err.value))
    assert messages[0] == messages[1]  # "1 NaN/Inf value(s) out of 576": the whole batch's count
    y_bad = y.copy()
    y_bad[5] = 5  # a label out of range (3 classes): the loss refuses it, before any backward pass
    with pytest.raises(ValueError, match="5"):
        loss_and_grad(split, nn.CrossEntropyLoss(), x[:6], y_bad[:6])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_runs_blocks_on_threads_of_its_own(rng):
    """The block threads live in the process that made them: after a fork the child makes its own."""
    one, split = twins(tiny_mlp, 2)
    x, y = classification_batch(rng, 6, (4,), 3)
    ref = loss_and_grad(one, nn.CrossEntropyLoss(), x, y).grad
    loss_and_grad(split, nn.CrossEntropyLoss(), x, y)  # the parent's pool exists now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one blocked pass, then report and leave at once
        ok = np.allclose(loss_and_grad(split, nn.CrossEntropyLoss(), x, y).grad, ref, rtol=1e-12, atol=1e-14)
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.close(write)
    for _ in range(300):  # up to 30 s; a child waiting on its parent's dead threads never ends
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child's blocked pass did not finish")
    assert os.read(read, 1) == b"1" and status == 0


# ---- the CLI's thread rule: --threads T splits a ConvNet's batch, gives other models' BLAS T threads ----
@pytest.mark.parametrize(
    "model, device, threads, plan",
    [("convnet", "cpu", 2, (1, 2)), ("mlp", "cpu", 2, (2, 1)), ("convnet", "cpu", None, (1, 1)),
     ("autoencoder", "cpu", None, (1, 1)), ("convnet", "gpu", 2, (None, 1))],
)  # fmt: skip
def test_thread_plan_follows_the_documented_rule(model, device, threads, plan):
    from types import SimpleNamespace

    from kfac_ref.experiments.arguments import thread_plan

    assert thread_plan(SimpleNamespace(device=device, threads=threads), model) == plan


def test_compare_with_two_threads_splits_the_convnet_and_trains_the_same(tmp_path):
    """`compare --threads 2` on the ConvNet: two blocks of samples, recorded in history.json, and the
    same loss curves as one thread to rounding (the unsplit run is the reference)."""
    import json

    from kfac_ref.cli import main

    curves = {}
    for threads in (1, 2):
        out = tmp_path / f"t{threads}"
        args = ["compare", "--quick", "--quiet", "--model", "convnet", "--optimizers", "sgd,kfac", "--dtype", "float64"]
        assert main([*args, "--threads", str(threads), "--out", str(out)]) == 0
        doc = json.loads((out / "history.json").read_text())
        assert doc["config"]["workers"] == threads and doc["machine"]["workers"] == threads
        assert doc["machine"]["blas_threads"] == 1  # one BLAS thread per block
        curves[threads] = [[rec["train_loss"] for rec in r["records"] if "train_loss" in rec] for r in doc["runs"]]
    assert curves[1] and all(curves[1])
    np.testing.assert_allclose(np.array(curves[2], dtype=float), np.array(curves[1], dtype=float), rtol=1e-9)


@pytest.mark.parametrize("net", sorted(NETS))
def test_forward_without_cache_splits_too_and_gives_the_same_outputs(rng, net):
    """model(x) — what evaluation calls — runs the blocks on threads as well: the unsplit outputs."""
    make, in_shape = NETS[net]
    one, split = twins(make, 3)
    x, _ = classification_batch(rng, 7, in_shape, 3)
    close(split(x), one(x))
    assert split(x[:1]).shape == one(x[:1]).shape  # one sample: nothing to split


@pytest.mark.parametrize(
    "net, n, expected",
    [("digits", 512, 1), ("digits", 1024, 2), ("mnist", 64, 1), ("mnist", 128, 2), ("mnist", 1024, 2),
     ("cifar", 32, 2), ("cifar", 1024, 2), ("mlp", 1024, 1)],
)  # fmt: skip
def test_the_size_rule_splits_only_batches_the_benchmarks_saw_gain(monkeypatch, net, n, expected):
    """docs/benchmarks.md: two blocks gained ×1.07–1.5 from 512K numbers per batch up (the digits ConvNet at
    N = 1,024, the 28×28 one at N = 128, the CIFAR-shaped one at N = 32) and lost or were mixed below (0.69–1.14
    at 200–400K: the digits ConvNet at N = 512, the 28×28 one at N ≤ 64; the MLP's largest activation at
    N = 1,024 is 256K numbers)."""
    from kfac_ref import models

    monkeypatch.setattr(blocks, "MIN_BLOCK_ELEMENTS", 1 << 18)
    model, in_shape = {
        "digits": (models.convnet(), (1, 8, 8)),
        "mnist": (models.convnet(in_shape=(1, 28, 28)), (1, 28, 28)),
        "cifar": (models.convnet(in_shape=(3, 32, 32), channels=(16, 32), hidden=64), (3, 32, 32)),
        "mlp": (models.mlp(784, hidden=(256, 256)), (784,)),
    }[net]
    model.workers = 2
    x = np.zeros((n, *in_shape))
    assert len(model.sample_blocks(x)) == expected
    assert isinstance(forward(model, x), BlockTrace) == (expected > 1)
