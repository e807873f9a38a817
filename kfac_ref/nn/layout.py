"""Where image activations live in memory: channel-major.

Every image array has PyTorch's logical shape, (N, C, H, W) — or (S, N, C, H, W) with a seed
axis in the backward pass — and that is what layers, tests and users index.  Conv2d and the
pooling layers *store* it channel-major: the array they return is a transposed view of a
contiguous buffer ordered (C, N, H, W) (or (C, S, N, H, W)).  The values are the same; only
the strides differ.  In that order every convolution is a few large matrix products
(docs/benchmarks.md):

    forward          s = W̄ ā           (C_out, a_dim) × (a_dim, B·T)   → the output's own rows
    input gradient   ∂ℓ/∂ā = Wᵀ g       (K, C_out) × (C_out, B·T)       g read in place
    weight gradient  Σ_{n,t} g ā ᵀ      (C_out, N·T) × (N·T, a_dim)     one product, no per-sample loop
    K-FAC's Γ        Σ_{s,n,t} g gᵀ     (C_out, S·N·T) × (S·N·T, C_out)

instead of one small product per sample.  Element-wise layers keep the order they are given
(NumPy's and CuPy's ufuncs write in their inputs' order), and Flatten copies into C order, as
its (N, C·H·W) contract says.  Any other layout is still correct, at the price of a copy.
"""

from __future__ import annotations

from ..backend import get_xp


def channel_major(xp, shape, dtype):
    """An empty array of logical shape ``(*lead, C, H, W)`` stored as ``(C, *lead, H, W)``."""
    *lead, c, h, w = shape
    buf = xp.empty((c, *lead, h, w), dtype=dtype)
    return xp.moveaxis(buf, 0, len(lead))


def rows(a, axis: int):
    """``a`` as a matrix whose rows run along ``axis`` and whose columns are every other index,
    in order: (a.shape[axis], rest).  A view when ``a`` is stored with ``axis`` slowest (channel-major
    images, feature-major patches, Linear's (N, d) rows read transposed); otherwise a copy."""
    xp = get_xp(a)
    return xp.moveaxis(a, axis, 0).reshape(a.shape[axis], -1)


def layout_order(a) -> list:
    """a's axes as they lie in memory, the slowest first (stable on ties)."""
    return sorted(range(a.ndim), key=lambda i: -a.strides[i])


def empty_in_layout(like, shape, dtype=None):
    """An empty array of ``shape`` (same rank as ``like``) whose axes lie in memory in ``like``'s order."""
    xp = get_xp(like)
    order = layout_order(like)
    buf = xp.empty(tuple(shape[i] for i in order), dtype=like.dtype if dtype is None else dtype)
    return buf.transpose(tuple(order.index(i) for i in range(like.ndim)))
