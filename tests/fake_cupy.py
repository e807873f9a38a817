"""A strict stand-in of CuPy, running on NumPy, for testing the GPU code path without a GPU.

Test-only (never shipped): ``tests/conftest.py`` hands it to
:mod:`kfac_ref.backend` when real CuPy cannot use a GPU.  It enforces the rules
of CuPy that code written on NumPy breaks without noticing:

- device arrays are their own type (:class:`ndarray`), not ``numpy.ndarray``;
- no implicit device→host conversion: ``np.asarray(d)`` / ``d.__array__()``
  raise TypeError, as CuPy does;
- NumPy arrays are not accepted as operands of device arrays or as arguments of
  the module's functions (TypeError, as CuPy); only ``asarray``/``array`` take
  them (a counted host→device transfer), and as an index (also counted);
- reductions return 0-d device arrays, never Python or NumPy scalars;
- ``float()``, ``int()``, ``bool()``, ``.item()``, ``.tolist()``, ``repr`` of a
  device array are device→host *syncs* (counted in :data:`COUNTS`), ``.get()``
  and :func:`asnumpy` are device→host *transfers* (counted);
- linalg does not raise on failure, unless inside ``cupyx.errstate(linalg='raise')``
  (then a failure raises ``numpy.linalg.LinAlgError`` and each factorisation
  costs one sync): cholesky returns what cuSOLVER's potrf leaves (the failed
  pivot, ≤ 0 or NaN, on the diagonal; the rest unfactored), eigh/solve/inv NaN.

Usage:  ``fake_cupy.COUNTS.reset()`` … ``fake_cupy.COUNTS.syncs``.
"""

from __future__ import annotations

import contextlib
import threading
import types

import numpy as np
import scipy.linalg


class Counts:
    """Device→host syncs (scalar reads), transfers each way, and stream synchronisations."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.syncs = 0  # float/int/bool/item/tolist/repr of a device array, linalg status checks
        self.d2h = 0  # .get() / asnumpy
        self.h2d = 0  # asarray(numpy array), numpy index arrays
        self.stream_syncs = 0  # cuda.get_current_stream().synchronize()
        self.where: list[str] = []  # what synced, for reports

    def sync(self, what: str):
        self.syncs += 1
        self.where.append(what)

    def snapshot(self) -> dict:
        return {"syncs": self.syncs, "d2h": self.d2h, "h2d": self.h2d, "stream_syncs": self.stream_syncs}


COUNTS = Counts()


class StandinTypeError(TypeError):
    """What CuPy raises for host/device mixing."""


def _refuse_host(x, where: str):
    if isinstance(x, np.ndarray):
        raise StandinTypeError(
            f"Unsupported type {type(x)} in {where}: a NumPy array was mixed with "
            "device arrays (CuPy does not convert it implicitly)"
        )


def _unwrap(x, where: str):
    """Device arrays → their NumPy data; NumPy arrays refused; containers walked."""
    if isinstance(x, ndarray):
        return x._a
    _refuse_host(x, where)
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v, where) for v in x)
    if isinstance(x, dict):
        return {k: _unwrap(v, where) for k, v in x.items()}
    return x


def _wrap(x):
    if isinstance(x, np.ndarray):
        return ndarray(x)
    if isinstance(x, np.generic) and not isinstance(x, (np.str_, np.bytes_)):
        return ndarray(np.asarray(x))  # reductions give 0-d device arrays
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    if isinstance(x, list):
        return [_wrap(v) for v in x]
    return x


def _index(key):
    """Indices: device arrays unwrapped; NumPy arrays allowed (CuPy copies them: counted)."""
    if isinstance(key, tuple):
        return tuple(_index(k) for k in key)
    if isinstance(key, ndarray):
        return key._a
    if isinstance(key, np.ndarray):
        COUNTS.h2d += 1
        return key
    if isinstance(key, list):
        COUNTS.h2d += 1
        return np.asarray(key)
    return key


class ndarray:  # noqa: N801  (CuPy's name)
    """A device array: NumPy data that refuses to leave the device implicitly."""

    __slots__ = ("_a",)

    def __init__(self, a):
        self._a = a

    # ---- what leaves the device -----------------------------------------------------
    def __array__(self, *args, **kwargs):
        raise StandinTypeError(
            "Implicit conversion to a NumPy array is not allowed. "
            "Please use `.get()` to construct a NumPy array explicitly."
        )

    def get(self, stream=None):
        COUNTS.d2h += 1
        return self._a.copy()

    def item(self):
        COUNTS.sync("item")
        return self._a.item()

    def tolist(self):
        COUNTS.sync("tolist")
        return self._a.tolist()

    def __float__(self):
        COUNTS.sync("float")
        return float(self._a)

    def __int__(self):
        COUNTS.sync("int")
        return int(self._a)

    def __index__(self):
        COUNTS.sync("index")
        return self._a.__index__()

    def __bool__(self):
        COUNTS.sync("bool")
        return bool(self._a)

    def __complex__(self):
        COUNTS.sync("complex")
        return complex(self._a)

    def __repr__(self):
        COUNTS.sync("repr")
        return f"array({self._a!r}) (stand-in device)"

    __str__ = __repr__

    def __format__(self, spec):
        COUNTS.sync("format")
        return format(self._a, spec) if self._a.ndim == 0 else str(self._a)

    def tobytes(self, *a, **k):
        raise StandinTypeError("tobytes() of a device array: call .get() first")

    # ---- attributes and methods -----------------------------------------------------
    shape = property(lambda self: self._a.shape)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    dtype = property(lambda self: self._a.dtype)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: ndarray(self._a.T))
    real = property(lambda self: ndarray(self._a.real))
    imag = property(lambda self: ndarray(self._a.imag))

    @property
    def device(self):
        return _DEVICE

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (ndarray(np.asarray(v)) if not isinstance(v, np.ndarray) else ndarray(v) for v in self._a)

    def __getattr__(self, name):
        if name.startswith("_"):  # e.g. __array_interface__: NumPy would read the data through it
            raise AttributeError(f"stand-in device array has no attribute {name!r}")
        attr = getattr(self._a, name)  # AttributeError for what NumPy lacks too
        if not callable(attr):
            return _wrap(attr)

        def method(*args, **kwargs):
            return _wrap(attr(*_unwrap(args, f"ndarray.{name}"), **_unwrap(kwargs, f"ndarray.{name}")))

        return method

    def __getitem__(self, key):
        return _wrap(self._a[_index(key)])

    def __setitem__(self, key, value):
        self._a[_index(key)] = _unwrap(value, "ndarray.__setitem__")

    # ---- NumPy protocol: behave like CuPy (dispatch, but refuse NumPy arrays) ----------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        inputs = _unwrap(inputs, f"numpy.{ufunc.__name__}")
        if "out" in kwargs:
            kwargs["out"] = _unwrap(kwargs["out"], f"numpy.{ufunc.__name__}")
        return _wrap(getattr(ufunc, method)(*inputs, **kwargs))

    def __array_function__(self, func, types_, args, kwargs):
        return _wrap(func(*_unwrap(args, f"numpy.{func.__name__}"), **_unwrap(kwargs, f"numpy.{func.__name__}")))


def _binary(name):
    def op(self, other):
        if isinstance(other, np.ndarray):
            _refuse_host(other, f"ndarray.{name}")
        return _wrap(getattr(self._a, name)(_unwrap(other, f"ndarray.{name}")))

    op.__name__ = name
    return op


def _inplace(name):
    def op(self, other):
        getattr(self._a, name)(_unwrap(other, f"ndarray.{name}"))
        return self

    op.__name__ = name
    return op


def _unary(name):
    def op(self):
        return _wrap(getattr(self._a, name)())

    op.__name__ = name
    return op


for _n in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor", "lshift", "rshift"):
    setattr(ndarray, f"__{_n}__", _binary(f"__{_n}__"))
    setattr(ndarray, f"__r{_n}__", _binary(f"__r{_n}__"))
    setattr(ndarray, f"__i{_n}__", _inplace(f"__i{_n}__"))
for _n in ("eq", "ne", "lt", "le", "gt", "ge"):
    setattr(ndarray, f"__{_n}__", _binary(f"__{_n}__"))
for _n in ("neg", "pos", "abs", "invert"):
    setattr(ndarray, f"__{_n}__", _unary(f"__{_n}__"))
ndarray.__hash__ = None


# ---- the module: cupy.<function> wraps numpy.<function> -------------------------------
_DEVICE = types.SimpleNamespace(id=0, synchronize=lambda: None)


def _device_sequence(a) -> bool:
    """A (nested) list of device arrays: CuPy builds the array on the device, no transfer."""
    if isinstance(a, (list, tuple)) and a:
        return all(isinstance(v, ndarray) or _device_sequence(v) for v in a)
    return False


def asarray(a, dtype=None, order=None):
    if isinstance(a, ndarray):
        return a if dtype is None or np.dtype(dtype) == a.dtype else a.astype(dtype)
    if _device_sequence(a):
        return ndarray(np.array(_unwrap(a, "asarray"), dtype=dtype, order=order))
    COUNTS.h2d += 1
    return ndarray(np.array(a, dtype=dtype, order=order, copy=True))


def array(a, dtype=None, copy=True, order="K", ndmin=0):
    if isinstance(a, ndarray):
        return ndarray(np.array(a._a, dtype=dtype, copy=copy, order=order, ndmin=ndmin))
    COUNTS.h2d += 1
    return ndarray(np.array(a, dtype=dtype, copy=True, order=order, ndmin=ndmin))


def asnumpy(a, stream=None):
    if isinstance(a, ndarray):
        return a.get()
    return np.asarray(a)


def count_nonzero(a, axis=None):
    out = np.count_nonzero(_unwrap(a, "count_nonzero"), axis=axis)
    return ndarray(np.asarray(out, dtype=np.int64)) if axis is None else _wrap(out)


def _passthrough(name):
    fn = getattr(np, name)

    def wrapped(*args, **kwargs):
        return _wrap(fn(*_unwrap(args, f"cupy.{name}"), **_unwrap(kwargs, f"cupy.{name}")))

    wrapped.__name__ = name
    return wrapped


# names that are not array functions: handed out as NumPy's own
_AS_IS = {
    "dtype",
    "issubdtype",
    "result_type",
    "promote_types",
    "can_cast",
    "iinfo",
    "finfo",
    "newaxis",
    "pi",
    "e",
    "inf",
    "nan",
    "integer",
    "floating",
    "number",
    "signedinteger",
    "unsignedinteger",
    "bool_",
    "float16",
    "float32",
    "float64",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "complex64",
    "complex128",
    "generic",
    "ndim",
    "shape",
}


class _Module(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if name in _AS_IS:
            return getattr(np, name)
        fn = getattr(np, name, None)
        if fn is None or not callable(fn):
            raise AttributeError(f"stand-in cupy has no attribute {name!r}")
        wrapped = _passthrough(name)
        setattr(self, name, wrapped)
        return wrapped


cupy = _Module("cupy", "stand-in of CuPy (tests/fake_cupy.py)")
for _name, _obj in {
    "ndarray": ndarray,
    "asarray": asarray,
    "array": array,
    "asnumpy": asnumpy,
    "count_nonzero": count_nonzero,
    "COUNTS": COUNTS,
    "is_standin": True,
}.items():
    setattr(cupy, _name, _obj)


# ---- cupy.linalg: silent failures unless errstate(linalg='raise') -------------------------
_state = threading.local()


def _linalg_mode() -> str:
    return getattr(_state, "linalg", "ignore")


def _potrf(m):
    """LAPACK's unblocked Cholesky (dpotf2), failure included: it stops at the first pivot
    that is ≤ 0 or NaN, leaves that pivot on the diagonal and the rest unfactored."""
    low = np.tril(m).astype(m.dtype, copy=True)
    for j in range(m.shape[0]):
        ajj = low[j, j] - low[j, :j] @ low[j, :j]
        if not ajj > 0:
            low[j, j] = ajj
            return low, j + 1
        low[j, j] = np.sqrt(ajj)
        low[j + 1 :, j] = (low[j + 1 :, j] - low[j + 1 :, :j] @ low[j, :j]) / low[j, j]
    return low, 0


def _cholesky(m):
    m = _unwrap(m, "cupy.linalg.cholesky")
    low, info = _potrf(m)
    if _linalg_mode() == "raise":
        COUNTS.sync("linalg.cholesky status")
        if info:
            raise np.linalg.LinAlgError(
                f"Error reported by potrf in cuSOLVER. devInfo = {info}. Please refer to the cuSOLVER documentation."
            )
    return ndarray(low)


def _factorisation(name, fn):
    def wrapped(*args, **kwargs):
        args, kwargs = _unwrap(args, f"cupy.linalg.{name}"), _unwrap(kwargs, f"cupy.linalg.{name}")
        raising = _linalg_mode() == "raise"
        if raising:
            COUNTS.sync(f"linalg.{name} status")  # CuPy reads the solver's dev_info back
        try:
            return _wrap(fn(*args, **kwargs))
        except np.linalg.LinAlgError:
            if raising:
                raise
            # CuPy returns what the solver left, no error: model it as NaN
            like = fn(
                *[np.eye(a.shape[-1], dtype=a.dtype) if isinstance(a, np.ndarray) and a.ndim == 2 else a for a in args],
                **kwargs,
            )
            return _wrap(_nan_like(like))

    wrapped.__name__ = name
    return wrapped


def _nan_like(x):
    if isinstance(x, tuple):
        return tuple(_nan_like(v) for v in x)
    return np.full_like(x, np.nan)


linalg = types.ModuleType("cupy.linalg")
for _name in ("eigh", "solve", "inv"):
    setattr(linalg, _name, _factorisation(_name, getattr(np.linalg, _name)))
linalg.cholesky = _cholesky


def _plain(name):
    fn = getattr(np.linalg, name)

    def wrapped(*args, **kwargs):
        where = f"cupy.linalg.{name}"
        return _wrap(fn(*_unwrap(args, where), **_unwrap(kwargs, where)))

    wrapped.__name__ = name
    return wrapped


for _name in ("norm", "eigvalsh", "lstsq", "svd", "qr", "det", "slogdet", "matrix_rank"):
    setattr(linalg, _name, _plain(_name))
linalg.LinAlgError = np.linalg.LinAlgError
cupy.linalg = linalg


# ---- cupy.lib.stride_tricks -----------------------------------------------------------
def _as_strided(x, shape=None, strides=None):
    return ndarray(np.lib.stride_tricks.as_strided(_unwrap(x, "as_strided"), shape=shape, strides=strides))


lib = types.ModuleType("cupy.lib")
lib.stride_tricks = types.SimpleNamespace(as_strided=_as_strided)
cupy.lib = lib


# ---- cupy.cuda -----------------------------------------------------------------------
class _Stream:
    def synchronize(self):
        COUNTS.stream_syncs += 1


cuda = types.ModuleType("cupy.cuda")
cuda.runtime = types.SimpleNamespace(
    getDeviceCount=lambda: 1, getDeviceProperties=lambda i: {"name": b"stand-in (NumPy)"}, runtimeGetVersion=lambda: 0
)
cuda.get_current_stream = lambda: _Stream()
cuda.Device = lambda i=0: _DEVICE
cupy.cuda = cuda
cupy.__version__ = "stand-in"


# ---- cupyx ---------------------------------------------------------------------------
@contextlib.contextmanager
def errstate(*, linalg=None, **others):
    old = _linalg_mode()
    if linalg is not None:
        if linalg not in ("ignore", "raise"):
            raise ValueError(f"linalg must be 'ignore' or 'raise', got {linalg!r}")
        _state.linalg = linalg
    try:
        yield
    finally:
        _state.linalg = old


def _solve_triangular(a, b, trans=0, lower=False, unit_diagonal=False, overwrite_b=False, check_finite=False):
    a, b = _unwrap(a, "solve_triangular"), _unwrap(b, "solve_triangular")
    return ndarray(
        scipy.linalg.solve_triangular(a, b, trans=trans, lower=lower, unit_diagonal=unit_diagonal, check_finite=False)
    )


cupyx = types.ModuleType("cupyx")
cupyx.errstate = errstate
cupyx.scipy = types.ModuleType("cupyx.scipy")
cupyx.scipy.linalg = types.ModuleType("cupyx.scipy.linalg")
cupyx.scipy.linalg.solve_triangular = _solve_triangular
