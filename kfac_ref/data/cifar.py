"""CIFAR-10 from Alex Krizhevsky's files, binary or python version.

Two official layouts, both 5 training batches + 1 test batch of 10000 images:

* ``cifar-10-batches-bin``: data_batch_1.bin … data_batch_5.bin, test_batch.bin.
  Each record is 1 label byte followed by 3072 pixel bytes: the 32×32 red plane,
  then green, then blue (row-major).  Nothing but bytes: the preferred version.
* ``cifar-10-batches-py``: data_batch_1 … data_batch_5, test_batch, each a
  pickled dict {b'data': uint8 array (10000, 3072), b'labels': list of int}.

Unpickling runs code chosen by whoever wrote the file, so the python version is
read only through :class:`RestrictedUnpickler`, which can build NumPy arrays and
nothing else.

    images : (N, 3, 32, 32)  or (N, 3072) with flatten=True
    labels : (N,)            int64 in [0, 10)
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np

from kfac_ref.data.dataset import Dataset, check_float_dtype, standardise

NUM_CLASSES = 10
IMAGE_SHAPE = (3, 32, 32)
PIXELS = 3 * 32 * 32  # 3072 bytes of pixels per image
RECORD = 1 + PIXELS  # 3073 bytes per record in the binary version
TRAIN_BATCHES = 5
LAYOUTS = {  # folder name -> (training file names, test file name)
    "cifar-10-batches-bin": ([f"data_batch_{i}.bin" for i in range(1, TRAIN_BATCHES + 1)], "test_batch.bin"),
    "cifar-10-batches-py": ([f"data_batch_{i}" for i in range(1, TRAIN_BATCHES + 1)], "test_batch"),
}
WHERE_TO_GET = "https://www.cs.toronto.edu/~kriz/cifar.html (or kfac_ref.data.download_cifar10); see data/README.md"


# ---- the python version: a restricted unpickler --------------------------------------
def _numpy_reconstruct():
    """numpy's array-rebuilding function, wherever this NumPy version keeps it."""
    try:
        from numpy._core.multiarray import _reconstruct  # (NumPy >= 2)
    except ImportError:  # pragma: no cover - NumPy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class UnsafePickleError(ValueError):
    """A pickle asked for a global that is not on the allow-list."""


def _refuse(source: str, what: str):
    raise UnsafePickleError(f"CIFAR pickle {source!r}: {what}")


def _check_shape(source: str, shape) -> tuple:
    if not isinstance(shape, tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        _refuse(source, f"array shape {shape!r} is not a tuple of non-negative integers")
    return shape


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild NumPy arrays, dicts, lists and scalars only.

    A pickle names the globals (module.name) it wants called while loading; a
    malicious one names os.system.  Here :meth:`find_class` answers only the
    globals a pickled ndarray needs, each wrapped so that it checks its
    arguments: numeric dtypes only, and an array's data must really be in the
    file — ``ndarray(shape, dtype, buffer, offset, strides)`` needs a bytes
    buffer that covers offset + shape × itemsize with C-order strides, so that
    a file cannot declare 100,000 images backed by one byte (zero strides) or
    ask for an uninitialised allocation (no buffer).  Nothing is allocated
    from a size the file declares.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),  # arrays pickled by NumPy 1.x (the official files)
        ("numpy._core.multiarray", "_reconstruct"),  # arrays pickled by NumPy 2.x
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def __init__(self, file, source: str):
        super().__init__(file, encoding="bytes")  # Python-2 strings stay bytes, as in the official files
        self.source = source  # the file name, for error messages

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            allowed = ", ".join(sorted(f"{m}.{n}" for m, n in self.ALLOWED))
            raise UnsafePickleError(
                f"CIFAR pickle {self.source!r}: refused to load global '{module}.{name}'; only {allowed} are allowed"
            )
        return {"_reconstruct": self._reconstruct, "ndarray": self._ndarray, "dtype": self._dtype}[name]

    def _dtype(self, spec, align=False, copy=False):
        """numpy.dtype, for plain numbers only (an object dtype would unpickle arbitrary lists)."""
        try:
            dt = np.dtype(spec, align=bool(align), copy=bool(copy))
        except (TypeError, ValueError) as exc:
            _refuse(self.source, f"bad dtype {spec!r} ({exc})")
        if dt.kind not in "biuf" or dt.fields is not None or dt.subdtype is not None:
            _refuse(self.source, f"dtype {dt} refused: only plain booleans, integers and floats are allowed")
        return dt

    def _reconstruct(self, subtype, shape, dtype):
        """numpy's _reconstruct: an empty array that pickle's BUILD then fills (NumPy checks that size)."""
        if subtype != self._ndarray:  # the file's 'numpy.ndarray' global is answered by self._ndarray
            _refuse(self.source, f"can only rebuild numpy.ndarray, got {subtype!r}")
        if _check_shape(self.source, shape) != (0,):
            _refuse(self.source, f"_reconstruct with shape {shape}, expected (0,) (the data follows in the file)")
        return _numpy_reconstruct()(np.ndarray, shape, self._dtype(dtype))

    def _ndarray(self, shape, dtype=float, buffer=None, offset=0, strides=None, order=None):
        """numpy.ndarray(...), only as a C-order view of bytes that are in the file."""
        src = self.source
        shape = _check_shape(src, shape if isinstance(shape, tuple) else (shape,))
        dt = self._dtype(dtype)
        if not isinstance(buffer, (bytes, bytearray)):
            _refuse(
                src, f"ndarray{shape} without a bytes buffer ({type(buffer).__name__}): its data is not in the file"
            )
        if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= len(buffer):
            _refuse(src, f"ndarray offset {offset!r} is outside the {len(buffer)}-byte buffer")
        need = math.prod(shape) * dt.itemsize
        if offset + need > len(buffer):
            _refuse(
                src,
                f"ndarray{shape} of {dt} needs {need:,} bytes but the file holds only "
                f"{len(buffer) - offset:,} from offset {offset}",
            )
        contiguous = _c_strides(shape, dt.itemsize)
        if strides is not None and tuple(strides) != contiguous:
            _refuse(
                src,
                f"ndarray strides {strides!r} refused, expected None or the C-order {contiguous} "
                "(zero, negative or odd strides let a few bytes pose as a large array)",
            )
        if order not in (None, "C"):
            _refuse(src, f"ndarray order {order!r} refused, expected 'C'")
        return np.ndarray(shape, dt, buffer, offset)


def _c_strides(shape: tuple, itemsize: int) -> tuple:
    strides, step = [], itemsize
    for d in reversed(shape):
        strides.append(step)
        step *= max(d, 1)
    return tuple(reversed(strides))


def read_cifar_python_batch(path) -> tuple[np.ndarray, np.ndarray]:
    """One batch of the python version -> (images uint8 (n, 3, 32, 32), labels int64 (n,))."""
    path = Path(path)
    with open(path, "rb") as f:
        try:
            obj = RestrictedUnpickler(f, str(path)).load()
        except UnsafePickleError:
            raise
        except Exception as exc:  # truncated or garbled pickle: many exception types
            raise ValueError(f"CIFAR pickle {str(path)!r}: could not be read ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict):
        raise ValueError(
            f"CIFAR pickle {str(path)!r}: holds a {type(obj).__name__}, expected a dict with keys b'data' and b'labels'"
        )
    data = obj.get(b"data", obj.get("data"))
    labels = obj.get(b"labels", obj.get("labels"))
    if data is None or labels is None:
        raise ValueError(f"CIFAR pickle {str(path)!r}: keys {sorted(map(repr, obj))}, expected b'data' and b'labels'")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS:
        raise ValueError(
            f"CIFAR pickle {str(path)!r}: b'data' is {_describe(data)}, expected uint8 of shape (n, {PIXELS})"
        )
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"CIFAR pickle {str(path)!r}: b'labels' is not a list of integers ({exc})") from exc
    if labels.shape != (data.shape[0],):
        raise ValueError(
            f"CIFAR pickle {str(path)!r}: {labels.shape} labels for {data.shape[0]} images, "
            f"expected one label per image"
        )
    _check_labels(labels, path)
    return data.reshape(-1, *IMAGE_SHAPE), labels


# ---- the binary version ---------------------------------------------------------------
def read_cifar_binary_batch(path) -> tuple[np.ndarray, np.ndarray]:
    """One batch of the binary version -> (images uint8 (n, 3, 32, 32), labels int64 (n,)).

    Any whole number of 3073-byte records is accepted (the official files have 10000).
    """
    path = Path(path)
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % RECORD:
        raise ValueError(
            f"CIFAR binary batch {str(path)!r}: {raw.size} bytes is not a positive multiple of "
            f"{RECORD} (1 label byte + {PIXELS} pixel bytes per record)"
        )
    records = raw.reshape(-1, RECORD)  # (n, 3073)
    labels = records[:, 0].astype(np.int64)  # (n,)
    _check_labels(labels, path)
    images = records[:, 1:].reshape(-1, *IMAGE_SHAPE)  # (n, 3, 32, 32): R, G, B planes
    return images, labels


def read_cifar_batch(path) -> tuple[np.ndarray, np.ndarray]:
    """Read one batch file of either version (a '.bin' name means the binary one)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"CIFAR batch {str(path)!r} is a directory, expected a batch file")
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR batch {str(path)!r} does not exist")
    if path.suffix == ".bin":
        return read_cifar_binary_batch(path)
    return read_cifar_python_batch(path)


def _check_labels(labels: np.ndarray, path) -> None:
    bad = np.count_nonzero((labels < 0) | (labels >= NUM_CLASSES))
    if bad:
        raise ValueError(
            f"CIFAR batch {str(path)!r}: {bad} labels outside [0, {NUM_CLASSES}) "
            f"(max {labels.max()}), expected class indices 0..9"
        )


def _describe(a) -> str:
    if isinstance(a, np.ndarray):
        return f"an array of {a.dtype} with shape {a.shape}"
    return f"a {type(a).__name__}"


# ---- the loader -----------------------------------------------------------------------
def find_cifar10_folder(folder) -> tuple[Path, list[str], str]:
    """(batches folder, training file names, test file name) under `folder`.

    The batches folder is `folder` itself or its cifar-10-batches-bin / -py child;
    the binary version is preferred when both are present (no unpickling needed).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(
            f"load_cifar10: {str(folder)!r} is a file, expected the folder that holds "
            f"(or is) cifar-10-batches-bin or cifar-10-batches-py"
        )
    if not folder.exists():
        raise FileNotFoundError(
            f"load_cifar10: folder {str(folder)!r} does not exist. Get CIFAR-10 from {WHERE_TO_GET}"
        )
    for candidate in [folder / name for name in LAYOUTS] + [folder]:
        for train_names, test_name in LAYOUTS.values():
            if (candidate / train_names[0]).is_file() and (candidate / test_name).is_file():
                return candidate, train_names, test_name
    raise FileNotFoundError(
        f"load_cifar10: no CIFAR-10 batches in {str(folder)!r}; expected it to be or to contain "
        f"'cifar-10-batches-bin' (data_batch_1.bin … data_batch_5.bin, test_batch.bin) or "
        f"'cifar-10-batches-py' (data_batch_1 … data_batch_5, test_batch). Get them from {WHERE_TO_GET}"
    )


def load_cifar10(folder, dtype=np.float64, flatten: bool = False, max_train: int | None = None) -> Dataset:
    """CIFAR-10: 50000 training images (data_batch_1..5), 10000 validation (test_batch).

    Pixels are scaled to [0, 1] and standardised per channel (R, G, B) with the
    training mean and std.  max_train reads only as many training batches as
    needed for that many images (quick runs); the statistics then come from
    those images.

    Returns a Dataset with x (N, 3, 32, 32), or (N, 3072) if flatten, of `dtype`.
    """
    dtype = check_float_dtype(dtype, "load_cifar10")
    if max_train is not None and (isinstance(max_train, bool) or not isinstance(max_train, int) or max_train < 1):
        raise ValueError(f"load_cifar10: max_train must be a positive integer or None, got {max_train!r}")
    batches, train_names, test_name = find_cifar10_folder(folder)

    # 1. read training batches (stop early when max_train images are in hand)
    images, labels, n = [], [], 0
    for file_name in train_names:
        x_b, y_b = read_cifar_batch(batches / file_name)
        images.append(x_b)
        labels.append(y_b)
        n += len(y_b)
        if max_train is not None and n >= max_train:
            break
    x_train = np.concatenate(images)[:max_train]  # (N_train, 3, 32, 32) uint8
    y_train = np.concatenate(labels)[:max_train]  # (N_train,)
    x_val, y_val = read_cifar_batch(batches / test_name)  # (N_val, 3, 32, 32), (N_val,)

    # 2. scale to [0, 1], standardise each channel with training statistics
    x_train, x_val = standardise(x_train.astype(dtype) / 255, x_val.astype(dtype) / 255, axis=(0, 2, 3))
    if flatten:
        x_train = x_train.reshape(len(x_train), -1)  # (N_train, 3072)
        x_val = x_val.reshape(len(x_val), -1)  # (N_val, 3072)
    return Dataset("cifar10", x_train, y_train, x_val, y_val, num_classes=NUM_CLASSES)
