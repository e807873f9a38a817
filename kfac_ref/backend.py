"""The one module that knows about CuPy.

Every other module takes arrays and asks :func:`get_xp` for the array module
those arrays come from, so the same code runs on NumPy (CPU) and CuPy (GPU)
without any global switch.  Conversion to NumPy happens only at the edges
(logging, plotting, tests) through :func:`to_numpy`.

    >>> import numpy as np
    >>> get_xp(np.zeros(3)) is np
    True
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np

DEVICES = ("cpu", "gpu")

# (cupy, cupyx) once imported.  The test suite may put a stand-in of CuPy here
# (tests/fake_cupy.py) to run the GPU code path without a GPU; nothing else may.
_gpu_modules = None
_gpu_usable = None  # None: not probed yet; True; or the one-line reason it is not usable


def _import_gpu_modules():
    """(cupy, cupyx) with cupyx.scipy.linalg loaded; raises ImportError/OSError as CuPy does."""
    global _gpu_modules
    if _gpu_modules is None:
        import cupy  # (optional dependency, imported on demand)
        import cupyx
        import cupyx.scipy.linalg  # noqa: F401  (needs cuBLAS/cuSOLVER: fails without the toolkit)

        _gpu_modules = (cupy, cupyx)
    return _gpu_modules


def _probe() -> str | None:
    """None if CuPy can multiply and factorise a matrix on the GPU, else why not (one line)."""
    try:
        cupy, _ = _import_gpu_modules()
    except ImportError as exc:
        if getattr(exc, "name", None) == "cupy":  # the package itself is missing
            return (
                "device='gpu' needs CuPy, which is not installed: pip install 'kfac_ref[gpu]' "
                "(CuPy for CUDA 12 with its toolkit libraries) on a machine with an NVIDIA GPU"
            )
        return (
            f"device='gpu': CuPy is installed but cannot load its CUDA libraries ({exc}); "
            "pip install 'cupy-cuda12x[ctk]' or install the CUDA 12 toolkit"
        )
    except Exception as exc:  # OSError for a missing libcublasLt.so.12, CUDA driver errors, …
        return (
            f"device='gpu': CuPy is installed but cannot load its CUDA libraries ({type(exc).__name__}: "
            f"{exc}); pip install 'cupy-cuda12x[ctk]' or install the CUDA 12 toolkit"
        )
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return f"device='gpu': CuPy is installed but no CUDA device is usable ({type(exc).__name__}: {exc})"
    if n < 1:
        return "device='gpu': CuPy is installed but found no CUDA device"
    try:  # a matmul (cuBLAS) and a Cholesky (cuSOLVER), read back once
        a = cupy.eye(2, dtype=cupy.float64) * 2.0
        ok = float((cupy.linalg.cholesky(a @ a)).sum()) == 4.0
    except Exception as exc:
        return (
            f"device='gpu': CuPy sees {n} CUDA device(s) but cannot multiply a matrix on it "
            f"({type(exc).__name__}: {exc}); pip install 'cupy-cuda12x[ctk]' or install the CUDA 12 toolkit"
        )
    if not ok:
        return "device='gpu': CuPy sees a CUDA device but a 2×2 matrix product gave a wrong answer"
    return None


def _cupy():
    """The CuPy module, or a RuntimeError saying in one line why the GPU is unusable."""
    global _gpu_usable
    if _gpu_usable is None:
        reason = _probe()
        _gpu_usable = True if reason is None else reason
    if _gpu_usable is not True:
        raise RuntimeError(_gpu_usable)
    return _gpu_modules[0]


def gpu_available() -> bool:
    """True when CuPy imports and can multiply (and factorise) a matrix on a CUDA device."""
    try:
        _cupy()
    except RuntimeError:
        return False
    return True


def gpu_unavailable_reason() -> str | None:
    """Why device='gpu' cannot be used (one line), or None when it can."""
    try:
        _cupy()
    except RuntimeError as exc:
        return str(exc)
    return None


def gpu_name(index: int = 0) -> str:
    """The CUDA device's name (e.g. 'NVIDIA H100 80GB HBM3'), for logs and reports."""
    name = _cupy().cuda.runtime.getDeviceProperties(index)["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def check_device(device: str) -> str:
    """Validate a device name ('cpu' or 'gpu') and return it."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}: expected one of {DEVICES}")
    if device == "gpu":
        _cupy()
    return device


def xp_for(device: str):
    """The array module for a device name: numpy for 'cpu', cupy for 'gpu'."""
    return _cupy() if check_device(device) == "gpu" else np


def get_xp(*arrays):
    """The array module (numpy or cupy) the given arrays live in.

    Arrays that are None or Python scalars are ignored; with no array at all,
    NumPy is returned.  Mixing NumPy and CuPy arrays is an error.
    """
    xp = None
    for a in arrays:
        if a is None or isinstance(a, (int, float, bool, np.generic)):
            continue
        mod = np if isinstance(a, np.ndarray) else _module_of(a)
        if xp is None:
            xp = mod
        elif mod is not xp:
            raise TypeError(
                "arrays from different backends (NumPy and CuPy) were mixed; "
                "move them to one device with kfac_ref.backend.to_device"
            )
    return np if xp is None else xp


def _is_device_array(a) -> bool:
    if _gpu_modules is not None:
        return isinstance(a, _gpu_modules[0].ndarray)
    return type(a).__module__.split(".")[0] == "cupy"  # a CuPy array made before we imported CuPy


def _module_of(a):
    if _is_device_array(a):
        return _cupy()
    if type(a).__module__.split(".")[0] == "numpy":
        return np
    raise TypeError(f"expected a NumPy or CuPy array, got {type(a).__name__}")


def device_of(a) -> str:
    """'gpu' for a CuPy array, 'cpu' otherwise."""
    return "cpu" if get_xp(a) is np else "gpu"


def to_numpy(a):
    """Copy an array to host memory as a NumPy array (a no-op for NumPy input)."""
    if a is None or isinstance(a, np.ndarray):
        return a
    if _is_device_array(a):
        return a.get()
    return np.asarray(a)  # lists, scalars, NumPy scalars


def to_device(a, device: str):
    """Move an array to 'cpu' (NumPy) or 'gpu' (CuPy); no copy if already there."""
    if check_device(device) == "cpu":
        return to_numpy(a)
    return _cupy().asarray(a)


def synchronize(x=None) -> None:
    """Block until queued GPU work is done, so that a clock reading is honest.

    ``x`` is an array or an array module (numpy / cupy); a no-op for NumPy.
    """
    xp = x if x is np or (_gpu_modules is not None and x is _gpu_modules[0]) else get_xp(x)
    if xp is not np:
        xp.cuda.get_current_stream().synchronize()


def raising_linalg(xp):
    """A context in which xp.linalg raises LinAlgError on failure, as NumPy always does.

    CuPy's default (``cupyx.errstate(linalg='ignore')``) returns garbage or NaN
    silently when a Cholesky, solve or eigh fails; inside this context it checks
    the solver's status (one device→host sync per factorisation) and raises.
    """
    if xp is np:
        return nullcontext()
    return _gpu_modules[1].errstate(linalg="raise")


def solve_triangular(low, b, lower: bool = True):
    """Solve L x = b for a triangular L: SciPy on the CPU, cupyx.scipy on the GPU.

    (NumPy has no triangular solve; a general solve would cost an O(d³) LU.)
    """
    if get_xp(low, b) is np:
        from scipy.linalg import solve_triangular as solve
    else:
        solve = _gpu_modules[1].scipy.linalg.solve_triangular
    return solve(low, b, lower=lower, check_finite=False)
