"""im2col and its adjoint col2im, vectorised over the batch.

im2col turns a convolution into a matrix product ([GM16] §2: the patch matrix
⟦A⟧).  For an input x of shape (N, C, H, W), kernel (kh, kw), stride s and
zero padding p, the output has Ho × Wo locations,

    Ho = (H + 2p − kh) // s + 1,   Wo = (W + 2p − kw) // s + 1,

and the patch of location t = (u, v) is x_pad[:, :, u·s : u·s + kh, v·s : v·s + kw],
flattened in (c, i, j) order — the order of ``Conv2d.weight.reshape(C_out, -1)``.

Both functions work for NumPy and CuPy arrays; the only loop is over the kh·kw
kernel offsets, never over samples.
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


def im2col(x, kh: int, kw: int, stride: int, padding: int, ones: bool):
    """Patch matrix ā of shape (N, Ho·Wo, C·kh·kw [+ 1]).

    With ``ones=True`` a last column of ones is appended: the homogeneous
    coordinate of MATH.md §1, so that the convolution with bias is the single
    product ā W̄ᵀ.
    """
    xp = get_xp(x)
    n, c, _, _ = x.shape
    win = windows(pad2d(x, padding), kh, kw, stride)  # (N, C, Ho, Wo, kh, kw)
    ho, wo = win.shape[2], win.shape[3]
    k = c * kh * kw
    a_bar = xp.empty((n, ho, wo, k + ones), dtype=x.dtype)  # (N, Ho, Wo, K [+1])
    # Write the patches straight into the first K columns through a strided view
    # (N, Ho, Wo, C, kh, kw) of a_bar: one copy, no temporary.
    sn, su, sv, sk = a_bar.strides
    patches = xp.lib.stride_tricks.as_strided(
        a_bar, shape=(n, ho, wo, c, kh, kw), strides=(sn, su, sv, sk * kh * kw, sk * kw, sk))
    patches[...] = win.transpose(0, 2, 3, 1, 4, 5)
    if ones:
        a_bar[..., k] = 1.0
    return a_bar.reshape(n, ho * wo, k + ones)  # (N, T, K [+1])


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
            dx[..., i : i + stride * ho : stride, j : j + stride * wo : stride] += \
                cols[..., i, j].transpose(perm)
    if padding:
        dx = dx[..., padding:-padding, padding:-padding]
    return dx
