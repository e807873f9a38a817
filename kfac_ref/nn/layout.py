"""Where image activations live in memory: sample-minor, the sample index fastest.

Every image array has PyTorch's logical shape, (N, C, H, W) — or (S, N, C, H, W) with a seed
axis in the backward pass — and that is what layers, tests and users index.  Conv2d and the
pooling layers *store* it sample-minor: the array they return is a transposed view of a
contiguous buffer ordered (C, H, W, N) (or (C, H, W, S, N)).  The values are the same; only
the strides differ.  Two things follow (docs/benchmarks.md measures both):

- **Long contiguous runs.**  A row of an image is W·N consecutive numbers, so every shifted copy
  of im2col, every strided add of col2im and every view a pooling stage takes moves runs of
  Wo·N numbers, where a (N, C, H, W) or (C, N, H, W) order moves runs of Wo (8 or 4 numbers on
  the digits ConvNet): 1.2–10× less time in those passes.
- **Every convolution is a few large matrix products** over columns ordered (location, sample):

      forward          s = W̄ ā           (C_out, a_dim) × (a_dim, T·N)   → the output's own columns
      input gradient   ∂ℓ/∂ā = Wᵀ g       (K, C_out) × (C_out, T·S·N)     g read in place
      weight gradient  Σ_{n,t} g ā ᵀ      (C_out, T·N) × (T·N, a_dim)     one product, no per-sample loop
      K-FAC's Γ        Σ_{s,n,t} g gᵀ     (C_out, T·S·N) × (T·S·N, C_out)

  :func:`columns` gives ā (N, T, a_dim) and g (S, N, T, d_out) as those matrices, views of the
  stored arrays.

Element-wise layers keep the order they are given (NumPy's and CuPy's ufuncs write in their
inputs' order), and Flatten's (N, C·H·W) result is a view with the sample index fastest.  Any
other layout is still correct, at the price of a copy.
"""

from __future__ import annotations

from ..backend import get_xp


def image_layout(xp, shape, dtype):
    """An empty array of logical shape ``(*lead, C, H, W)`` stored as ``(C, H, W, *lead)``."""
    lead = len(shape) - 3
    buf = xp.empty((*shape[lead:], *shape[:lead]), dtype=dtype)
    return buf.transpose((*range(3, 3 + lead), 0, 1, 2))


def stored(a):
    """The ``(C, H, W, *lead)`` view of an image array ``(*lead, C, H, W)``: contiguous when ``a`` is in
    the image layout."""
    lead = a.ndim - 3
    return a.transpose((lead, lead + 1, lead + 2, *range(lead)))


def in_image_layout(a):
    """``a`` ``(*lead, C, H, W)`` itself if it is stored in the image layout, else a copy that is."""
    if stored(a).flags.c_contiguous:
        return a
    out = image_layout(get_xp(a), a.shape, a.dtype)
    assign(out, a)
    return out


#: samples per block when images change layout: 64 copied a (1,024, 3, 32, 32) float32 batch into
#: (3, 32, 32, 1,024) in 3.1 ms, against 24 ms in one copy (docs/benchmarks.md)
TRANSPOSE_BLOCK = 64


def assign(out, x):
    """``out[...] = x`` for images ``(*lead, C, H, W)``.  When their axes lie in memory in different
    orders (a user's (N, C, H, W) batch into the image layout) this is a transpose, run a block of
    samples at a time so that each block's source stays in cache."""
    if x.ndim < 4 or layout_order(x) == layout_order(out):
        out[...] = x
        return
    n, b = x.shape[-4], TRANSPOSE_BLOCK
    for n0 in range(0, n, b):
        out[..., n0 : n0 + b, :, :, :] = x[..., n0 : n0 + b, :, :, :]


def columns(a):
    """``a`` ``(*lead, T, d)`` as the matrix (d, T·lead): columns ordered ``(location, *lead)``, the order
    of the image layout — a view when ``a`` is stored so (a Conv2d's ā and g; Linear's (N, 1, d)
    rows read transposed), otherwise a copy.  Two such matrices pair column by column."""
    xp = get_xp(a)
    return xp.moveaxis(a, (-1, -2), (0, 1)).reshape(a.shape[-1], -1)


def layout_order(a) -> list:
    """a's axes as they lie in memory, the slowest first (stable on ties)."""
    return sorted(range(a.ndim), key=lambda i: -a.strides[i])


def empty_in_layout(like, shape, dtype=None):
    """An empty array of ``shape`` (same rank as ``like``) whose axes lie in memory in ``like``'s order."""
    xp = get_xp(like)
    order = layout_order(like)
    buf = xp.empty(tuple(shape[i] for i in order), dtype=like.dtype if dtype is None else dtype)
    return buf.transpose(tuple(order.index(i) for i in range(like.ndim)))
