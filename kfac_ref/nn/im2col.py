"""im2col and its adjoint col2im, vectorised over the batch.

im2col turns a convolution into a matrix product ([GM16] §2: the patch matrix
⟦A⟧).  For an input x of shape (N, C, H, W), kernel (kh, kw), stride s and
zero padding p, the output has Ho × Wo locations,

    Ho = (H + 2p − kh) // s + 1,   Wo = (W + 2p − kw) // s + 1,

and the patch of location t = (u, v) is x_pad[:, :, u·s : u·s + kh, v·s : v·s + kw],
flattened in (c, i, j) order — the order of ``Conv2d.weight.reshape(C_out, -1)``.

im2col is a gather with a fixed index table: entry (t, k) of every sample's
patch matrix reads one element of that sample's padded input, at the same flat
position for every sample (:func:`patch_index`).  col2im, its adjoint, adds the
patch gradients back with one strided slice-add per kernel offset (kh·kw of them).

Both functions work for NumPy and CuPy arrays and never loop over samples.
"""

from __future__ import annotations

from ..backend import get_xp


def out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Number of output positions along one spatial axis."""
    return (size + 2 * padding - kernel) // stride + 1


def pad2d(x, padding: int, value: float = 0.0):
    """Pad the last two axes of x by ``padding`` on each side with ``value``."""
    if padding == 0:
        return x
    xp = get_xp(x)
    width = [(0, 0)] * (x.ndim - 2) + [(padding, padding), (padding, padding)]
    return xp.pad(x, width, mode="constant", constant_values=value)


def windows(x_pad, kh: int, kw: int, stride: int):
    """A read-only strided view of all patches: (..., C, Ho, Wo, kh, kw), no copy."""
    xp = get_xp(x_pad)
    *lead, h, w = x_pad.shape
    ho, wo = (h - kh) // stride + 1, (w - kw) // stride + 1
    sh, sw = x_pad.strides[-2:]
    shape = (*lead, ho, wo, kh, kw)
    strides = (*x_pad.strides[:-2], sh * stride, sw * stride, sh, sw)
    return xp.lib.stride_tricks.as_strided(x_pad, shape=shape, strides=strides)


def patch_index(c: int, hp: int, wp: int, kh: int, kw: int, stride: int, xp):
    """Where each patch entry sits in one flattened padded sample (C·Hp·Wp values).  (T, K)

        index[t, (c, i, j)] = corner[t] + offset[c, i, j]
        corner[(u, v)]      = u·s·Wp + v·s                 the top-left element of patch t
        offset[c, i, j]     = c·Hp·Wp + i·Wp + j           entry (c, i, j) relative to it

    T = Ho·Wo locations in (u, v) row-major order, K = C·kh·kw in (c, i, j) order.
    """
    ho, wo = (hp - kh) // stride + 1, (wp - kw) // stride + 1
    corner = xp.arange(ho)[:, None] * (stride * wp) + xp.arange(wo)[None, :] * stride  # (Ho, Wo)
    offset = (
        xp.arange(c)[:, None, None] * (hp * wp) + xp.arange(kh)[None, :, None] * wp + xp.arange(kw)[None, None, :]
    )  # (C, kh, kw)
    return corner.reshape(-1, 1) + offset.reshape(1, -1)  # (T, K)


def im2col(x, kh: int, kw: int, stride: int, padding: int, ones: bool):
    """Patch matrix ā of shape (N, Ho·Wo, C·kh·kw [+ 1]), a C-contiguous array.

    With ``ones=True`` a last column of ones is appended: the homogeneous
    coordinate of docs/math.md §1, so that the convolution with bias is the single
    product ā W̄ᵀ.
    """
    xp = get_xp(x)
    n, c, _, _ = x.shape
    x_pad = pad2d(x, padding)  # (N, C, Hp, Wp)
    hp, wp = x_pad.shape[-2:]
    index = patch_index(c, hp, wp, kh, kw, stride, xp)  # (T, K)
    flat = x_pad.reshape(n, c * hp * wp)  # (N, C·Hp·Wp)
    if ones:
        # Give every sample one more value, 1, and point a last index column at it:
        # the ones column then comes out of the same gather.
        flat = xp.concatenate([flat, xp.ones((n, 1), dtype=x.dtype)], axis=1)  # (N, C·Hp·Wp + 1)
        index = xp.concatenate([index, xp.full((index.shape[0], 1), c * hp * wp)], axis=1)  # (T, K + 1)
    return xp.take(flat, index, axis=1)  # (N, T, K [+1]): ā[n, t, k] = flat[n, index[t, k]]


def col2im(cols, x_shape, kh: int, kw: int, stride: int, padding: int):
    """Adjoint of im2col: scatter-add patch gradients back to the input.

    cols : (..., Ho, Wo, C, kh, kw)  →  (..., C, H, W)
    Leading axes (seed vectors S, samples N) are carried through.
    """
    xp = get_xp(cols)
    *lead, ho, wo, c, _, _ = cols.shape
    h, w = x_shape[-2:]
    hp, wp = h + 2 * padding, w + 2 * padding
    dx = xp.zeros((*lead, c, hp, wp), dtype=cols.dtype)  # (..., C, Hp, Wp)
    nl = len(lead)
    perm = (*range(nl), nl + 2, nl, nl + 1)  # (..., Ho, Wo, C) → (..., C, Ho, Wo)
    for i in range(kh):
        for j in range(kw):
            dx[..., i : i + stride * ho : stride, j : j + stride * wo : stride] += cols[..., i, j].transpose(perm)
    if padding:
        dx = dx[..., padding:-padding, padding:-padding]
    return dx
