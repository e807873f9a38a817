"""MNIST and Fashion-MNIST from their IDX files (the format of Yann LeCun's site).

An IDX file is a tiny header followed by the raw array, all big-endian::

    bytes 0-1   0x00 0x00                      magic: two zero bytes
    byte  2     dtype code                     0x08 ubyte, 0x09 byte, 0x0B short,
                                               0x0C int, 0x0D float, 0x0E double
    byte  3     ndim
    then        ndim × uint32                  the dimensions
    then        prod(dims) × itemsize bytes    the data, C order

The files are often distributed gzipped; :func:`read_idx` looks at the first two
bytes (0x1F 0x8B) rather than at the file name to tell.

    images : (N, 1, H, W)  or (N, H·W) with flatten=True   (H = W = 28 for MNIST)
    labels : (N,)          int64 in [0, 10)
"""

from __future__ import annotations

import math
import os
import zlib
from pathlib import Path

import numpy as np

from kfac_ref.data.archive import GZIP_MAGIC, gunzip
from kfac_ref.data.dataset import Dataset, check_float_dtype, standardise

MAX_IDX_BYTES = 2**31  # 2 GiB: far above MNIST's 47 MB, far below a gzip bomb

# IDX dtype code -> big-endian NumPy dtype
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# The four files of MNIST / Fashion-MNIST: (split role, canonical name)
MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_val": "t10k-images-idx3-ubyte",
    "y_val": "t10k-labels-idx1-ubyte",
}

WHERE_TO_GET = (
    "MNIST: http://yann.lecun.com/exdb/mnist/ (or a mirror such as "
    "https://ossci-datasets.s3.amazonaws.com/mnist/); Fashion-MNIST: "
    "https://github.com/zalandoresearch/fashion-mnist; or run `kfac-ref download mnist DIR` "
    "(or fashion-mnist); see data/README.md"
)


def read_idx(path) -> np.ndarray:
    """Read one IDX file (gzipped or not) into a native-byte-order NumPy array.

    Raises FileNotFoundError if the file is missing, IsADirectoryError for a
    folder, ValueError naming the path for a bad magic number, an unknown dtype
    code, a payload whose size does not match the header (truncated or with
    trailing bytes), a gzip stream cut before its trailer, and a file (or a
    header) over MAX_IDX_BYTES — refused before anything of that size is read.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"IDX file {str(path)!r} is a directory, expected an IDX file")
    if not path.is_file():
        raise FileNotFoundError(f"IDX file {str(path)!r} does not exist")
    size = path.stat().st_size
    if size > MAX_IDX_BYTES:  # a sparse or huge file: refused before it is read into memory
        raise ValueError(
            f"IDX file {str(path)!r} is {size:,} bytes, over the limit of {MAX_IDX_BYTES:,}; "
            f"expected an MNIST-sized file"
        )
    raw = path.read_bytes()
    if raw[:2] == GZIP_MAGIC:
        raw = _gunzip_bounded(raw, path)
    return parse_idx(raw, f"IDX file {str(path)!r}")


def parse_idx(raw: bytes, who: str) -> np.ndarray:
    """The array held by the bytes of an (uncompressed) IDX file; errors begin with ``who``."""
    # 1. fixed 4-byte header: magic, dtype code, ndim
    if len(raw) < 4:
        raise ValueError(f"{who}: truncated header, {len(raw)} bytes, expected at least 4")
    if raw[0:2] != b"\x00\x00":
        raise ValueError(
            f"{who}: bad magic {raw[0:2].hex()}, expected 0000 (two zero bytes, then a dtype code and ndim)"
        )
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise ValueError(f"{who}: unknown dtype code 0x{code:02X}, expected one of {known}")
    dtype = IDX_DTYPES[code]

    # 2. ndim big-endian uint32 dimensions
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise ValueError(f"{who}: truncated header, {len(raw)} bytes, expected {header_len} for {ndim} dimensions")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))

    # 3. the payload must be exactly prod(shape) items
    expected = math.prod(shape) * dtype.itemsize
    actual = len(raw) - header_len
    if actual != expected:
        what = "truncated" if actual < expected else "oversized"
        raise ValueError(
            f"{who}: {what} payload, {actual} bytes, expected {expected} for shape {shape} of {dtype.name}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_len).reshape(shape)
    return data.astype(dtype.newbyteorder("="))  # native byte order, writable copy


def _gunzip_bounded(raw: bytes, path: Path) -> bytes:
    """Decompress a gzipped IDX file, never more than its header says plus one byte.

    The header (4 + 4·ndim bytes) is decompressed first; the payload size it
    declares is refused above MAX_IDX_BYTES, then at most that much (+1, to
    detect trailing bytes) is decompressed: a gzip bomb cannot fill memory.
    A stream that ends before its gzip trailer (CRC-32 and length) is refused
    (:func:`kfac_ref.data.archive.gunzip`).
    """
    who = f"IDX file {str(path)!r}"
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip wrapper
    try:
        head = d.decompress(raw, 4)
        if len(head) == 4 and head[:2] == b"\x00\x00" and head[2] in IDX_DTYPES:
            head += d.decompress(d.unconsumed_tail, 4 * head[3])
    except zlib.error as exc:
        raise ValueError(f"{who}: corrupt gzip stream ({exc})") from exc
    if len(head) < 4 or head[:2] != b"\x00\x00" or head[2] not in IDX_DTYPES or len(head) < 4 + 4 * head[3]:
        return head  # a bad or short header: reported by parse_idx
    shape = np.frombuffer(head, dtype=">u4", count=head[3], offset=4)
    need = len(head) + math.prod(int(s) for s in shape) * IDX_DTYPES[head[2]].itemsize
    if need > MAX_IDX_BYTES:
        raise ValueError(
            f"{who}: header declares {need - len(head):,} bytes of data, over the "
            f"limit of {MAX_IDX_BYTES:,}; expected an MNIST-sized file"
        )
    return gunzip(raw, who, need, over_limit="stop")  # need + 1 bytes: parse_idx says "oversized"


def find_mnist_file(folder, canonical: str) -> Path | None:
    """The first existing spelling of an MNIST file name in `folder`, or None.

    Accepted: 'train-images-idx3-ubyte' and 'train-images.idx3-ubyte', each
    optionally with '.gz'.  A spelling that exists as something else (a folder,
    a dangling link) is returned when no regular file is there, so that
    :func:`read_idx` reports what it is instead of calling it missing.
    """
    folder = Path(folder)
    stem, _, kind = canonical.rpartition("-idx")  # 'train-images', '3-ubyte'
    candidates = [folder / (name + suffix) for name in (canonical, f"{stem}.idx{kind}") for suffix in ("", ".gz")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return next((c for c in candidates if os.path.lexists(c)), None)


def load_mnist(
    folder, dtype=np.float64, flatten: bool = False, name: str = "mnist", standardise_pixels: bool = True
) -> Dataset:
    """MNIST (or Fashion-MNIST: same file names) from a folder of IDX files.

    Training set = the 'train-*' files (60000), validation = the 't10k-*' files
    (10000).  Pixels are scaled to [0, 1], then standardised with ONE scalar
    mean and std of the training images (``standardise_pixels=False`` keeps them in
    [0, 1]: the Bernoulli means an autoencoder reconstructs, :meth:`Dataset.reconstruction`).

    Returns a Dataset with x (N, 1, H, W), or (N, H·W) if flatten, of `dtype`.
    """
    dtype = check_float_dtype(dtype, "load_mnist")
    folder = Path(folder)
    expected = ", ".join(f"{n}[.gz]" for n in MNIST_FILES.values())
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"load_mnist: {str(folder)!r} is a file, expected a folder holding {expected}")
    if not folder.is_dir():
        raise FileNotFoundError(
            f"load_mnist: folder {str(folder)!r} does not exist; expected it to hold "
            f"{expected}. Get them from {WHERE_TO_GET}"
        )
    paths = {role: find_mnist_file(folder, canonical) for role, canonical in MNIST_FILES.items()}
    missing = [MNIST_FILES[role] for role, p in paths.items() if p is None]
    if missing:
        raise FileNotFoundError(
            f"load_mnist: folder {str(folder)!r} lacks {', '.join(missing)} "
            f"(optionally .gz; '.idx' spelling also accepted); expected {expected}. "
            f"Get them from {WHERE_TO_GET}"
        )

    arrays = {role: read_idx(p) for role, p in paths.items()}
    for split in ("train", "val"):
        images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
        p_img, p_lab = paths[f"x_{split}"], paths[f"y_{split}"]
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ValueError(
                f"load_mnist: {str(p_img)!r} holds {images.dtype} of shape {images.shape}, "
                f"expected unsigned bytes (code 0x08) of shape (N, H, W)"
            )
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise ValueError(
                f"load_mnist: {str(p_lab)!r} holds {labels.dtype} of shape {labels.shape}, "
                f"expected integer labels of shape (N,)"
            )
        if images.shape[0] == 0:
            raise ValueError(f"load_mnist: {str(p_img)!r} holds no images, expected at least one")
        if labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"load_mnist: {str(p_img)!r} has {images.shape[0]} images but "
                f"{str(p_lab)!r} has {labels.shape[0]} labels"
            )
    if arrays["x_train"].shape[1:] != arrays["x_val"].shape[1:]:
        raise ValueError(
            f"load_mnist: training images are {arrays['x_train'].shape[1:]} but validation "
            f"images are {arrays['x_val'].shape[1:]}, expected the same size"
        )

    y_train = arrays["y_train"].astype(np.int64)  # (N_train,)
    y_val = arrays["y_val"].astype(np.int64)  # (N_val,)
    num_classes = max(10, int(max(y_train.max(initial=0), y_val.max(initial=0))) + 1)
    if num_classes > 256:
        raise ValueError(f"load_mnist: labels go up to {num_classes - 1}, expected at most 255")

    h, w = arrays["x_train"].shape[1:]
    x_train = arrays["x_train"].astype(dtype) / 255  # (N_train, H, W) in [0, 1]
    x_val = arrays["x_val"].astype(dtype) / 255  # (N_val, H, W)
    if standardise_pixels:
        x_train, x_val = standardise(x_train, x_val, axis=None)  # one scalar μ, σ
    shape = (-1, h * w) if flatten else (-1, 1, h, w)
    return Dataset(name, x_train.reshape(shape), y_train, x_val.reshape(shape), y_val, num_classes=num_classes)
