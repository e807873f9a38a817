"""Mini-batches: one epoch at a time, or an endless stream that reshuffles.

The permutation is always drawn on the CPU from an explicit np.random.Generator,
so a seed gives the same batches on NumPy and on CuPy; for CuPy arrays the
indices are copied to the GPU before indexing.

    x : (N, ...)    y : (N, ...)    →    xb : (B, ...)    yb : (B, ...)
"""

from __future__ import annotations

from typing import Iterator

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
    return rng.permutation(n)                                                 # (n,)


def minibatches(x, y, batch_size: int, rng: np.random.Generator | None, shuffle: bool = True,
                drop_last: bool = False) -> Iterator[tuple]:
    """Yield (xb, yb) over one epoch, each sample exactly once.

    With shuffle the order is rng.permutation(N); the last batch holds the
    N mod B leftover samples unless drop_last.  Arguments are checked when
    this is called, not at the first batch.
    """
    n = _check(x, y, batch_size, "minibatches")
    order = epoch_order(n, rng, shuffle)                                      # (N,) on the CPU
    device = device_of(x)
    if device != "cpu":
        order = to_device(order, device)
    stop = n - n % batch_size if drop_last else n
    return ((x[order[i:i + batch_size]], y[order[i:i + batch_size]]) for i in range(0, stop, batch_size))


class BatchStream:
    """An endless iterator of (xb, yb): a new rng permutation at each epoch.

    `epoch` counts the epochs started (0 during the first), `step` the batches
    served so far.

        stream = BatchStream(x, y, batch_size=32, rng=np.random.default_rng(0))
        xb, yb = next(stream)
    """

    def __init__(self, x, y, batch_size: int, rng: np.random.Generator, drop_last: bool = False):
        _check(x, y, batch_size, "BatchStream")
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"BatchStream: rng must be a np.random.Generator, got {type(rng).__name__}")
        self.x, self.y, self.batch_size, self.rng, self.drop_last = x, y, int(batch_size), rng, drop_last
        self.epoch = 0
        self.step = 0
        self._batches = minibatches(x, y, self.batch_size, rng, shuffle=True, drop_last=drop_last)

    @property
    def batches_per_epoch(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> "BatchStream":
        return self

    def __next__(self) -> tuple:
        batch = next(self._batches, None)
        if batch is None:                      # epoch finished: reshuffle
            self.epoch += 1
            self._batches = minibatches(self.x, self.y, self.batch_size, self.rng, shuffle=True,
                                        drop_last=self.drop_last)
            batch = next(self._batches)
        self.step += 1
        return batch
