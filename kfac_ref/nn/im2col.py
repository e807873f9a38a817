"""im2col and its adjoint col2im, vectorised over the batch.

im2col turns a convolution into a matrix product ([GM16] §2: the patch matrix
⟦A⟧).  For an input x of shape (N, C, H, W), kernel (kh, kw), stride s and
zero padding p, the output has Ho × Wo locations,

    Ho = (H + 2p − kh) // s + 1,   Wo = (W + 2p − kw) // s + 1,

and the patch of location t = (u, v) is x_pad[:, :, u·s : u·s + kh, v·s : v·s + kw],
flattened in (c, i, j) order — the order of ``Conv2d.weight.reshape(C_out, -1)``.

The patches are stored feature-major with the sample index fastest,
``cols[(c, i, j), u, v, n] = x_pad[c, u·s + i, v·s + j, n]`` (shape (C·kh·kw, Ho, Wo, N)), from an
image stored (C, Hp, Wp, N) (:mod:`kfac_ref.nn.layout`): kernel offset (i, j) fills the rows
(·, i, j) of every channel with one strided copy of the shifted image x_pad[:, i::s, j::s, :],
whose runs are Wo·N contiguous numbers when s = 1 (N when s > 1).  So im2col is kh·kw copies and
col2im kh·kw strided adds into a gradient stored the same way.  A block of output rows (or of one
row's locations) is a contiguous range of cols' columns and reads a rectangle of the input only
(:func:`location_blocks`), and the convolution of the block is one matrix product W̄ · cols[:, block].
The per-sample patch matrix ā of shape (N, Ho·Wo, C·kh·kw) is a transposed view of cols.

All functions work for NumPy and CuPy arrays and never loop over samples.
"""

from __future__ import annotations

from ..backend import get_xp
from .layout import assign, empty_in_layout, image_layout, in_image_layout, stored


def out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Number of output positions along one spatial axis."""
    return (size + 2 * padding - kernel) // stride + 1


BLOCK_BYTES = 4 << 20  # a block's patches: 4 MiB, near a core's L2 (docs/benchmarks.md)


def block_size(n: int, bytes_per_item: int) -> int:
    """Items per block of n: as many as fit in BLOCK_BYTES, at least one, at most n."""
    return max(1, min(n, BLOCK_BYTES // max(1, bytes_per_item)))


def location_blocks(ho: int, wo: int, bytes_per_location: int):
    """Blocks of the Ho × Wo output locations whose patches fit in BLOCK_BYTES, row-major, each location
    once: (rows, cols, t0, t1) — whole rows when one fits, else segments of one row — with the
    padded input's rows and columns that block reads (``rows``, ``cols`` as output slices; see
    :func:`reads`) and its locations t0 … t1 − 1 (t = u·Wo + v: a contiguous range)."""
    if wo * bytes_per_location <= BLOCK_BYTES:
        r = block_size(ho, wo * bytes_per_location)
        for u0 in range(0, ho, r):
            u1 = min(ho, u0 + r)
            yield slice(u0, u1), slice(0, wo), u0 * wo, u1 * wo
    else:
        seg = block_size(wo, bytes_per_location)
        for u in range(ho):
            for v0 in range(0, wo, seg):
                v1 = min(wo, v0 + seg)
                yield slice(u, u + 1), slice(v0, v1), u * wo + v0, u * wo + v1


def reads(out: slice, kernel: int, stride: int) -> slice:
    """The padded input positions that output positions ``out.start … out.stop − 1`` read, along one axis."""
    return slice(out.start * stride, (out.stop - 1) * stride + kernel)


def pad2d(x, padding: int, value: float = 0.0, image_layout_out: bool = False):
    """x ``(*lead, C, H, W)`` padded by ``padding`` on each side of its last two axes with ``value``, in x's
    memory order — or, with ``image_layout_out``, stored ``(C, Hp, Wp, *lead)`` whatever x's order (a
    convolution's input: a user's (N, C, H, W) batch is transposed here, :func:`kfac_ref.nn.layout.assign`).
    x itself when nothing has to change."""
    if padding == 0:
        return in_image_layout(x) if image_layout_out else x
    *lead, h, w = x.shape
    shape = (*lead, h + 2 * padding, w + 2 * padding)
    out = image_layout(get_xp(x), shape, x.dtype) if image_layout_out else empty_in_layout(x, shape)
    p = padding
    for border in (out[..., :p, :], out[..., h + p :, :], out[..., p : h + p, :p], out[..., p : h + p, w + p :]):
        border[...] = value  # the frame only: the interior is written once, by the copy below
    assign(out[..., p : h + p, p : w + p], x)
    return out


def shifted(x_pad, i: int, j: int, stride: int, ho: int, wo: int):
    """x_pad[c, u·s + i, v·s + j, n] for all (c, u, v, n): kernel offset (i, j) of every patch.
    x_pad (C, Hp, Wp, N) → (C, Ho, Wo, N), a view."""
    return x_pad[:, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride]


def patches_into(cols, x_pad, kh: int, kw: int, stride: int):
    """im2col into ``cols`` (C·kh·kw, Ho, Wo, N) — e.g. a block of output locations — from x_pad
    (C, Hp, Wp, N), the part of the input those locations read (:func:`reads`).  kh·kw strided copies,
    both sides in one (sample-minor) order."""
    xp = get_xp(cols)
    c, hp, wp, n = x_pad.shape
    ho, wo = (hp - kh) // stride + 1, (wp - kw) // stride + 1
    by_offset = cols.reshape(c, kh, kw, ho, wo, n)  # a view: only splits an axis
    for i in range(kh):
        for j in range(kw):
            xp.copyto(by_offset[:, i, j], shifted(x_pad, i, j, stride, ho, wo))  # (C, Ho, Wo, N)


def col2im_add(dx_pad, dcols, kh: int, kw: int, stride: int):
    """The adjoint of :func:`patches_into`, accumulated: dx_pad (C, Hp, Wp, N) += col2im(dcols (C·kh·kw, Ho, Wo, N)).

    kh·kw strided adds: row (c, i, j) of dcols goes back onto the shifted image it was copied from.
    """
    c, hp, wp, n = dx_pad.shape
    ho, wo = (hp - kh) // stride + 1, (wp - kw) // stride + 1
    by_offset = dcols.reshape(c, kh, kw, ho, wo, n)
    for i in range(kh):
        for j in range(kw):
            shifted(dx_pad, i, j, stride, ho, wo)[...] += by_offset[:, i, j]  # (C, Ho, Wo, N)
    return dx_pad


def im2col(x, kh: int, kw: int, stride: int, padding: int, ones: bool):
    """Patch matrix ā of shape (N, Ho·Wo, C·kh·kw [+ 1]): a transposed view of the feature-major patches.

    With ``ones=True`` a last column of ones is appended: the homogeneous
    coordinate of docs/math.md §1, so that the convolution with bias is the single
    product ā W̄ᵀ.
    """
    xp = get_xp(x)
    n, c, h, w = x.shape
    ho, wo = out_size(h, kh, stride, padding), out_size(w, kw, stride, padding)
    k = c * kh * kw
    cols = xp.empty((k + ones, ho, wo, n), dtype=x.dtype)  # (K [+1], Ho, Wo, N)
    patches_into(cols[:k], stored(pad2d(x, padding, image_layout_out=True)), kh, kw, stride)  # (C, Hp, Wp, N)
    if ones:
        cols[k] = 1.0
    return cols.reshape(k + ones, ho * wo, n).transpose(2, 1, 0)  # (N, T, K [+1])
