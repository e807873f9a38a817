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

import numpy as np

DEVICES = ("cpu", "gpu")


def _cupy():
    """Import CuPy, or raise a clear error saying why it is unavailable."""
    try:
        import cupy  # noqa: PLC0415  (optional dependency, imported on demand)
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise RuntimeError(
            "device='gpu' needs CuPy, which is not installed: "
            "pip install 'kfac_ref[gpu]' (CuPy for CUDA 12) on a machine with an NVIDIA GPU"
        ) from exc
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # pragma: no cover - depends on the machine
        raise RuntimeError(f"device='gpu': CuPy is installed but no CUDA device is usable ({exc})") from exc
    if n < 1:  # pragma: no cover
        raise RuntimeError("device='gpu': CuPy is installed but found no CUDA device")
    return cupy


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        _cupy()
    except RuntimeError:
        return False
    return True


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
            raise TypeError("arrays from different backends (NumPy and CuPy) were mixed; "
                            "move them to one device with kfac_ref.backend.to_device")
    return np if xp is None else xp


def _module_of(a):
    name = type(a).__module__.split(".")[0]
    if name == "cupy":
        import cupy  # noqa: PLC0415
        return cupy
    if name == "numpy":
        return np
    raise TypeError(f"expected a NumPy or CuPy array, got {type(a).__name__}")


def device_of(a) -> str:
    """'gpu' for a CuPy array, 'cpu' otherwise."""
    return "cpu" if get_xp(a) is np else "gpu"


def to_numpy(a):
    """Copy an array to host memory as a NumPy array (a no-op for NumPy input)."""
    if a is None or isinstance(a, np.ndarray):
        return a
    if type(a).__module__.split(".")[0] == "cupy":
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
    xp = x if x is np or getattr(x, "__name__", None) == "cupy" else get_xp(x)
    if xp is not np:
        xp.cuda.get_current_stream().synchronize()


def solve_triangular(low, b, lower: bool = True):
    """Solve L x = b for a triangular L: SciPy on the CPU, cupyx.scipy on the GPU.

    (NumPy has no triangular solve; a general solve would cost an O(d³) LU.)
    """
    if get_xp(low) is np:
        from scipy.linalg import solve_triangular as solve  # noqa: PLC0415
    else:  # pragma: no cover - needs a GPU
        from cupyx.scipy.linalg import solve_triangular as solve  # noqa: PLC0415
    return solve(low, b, lower=lower, check_finite=False)
