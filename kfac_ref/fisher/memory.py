"""The guard that refuses a dense matrix too large for memory, before allocating it."""

from __future__ import annotations

import numpy as np

DEFAULT_MAX_BYTES = 2 * 2**30  # 2 GiB; pass max_bytes= to any dense function to change it


def _human(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if nbytes < 1024 or unit == "PiB":
            return f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} PiB"  # pragma: no cover


def check_dense_size(p: int, dtype, max_bytes=None, what: str = "dense Fisher") -> None:
    """Raise MemoryError if a (p, p) matrix of ``dtype`` would exceed ``max_bytes``."""
    if max_bytes is not None and (
        isinstance(max_bytes, (bool, np.bool_))
        or not isinstance(max_bytes, (int, float, np.integer, np.floating))
        or not max_bytes > 0
    ):
        raise ValueError(
            f"max_bytes must be a positive number of bytes (or None for {_human(DEFAULT_MAX_BYTES)}), got {max_bytes!r}"
        )
    limit = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
    need = p * p * np.dtype(dtype).itemsize
    if need > limit:
        raise MemoryError(
            f"{what} of P = {p:,} parameters needs {_human(need)} (P² entries), over the limit of "
            f"{_human(limit)}; use K-FAC (kfac_ref.fisher.kfac_factors) or the Woodbury solve "
            f"(kfac_ref.fisher.woodbury_solve) instead, or pass a larger max_bytes= "
            f"(on the command line: --set ngd.max_bytes=BYTES)"
        )
