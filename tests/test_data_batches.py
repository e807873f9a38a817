"""Mini-batches and the seeded synthetic datasets."""

import numpy as np
import pytest

from kfac_ref.backend import gpu_available
from kfac_ref.data import (
    BatchStream,
    Dataset,
    lognormal_regression,
    make_classification,
    make_images,
    make_regression,
    minibatches,
)


def indexed(n):
    """x whose rows name their own index, and y = index: a batch tells which samples it holds."""
    return np.arange(n, dtype=np.float64)[:, None] * np.ones((1, 3)), np.arange(n)


# ---- minibatches -------------------------------------------------------------------------
@pytest.mark.parametrize("n, batch_size", [(10, 3), (12, 4), (7, 7), (5, 1)])
def test_one_epoch_visits_every_sample_exactly_once(n, batch_size):
    x, y = indexed(n)
    batches = list(minibatches(x, y, batch_size, np.random.default_rng(0)))
    seen = np.concatenate([yb for _, yb in batches])
    np.testing.assert_array_equal(np.sort(seen), np.arange(n))
    assert [len(yb) for _, yb in batches] == [batch_size] * (n // batch_size) + (
        [n % batch_size] if n % batch_size else []
    )
    for xb, yb in batches:  # x and y stay aligned
        np.testing.assert_array_equal(xb[:, 0], yb)


def test_order_is_the_generators_permutation():
    x, y = indexed(10)
    seen = np.concatenate([yb for _, yb in minibatches(x, y, 4, np.random.default_rng(5))])
    np.testing.assert_array_equal(seen, np.random.default_rng(5).permutation(10))


def test_same_seed_same_order_other_seed_other_order():
    x, y = indexed(50)

    def order(seed):
        return np.concatenate([yb for _, yb in minibatches(x, y, 8, np.random.default_rng(seed))])

    np.testing.assert_array_equal(order(1), order(1))
    assert not np.array_equal(order(1), order(2))


def test_drop_last_and_no_shuffle():
    x, y = indexed(10)
    batches = list(minibatches(x, y, 3, None, shuffle=False, drop_last=True))
    assert [yb.tolist() for _, yb in batches] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]


@pytest.mark.parametrize("batch_size", [0, 11, 2.5, True])
def test_bad_batch_size_is_refused_at_the_call(batch_size):
    x, y = indexed(10)
    with pytest.raises(ValueError, match=r"batch_size must be an integer in \[1, N=10\]"):
        minibatches(x, y, batch_size, np.random.default_rng(0))  # no iteration needed


def test_mismatched_lengths_are_refused():
    x, _ = indexed(10)
    with pytest.raises(ValueError, match="x has 10 samples but y has 9"):
        minibatches(x, np.arange(9), 2, np.random.default_rng(0))


def test_shuffle_needs_a_generator():
    x, y = indexed(10)
    with pytest.raises(TypeError, match="shuffle=True needs rng to be a np.random.Generator, got int"):
        minibatches(x, y, 2, 0)


# ---- BatchStream -------------------------------------------------------------------------
def test_stream_reshuffles_each_epoch_and_counts():
    x, y = indexed(20)
    stream = BatchStream(x, y, 5, np.random.default_rng(0))
    assert stream.batches_per_epoch == 4
    epoch0 = np.concatenate([next(stream)[1] for _ in range(4)])
    assert stream.epoch == 0 and stream.step == 4
    epoch1 = np.concatenate([next(stream)[1] for _ in range(4)])
    assert stream.epoch == 1 and stream.step == 8
    np.testing.assert_array_equal(np.sort(epoch0), np.arange(20))
    np.testing.assert_array_equal(np.sort(epoch1), np.arange(20))
    assert not np.array_equal(epoch0, epoch1)
    # the same generator seed gives the same endless stream
    again = BatchStream(x, y, 5, np.random.default_rng(0))
    np.testing.assert_array_equal(np.concatenate([next(again)[1] for _ in range(8)]), np.concatenate([epoch0, epoch1]))


def test_stream_with_partial_last_batch():
    x, y = indexed(7)
    stream = BatchStream(x, y, 3, np.random.default_rng(1))
    sizes = [len(next(stream)[1]) for _ in range(6)]
    assert sizes == [3, 3, 1, 3, 3, 1] and stream.epoch == 1 and stream.batches_per_epoch == 3
    dropped = BatchStream(x, y, 3, np.random.default_rng(1), drop_last=True)
    assert [len(next(dropped)[1]) for _ in range(4)] == [3, 3, 3, 3] and dropped.batches_per_epoch == 2


def test_stream_needs_a_generator():
    x, y = indexed(4)
    with pytest.raises(TypeError, match="BatchStream: rng must be a np.random.Generator"):
        BatchStream(x, y, 2, rng=None)


def test_stream_resumes_from_its_order_and_position_without_drawing():
    x, y = indexed(10)
    whole = BatchStream(x, y, 3, np.random.default_rng(4), drop_last=True)
    first = [next(whole)[1] for _ in range(2)]
    rng_state = whole.rng.bit_generator.state
    rng = np.random.default_rng(0)
    rng.bit_generator.state = rng_state
    resumed = BatchStream(x, y, 3, rng, drop_last=True, order=whole.order.copy(), pos=whole.pos)
    assert rng.bit_generator.state == rng_state  # given an order, nothing is drawn
    for _ in range(7):  # across two reshuffles
        np.testing.assert_array_equal(next(resumed)[1], next(whole)[1])
    assert first and resumed.pos == whole.pos
    with pytest.raises(ValueError, match="order must be a permutation of the 10 samples"):
        BatchStream(x, y, 3, rng, order=np.arange(9))


# ---- the Trainer's batches are a BatchStream's --------------------------------------------
def _reference_trainer_batches(x, y, batch_size, seed, steps, draws_per_step):
    """The Trainer's batch order as it was written before it used BatchStream (brute force).

    A new permutation when the epoch has fewer than B samples left (the tail dropped),
    drawn from the one generator that the optimizer also draws its Monte-Carlo labels from.
    """
    rng, n, order, pos, out = np.random.default_rng(seed), len(x), None, 0, []
    for _ in range(steps):
        if order is None or pos + batch_size > n:
            order, pos = rng.permutation(n), 0
        idx = order[pos : pos + batch_size]
        pos += batch_size
        out.append((x[idx].tobytes(), y[idx].tobytes()))
        rng.standard_normal(draws_per_step)  # what the step draws between two batches
    return out


def test_trainer_batches_are_byte_identical_to_the_former_loop_and_survive_a_resume():
    from kfac_ref import nn, optim
    from kfac_ref.train import Trainer

    from .helpers import tiny_mlp

    x, y = make_classification(23, 4, 3, 0)  # 23 = 3 batches of 7 and a dropped tail of 2
    data = Dataset("toy", x, y, x[:5], y[:5], num_classes=3)

    class Recording(optim.SGD):
        def step(self, xb, yb, rng=None):
            seen.append((xb.tobytes(), yb.tobytes()))
            rng.standard_normal(3)  # like K-FAC's sampled labels: the batch order must not depend on it
            return super().step(xb, yb, rng)

    seen = []
    Trainer(
        Recording(tiny_mlp(sizes=(4, 5, 3)), nn.CrossEntropyLoss()), data, 7, np.random.default_rng(9), eval_every=100
    ).run(10)
    expected = _reference_trainer_batches(x, y, 7, 9, 10, 3)
    assert seen == expected

    seen = []  # the same run stopped after 4 iterations (mid-epoch) and resumed from its state
    first = Trainer(
        Recording(tiny_mlp(sizes=(4, 5, 3)), nn.CrossEntropyLoss()), data, 7, np.random.default_rng(9), eval_every=100
    )
    first.run(4)
    state = first.state_dict()
    assert state["pos"] == 7 and sorted(state["order"]) == list(range(23))
    second = Trainer(
        Recording(tiny_mlp(sizes=(4, 5, 3)), nn.CrossEntropyLoss()), data, 7, np.random.default_rng(0), eval_every=100
    )
    second.opt.load_state_dict(first.opt.state_dict())
    second.load_state_dict(state)
    second.run(10)
    assert seen == expected


# ---- synthetic ---------------------------------------------------------------------------
def test_make_classification_shapes_balance_and_seed():
    x, y = make_classification(30, 4, 3, np.random.default_rng(0))
    assert x.shape == (30, 4) and y.shape == (30,) and y.dtype == np.int64
    assert np.bincount(y).tolist() == [10, 10, 10]
    x2, y2 = make_classification(30, 4, 3, 0)  # an int seed means default_rng(seed)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(x, make_classification(30, 4, 3, 1)[0])
    Dataset("blobs", x[:20], y[:20], x[20:], y[20:], num_classes=3)  # a valid Dataset


def test_make_images_shapes():
    x, y = make_images(8, 3, 5, 4, 2, np.random.default_rng(0))
    assert x.shape == (8, 3, 5, 4) and y.shape == (8,) and set(y.tolist()) == {0, 1}


def test_make_regression_recovers_its_weight():
    x, y, w = make_regression(500, 3, 2, np.random.default_rng(0), noise=0.01)
    assert x.shape == (500, 3) and y.shape == (500, 2) and w.shape == (2, 3)
    w_hat = np.linalg.lstsq(x, y, rcond=None)[0].T  # (d_out, d_in)
    np.testing.assert_allclose(w_hat, w, atol=5e-3)


def test_lognormal_regression_matches_its_definition():
    x, y, theta = lognormal_regression()
    assert x.shape == (1000, 2) and y.shape == (1000, 1)
    np.testing.assert_array_equal(theta, [2.0, 2.0])
    np.testing.assert_array_equal(x[:, 0], 1.0)
    log_z = np.log(x[:, 1])
    assert abs(log_z.mean()) < 0.1 and abs(log_z.std() - 0.75) < 0.05
    residual = y[:, 0] - x @ theta
    assert abs(residual.mean()) < 0.1 and abs(residual.std() - 1) < 0.1
    np.testing.assert_array_equal(lognormal_regression(seed=0)[1], y)
    assert not np.array_equal(lognormal_regression(seed=1)[1], y)


def test_synthetic_needs_explicit_randomness():
    with pytest.raises(TypeError, match="make_classification: rng must be a np.random.Generator or an int seed"):
        make_classification(10, 2, 2, None)
    with pytest.raises(ValueError, match="make_images: height must be a positive integer, got 0"):
        make_images(4, 1, 0, 3, 2, 0)


# ---- GPU ---------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="needs CuPy and a CUDA device")
def test_minibatches_and_dataset_on_gpu_match_cpu():
    from kfac_ref.backend import xp_for

    cupy = xp_for("gpu")  # real CuPy, or the test suite's stand-in
    x, y = indexed(11)
    cpu = list(minibatches(x, y, 4, np.random.default_rng(3)))
    gpu = list(minibatches(cupy.asarray(x), cupy.asarray(y), 4, np.random.default_rng(3)))
    for (xc, yc), (xg, yg) in zip(cpu, gpu, strict=True):
        assert isinstance(xg, cupy.ndarray)
        np.testing.assert_array_equal(xc, xg.get())
        np.testing.assert_array_equal(yc, yg.get())
    ds = Dataset("toy", x[:8], y[:8] % 3, x[8:], y[8:] % 3, num_classes=3).to("gpu")
    assert ds.device == "gpu" and isinstance(ds.y_val, cupy.ndarray)
    np.testing.assert_array_equal(ds.to("cpu").x_train, x[:8])
