"""Blocks of samples on threads: what ``model.workers = k`` runs (kfac_ref.backprop, Sequential.forward).

The samples of a batch are independent, so a pass can run as k contiguous blocks of samples, each
on its own Python thread: NumPy releases the interpreter lock in its array loops and BLAS calls.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..backend import get_xp
from .layout import layout_order

#: the fewest numbers a block's largest activation may hold: smaller blocks are left whole.  On the
#: 2-core machine of docs/benchmarks.md, in steady state, with images stored sample-minor, two blocks
#: gained ×1.07–1.21 at 512–800K numbers per batch (the digits ConvNet at N = 1,024, the 28×28 one at
#: N = 128), ×1.28–1.48 at 1–2M, and lost or were mixed at 200–400K (0.69–1.14: the digits ConvNet at
#: N = 512, the 28×28 one at N ≤ 64).  The threads share one interpreter lock: a step of small
#: array operations gains less from a second thread than its size alone suggests.
MIN_BLOCK_ELEMENTS = 1 << 18


def block_count(workers: int, n: int, per_sample: int) -> int:
    """Blocks for n samples whose largest activation holds ``per_sample`` numbers each: up to
    ``workers``, each with at least :data:`MIN_BLOCK_ELEMENTS` numbers (so at least 1)."""
    return max(1, min(workers, n, n * per_sample // max(1, MIN_BLOCK_ELEMENTS)))


def sample_blocks(n: int, workers: int) -> tuple:
    """``workers`` contiguous blocks of n samples, as equal as can be: ((n0, n1), ...), none empty."""
    edges = [n * i // workers for i in range(workers + 1)]
    return tuple((n0, n1) for n0, n1 in zip(edges[:-1], edges[1:]) if n1 > n0)


_POOLS: dict = {}
_POOLS_LOCK = threading.Lock()


def _after_fork_in_child():  # a forked child has none of its parent's threads: new pools there
    global _POOLS_LOCK
    _POOLS.clear()
    _POOLS_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def run_blocks(fn, items) -> list:
    """``[fn(item) for item in items]``, each call on a thread of its own; the first error is raised."""
    if len(items) == 1:
        return [fn(items[0])]
    with _POOLS_LOCK:  # one pool per thread count, kept for the next pass
        pool = _POOLS.get(len(items))
        if pool is None:
            pool = _POOLS[len(items)] = ThreadPoolExecutor(len(items), thread_name_prefix="kfac_ref-block")
    return list(pool.map(fn, items))


def concat_in_layout(parts, axis: int):
    """``xp.concatenate(parts, axis)`` laid out in memory as ``parts[0]`` is (e.g. ā feature-major)."""
    xp, first = get_xp(parts[0]), parts[0]
    order = layout_order(first)  # axes, the slowest in memory first
    merged = xp.concatenate([p.transpose(order) for p in parts], axis=order.index(axis))
    return merged.transpose(tuple(np.argsort(order)))
