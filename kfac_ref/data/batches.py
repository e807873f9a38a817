"""Mini-batches: one epoch at a time, or an endless stream that reshuffles.

The permutation is always drawn on the CPU from an explicit np.random.Generator,
so a seed gives the same batches on NumPy and on CuPy; for CuPy arrays the
indices are copied to the GPU before indexing.

    x : (N, ...)    y : (N, ...)    →    xb : (B, ...)    yb : (B, ...)
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from kfac_ref.backend import device_of, to_device


def _check(x, y, batch_size, who: str) -> int:
    """Validate the pair (x, y) and the batch size; return N."""
    n, n_y = len(x), len(y)
    if n != n_y:
        raise ValueError(f"{who}: x has {n} samples but y has {n_y}, expected the same number")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or not 1 <= batch_size <= n:
        raise ValueError(f"{who}: batch_size must be an integer in [1, N={n}], got {batch_size!r}")
    return n


def epoch_order(n: int, rng: np.random.Generator | None, shuffle: bool = True) -> np.ndarray:
    """The sample order of one epoch: a permutation of 0..n-1 drawn from rng (or 0..n-1)."""
    if not shuffle:
        return np.arange(n)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"shuffle=True needs rng to be a np.random.Generator, got {type(rng).__name__}")
    return rng.permutation(n)  # (n,)


def minibatches(
    x, y, batch_size: int, rng: np.random.Generator | None, shuffle: bool = True, drop_last: bool = False
) -> Iterator[tuple]:
    """Yield (xb, yb) over one epoch, each sample exactly once.

    With shuffle the order is rng.permutation(N); the last batch holds the
    N mod B leftover samples unless drop_last.  Arguments are checked when
    this is called, not at the first batch.
    """
    n = _check(x, y, batch_size, "minibatches")
    order = epoch_order(n, rng, shuffle)  # (N,) on the CPU
    device = device_of(x)
    if device != "cpu":
        order = to_device(order, device)
    stop = n - n % batch_size if drop_last else n
    return ((x[order[i : i + batch_size]], y[order[i : i + batch_size]]) for i in range(0, stop, batch_size))


class BatchStream:
    """An endless iterator of (xb, yb): a new rng permutation at each epoch.

    `epoch` counts the epochs started (0 during the first), `step` the batches
    served so far.  The state of the stream is ``order`` (this epoch's
    permutation, (N,) on the host) and ``pos`` (where the next batch starts in
    it); the first permutation is drawn at construction unless ``order`` is
    given (resuming), the next one when a batch is asked for and the epoch has
    none left (with ``drop_last``, fewer than ``batch_size`` samples).

        stream = BatchStream(x, y, batch_size=32, rng=np.random.default_rng(0))
        xb, yb = next(stream)
    """

    def __init__(
        self, x, y, batch_size: int, rng: np.random.Generator, drop_last: bool = False, *, order=None, pos: int = 0
    ):
        n = _check(x, y, batch_size, "BatchStream")
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"BatchStream: rng must be a np.random.Generator, got {type(rng).__name__}")
        self.x, self.y, self.batch_size, self.rng, self.drop_last = x, y, int(batch_size), rng, drop_last
        self.epoch = 0
        self.step = 0
        self._device = device_of(x)
        if order is None:
            self._set_order(epoch_order(n, rng), 0)
        else:
            order = np.asarray(order)
            if order.shape != (n,) or not 0 <= int(pos) <= n:
                raise ValueError(
                    f"BatchStream: order must be a permutation of the {n} samples and pos in "
                    f"[0, {n}], got order of shape {order.shape} and pos {pos!r}"
                )
            self._set_order(order, int(pos))

    def _set_order(self, order, pos: int) -> None:
        self.order, self.pos = order, pos  # (N,) on the CPU
        self._order_on_device = order if self._device == "cpu" else to_device(order, self._device)  # one copy

    @property
    def batches_per_epoch(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> tuple:
        n = len(self.x)
        stop = n - n % self.batch_size if self.drop_last else n
        if self.pos >= stop:  # epoch finished: reshuffle
            self.epoch += 1
            self._set_order(epoch_order(n, self.rng), 0)
        idx = self._order_on_device[self.pos : self.pos + self.batch_size]  # (B,)
        self.pos += self.batch_size
        self.step += 1
        return self.x[idx], self.y[idx]
