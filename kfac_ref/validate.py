"""The argument checks every module shares: flags, numbers, damping, sizes, random generators.

Each check names the argument (its symbol in the papers where there is one) and
what was expected, and returns the value in its plain Python form.  The error
types are those users catch:

- a value of the wrong *type* (a string, a boolean where a number belongs, None
  where a generator belongs) is a ``TypeError``;
- a value of the right type outside its range (negative, NaN, zero where it
  must be positive) is a ``ValueError``.

Damping is the one exception: an argument that is not a number is a
:class:`NotANumberError`, which is both (``except TypeError`` and
``except ValueError`` both catch it), because the optimizers have always
raised ``TypeError`` for it and ``fisher_plot`` ``ValueError``.

Arrays whose size comes from an argument or a file are checked before NumPy
is asked for them (:func:`check_allocation`): a request larger than the
machine's memory is a ``MemoryError`` that names the array, its shape and its
size in GiB, never NumPy's own "Unable to allocate".

Random generators follow one rule for ``None`` (:func:`as_rng`): randomness is
explicit, so ``None`` is refused — unless the caller documents a default seed
and passes it as ``default``, in which case ``None`` means that seed, never
fresh entropy and never global state (docs/style.md §7).
"""

from __future__ import annotations

import math
import os

import numpy as np


class NotANumberError(TypeError, ValueError):
    """An argument that should be a number is not one (a string, a boolean, None, …)."""


def _is_number(value) -> bool:
    """A real Python or NumPy scalar number, not a boolean."""
    return not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, float, np.integer, np.floating))


def check_flag(name: str, value) -> bool:
    """Validate an on/off option: only True/False (or ``numpy.bool_``), never a truthy string or number."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return bool(value)


def check_number(name: str, value, *, low=None, high=None, low_open=False, integer=False):
    """Validate a hyper-parameter, naming its symbol in the error.

    ``low ≤ value ≤ high`` (``low < value`` with ``low_open``); ``integer`` also
    requires a whole number and returns an ``int``, otherwise a ``float``.
    """
    if not _is_number(value):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):  # before int(): int(nan) would say "cannot convert float NaN"
        raise ValueError(f"{name} must be finite, got {value!r}")
    if integer and int(value) != value:
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{name} must be {'>' if low_open else '≥'} {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be ≤ {high}, got {value!r}")
    return int(value) if integer else float(value)


def check_damping(damping, name: str = "damping", *, strict: bool = False) -> float:
    """λ (or γ) as a float: a finite real number, ≥ 0, or > 0 with ``strict=True``.

    ``strict=False`` is what the optimizers and solvers need (λ = 0 is the undamped
    method); ``strict=True`` is for inverting a Fisher that may be singular, as the
    dense inverses of a small batch's Fisher in ``fisher_plot`` are.
    """
    if not _is_number(damping):
        raise NotANumberError(f"{name} (λ) must be a number, got {damping!r}")
    value = float(damping)
    if strict and not (math.isfinite(value) and value > 0):  # also catches NaN
        raise ValueError(f"{name} (λ) must be a finite number > 0, got {damping!r}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} (λ) must be ≥ 0 and finite, got {value}")
    return value


def check_positive_int(who: str, **values) -> None:
    """Every keyword value must be an integer ≥ 1 (not a boolean): ``check_positive_int("make_images", n=n)``."""
    for key, value in values.items():
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{who}: {key} must be a positive integer, got {value!r}")


def memory_bytes() -> int | None:
    """The machine's physical memory in bytes, or None where the platform does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def gib(n_bytes: int) -> str:
    """A byte count as GiB for messages: 51539607552 -> '48.0 GiB'."""
    return f"{n_bytes / 2**30:,.1f} GiB"


def check_allocation(who: str, shape, dtype, *, what: str = "an array", limit: int | None = None) -> int:
    """Refuse an array that cannot fit before it is allocated; return its size in bytes.

    The size, prod(shape) × itemsize, is computed with Python integers (no
    overflow).  Above ``limit`` bytes (default: the machine's physical memory,
    :func:`memory_bytes`) it is a ``MemoryError`` naming ``who``, ``what``, the
    shape, the dtype and both sizes, e.g. "make_images: x of shape (…) and
    float64 needs 48.0 GiB, more than this machine's 23.4 GiB of memory".
    """
    dtype = np.dtype(dtype)
    shape = tuple(int(d) for d in shape)
    n_bytes = math.prod(shape) * dtype.itemsize
    limit = memory_bytes() if limit is None else limit
    if limit is not None and n_bytes > limit:
        raise MemoryError(
            f"{who}: {what} of shape {shape} and {dtype} needs {gib(n_bytes)}, more than "
            f"this machine's {gib(limit)} of memory; expected a smaller size"
        )
    return n_bytes


def as_rng(rng, who: str, *, default: int | None = None) -> np.random.Generator:
    """A ``numpy.random.Generator`` from a Generator or an int seed.

    The one rule for ``None``: refused (``TypeError``), unless ``default`` is given,
    in which case ``None`` means ``numpy.random.default_rng(default)``.  An int seed
    s means ``numpy.random.default_rng(s)``; the same seed, the same numbers.
    """
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None and default is not None:
        return np.random.default_rng(default)
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, (bool, np.bool_)):
        return np.random.default_rng(int(rng))
    accepted = (
        "a np.random.Generator, an int seed or None" if default is not None else "a np.random.Generator or an int seed"
    )
    raise TypeError(f"{who}: rng must be {accepted}, got {type(rng).__name__}")


# ---- saved state (checkpoints): every entry against what the model implies ----------------
def check_state_number(where: str, value, *, low=None, integer: bool = False, optional: bool = False):
    """A saved scalar: None (if ``optional``) or a finite number (an integer) ≥ ``low``; ValueError naming ``where``."""
    if value is None and optional:
        return None
    if not _is_number(value) or (integer and not isinstance(value, (int, np.integer))):
        raise ValueError(f"{where} is {value!r}, expected {'an integer' if integer else 'a finite number'}")
    if not math.isfinite(value):
        raise ValueError(f"{where} is {value!r}, expected a finite number")
    if low is not None and value < low:
        raise ValueError(f"{where} is {value!r}, expected ≥ {low}")
    return value


def check_state_array(where: str, value, shape, *, low=None, optional: bool = False, orthonormal: bool = False):
    """A saved array: None (if ``optional``), else a finite floating array of exactly ``shape``.

    ``shape`` may be nested lists of shapes (per layer, per pair), matched entry by entry;
    ``low``: every value ≥ low (scalings, second moments); ``orthonormal``: UᵀU = I to the
    dtype's rounding (eigenbases).  ValueError naming the entry and what was expected.
    """
    if value is None:
        if optional:
            return
        raise ValueError(f"{where} is missing (null), expected {_describe(shape)}")
    if isinstance(shape, list):
        if not isinstance(value, (list, tuple)) or len(value) != len(shape):
            got = f"a list of {len(value)} entries" if isinstance(value, (list, tuple)) else f"a {type(value).__name__}"
            raise ValueError(f"{where} is {got}, expected {_describe(shape)}")
        for i, (v, s) in enumerate(zip(value, shape)):
            check_state_array(f"{where}[{i}]", v, s, low=low, orthonormal=orthonormal)
        return
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{where} is a {type(value).__name__}, expected an array of shape {tuple(shape)}")
    if value.dtype.kind != "f":
        raise ValueError(f"{where} is an array of {value.dtype}, expected floating values")
    if value.shape != tuple(shape):
        raise ValueError(f"{where} is an array of shape {value.shape}, expected {tuple(shape)}")
    if not np.isfinite(value).all():
        raise ValueError(f"{where} is an array with NaN/Inf values, expected finite values")
    if low is not None and value.size and value.min() < low:
        raise ValueError(f"{where} has an entry {float(value.min())!r} < {low}, expected every entry ≥ {low}")
    if orthonormal:
        n = value.shape[0]
        eps = np.finfo(value.dtype).eps
        error = float(np.abs(value.T @ value - np.eye(n, dtype=value.dtype)).max()) if n else 0.0
        if error > max(eps**0.5, 10 * n * eps):
            raise ValueError(f"{where} is not orthonormal (max |UᵀU − I| = {error:.3g}), expected an eigenbasis")


def _describe(shape) -> str:
    if isinstance(shape, list):
        inner = ", ".join(_describe(s) for s in shape[:3]) + (", …" if len(shape) > 3 else "")
        return f"a list of {len(shape)} entries ({inner})"
    return f"an array of shape {tuple(shape)}"
