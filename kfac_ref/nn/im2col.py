"""im2col and its adjoint col2im, vectorised over the batch.

im2col turns a convolution into a matrix product ([GM16] §2: the patch matrix
⟦A⟧).  For an input x of shape (N, C, H, W), kernel (kh, kw), stride s and
zero padding p, the output has Ho × Wo locations,

    Ho = (H + 2p − kh) // s + 1,   Wo = (W + 2p − kw) // s + 1,

and the patch of location t = (u, v) is x_pad[:, :, u·s : u·s + kh, v·s : v·s + kw],
flattened in (c, i, j) order — the order of ``Conv2d.weight.reshape(C_out, -1)``.

The patches are stored feature-major, ``cols[(c, i, j), n, (u, v)] = x_pad[c, n, u·s + i, v·s + j]``
(shape (C·kh·kw, N, Ho·Wo)), from a channel-major image x_pad (C, N, Hp, Wp)
(:mod:`kfac_ref.nn.layout`): then kernel offset (i, j) fills the rows (·, i, j) of every
channel with one strided copy of the shifted image, x_pad[:, :, i::s, j::s] (runs of Wo
contiguous values), so im2col is kh·kw copies and col2im kh·kw strided adds (into a
channel-major (C, N, Hp, Wp) gradient: both sides of each add in one layout); and the
convolution of a block of samples is one matrix product W̄ · cols[:, block].  The
per-sample patch matrix ā of shape (N, Ho·Wo, C·kh·kw) is a transposed view of it.

All functions work for NumPy and CuPy arrays and never loop over samples.
"""

from __future__ import annotations

from ..backend import get_xp
from .layout import empty_in_layout


def out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Number of output positions along one spatial axis."""
    return (size + 2 * padding - kernel) // stride + 1


BLOCK_BYTES = 4 << 20  # a block's patches: 4 MiB, near a core's L2 (1–4 MiB measured fastest: docs/benchmarks.md)


def block_size(n: int, bytes_per_sample: int) -> int:
    """Samples per block of a batch of n: as many as fit in BLOCK_BYTES, at least one, at most n."""
    return max(1, min(n, BLOCK_BYTES // max(1, bytes_per_sample)))


def pad2d(x, padding: int, value: float = 0.0):
    """Pad the last two axes of x by ``padding`` on each side with ``value``, keeping x's memory order."""
    if padding == 0:
        return x
    *lead, h, w = x.shape
    out = empty_in_layout(x, (*lead, h + 2 * padding, w + 2 * padding))
    out[...] = value
    out[..., padding : padding + h, padding : padding + w] = x
    return out


def shifted(x_pad, i: int, j: int, stride: int, ho: int, wo: int):
    """x_pad[..., u·s + i, v·s + j] for all (u, v): kernel offset (i, j) of every patch.  (..., Ho, Wo), a view"""
    return x_pad[..., i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride]


def patches_into(cols, x_pad, kh: int, kw: int, stride: int):
    """im2col into ``cols`` (C·kh·kw, N, Ho·Wo) — e.g. a block of a larger array — from x_pad (C, N, Hp, Wp).

    kh·kw strided copies: offset (i, j) of channel c is the shifted image x_pad[c, :, i::s, j::s];
    x_pad is channel-major (:mod:`kfac_ref.nn.layout`), so both sides of each copy are in one order.
    """
    xp = get_xp(cols)
    c, n, hp, wp = x_pad.shape
    ho, wo = (hp - kh) // stride + 1, (wp - kw) // stride + 1
    rows = cols.reshape(c, kh, kw, n, ho, wo)  # a view: only splits axes
    for i in range(kh):
        for j in range(kw):
            xp.copyto(rows[:, i, j], shifted(x_pad, i, j, stride, ho, wo))  # (C, N, Ho, Wo)


def col2im_into(dx_pad, dcols, kh: int, kw: int, stride: int):
    """The adjoint of :func:`patches_into`: dx_pad (C, N, Hp, Wp) = col2im(dcols (C·kh·kw, N, Ho·Wo)).

    kh·kw strided adds: row (c, i, j) of dcols goes back onto the shifted image it was copied
    from.  dx_pad is channel-major, so that both sides of every add have the same layout.
    """
    c, n, hp, wp = dx_pad.shape
    ho, wo = (hp - kh) // stride + 1, (wp - kw) // stride + 1
    rows = dcols.reshape(c, kh, kw, n, ho, wo)
    dx_pad[...] = 0.0
    for i in range(kh):
        for j in range(kw):
            shifted(dx_pad, i, j, stride, ho, wo)[...] += rows[:, i, j]  # (C, N, Ho, Wo)
    return dx_pad


def im2col(x, kh: int, kw: int, stride: int, padding: int, ones: bool):
    """Patch matrix ā of shape (N, Ho·Wo, C·kh·kw [+ 1]): a transposed view of the feature-major patches.

    With ``ones=True`` a last column of ones is appended: the homogeneous
    coordinate of docs/math.md §1, so that the convolution with bias is the single
    product ā W̄ᵀ.
    """
    xp = get_xp(x)
    n, c, h, w = x.shape
    t = out_size(h, kh, stride, padding) * out_size(w, kw, stride, padding)
    k = c * kh * kw
    cols = xp.empty((k + ones, n, t), dtype=x.dtype)  # (K [+1], N, T)
    patches_into(cols[:k], pad2d(x.transpose(1, 0, 2, 3), padding), kh, kw, stride)  # (C, N, Hp, Wp)
    if ones:
        cols[k] = 1.0
    return cols.transpose(1, 2, 0)  # (N, T, K [+1])
