"""Keep freed memory in the process: glibc's malloc thresholds, set by the command line.

By default glibc hands large freed blocks back to the operating system: a block over its mmap
threshold is mapped afresh on every allocation, and a free top of the heap over its trim threshold
is returned.  A training step allocates temporaries of the same sizes as the step before
(activations, patches, gradients), so the kernel page-faults and zeroes that memory again every
step: system CPU time, a fifth of ``kfac-ref compare`` on the digits ConvNet.  Raising both
thresholds to 1 GiB makes malloc reuse the freed blocks, and one arena for all threads keeps the
blocks of samples that run on threads (``model.workers``) from mapping theirs afresh (a thread's
own arena grows only in 64 MiB heaps).  Measured in docs/benchmarks.md ("The command line's
memory").

It is a setting of the whole process, so importing kfac_ref never makes it: the ``kfac-ref`` command
does, when it starts (:func:`for_command_line`), and the benchmarks with ``--tune-malloc``.  It
leaves malloc as it is on a C library other than glibc, with ``KFAC_REF_MALLOC=system``, or when the
user has set one of glibc's own ``MALLOC_*`` variables or ``GLIBC_TUNABLES`` (and not
``KFAC_REF_MALLOC=tuned``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

ENV = "KFAC_REF_MALLOC"
CHOICES = ("tuned", "system")
#: glibc's own settings: a user who set one has chosen, and the command line keeps out of the way
GLIBC_VARS = (
    "GLIBC_TUNABLES",
    "MALLOC_ARENA_MAX",
    "MALLOC_MMAP_MAX_",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_TRIM_THRESHOLD_",
)
THRESHOLD = 1 << 30  # bytes: freed blocks up to 1 GiB stay in the process
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8  # from glibc's <malloc.h>

_state = "system (not set by kfac_ref)"


def state() -> str:
    """What this process's malloc runs with, as :func:`for_command_line` left it (history.json's "malloc")."""
    return _state


def _mallopt():
    """glibc's ``mallopt``, or None on another C library."""
    path = ctypes.util.find_library("c")
    if path is None:
        return None
    try:
        return ctypes.CDLL(path).mallopt
    except (OSError, AttributeError):  # not glibc
        return None


def tune_malloc():
    """Raise glibc's mmap and trim thresholds to :data:`THRESHOLD` and use one arena: True if all three
    settings took, False if glibc refused one, None (nothing set) on another C library."""
    mallopt = _mallopt()
    if mallopt is None:
        return None
    settings = ((_M_MMAP_THRESHOLD, THRESHOLD), (_M_TRIM_THRESHOLD, THRESHOLD), (_M_ARENA_MAX, 1))
    took = [bool(mallopt(key, value)) for key, value in settings]  # every setting is tried
    return all(took)


def for_command_line(environ=None) -> str:
    """Tune malloc for a ``kfac-ref`` command unless the environment says otherwise; returns (and records
    for :func:`state`) what malloc runs with.  ``KFAC_REF_MALLOC=system`` leaves malloc alone, as does
    a glibc variable the user set (:data:`GLIBC_VARS`) unless ``KFAC_REF_MALLOC=tuned`` asks for the
    setting anyway.  ValueError, before anything is set, for any other ``KFAC_REF_MALLOC``."""
    global _state
    environ = os.environ if environ is None else environ
    choice = environ.get(ENV)
    if choice is not None and choice not in CHOICES:
        raise ValueError(f"{ENV}={choice!r}: expected one of {', '.join(CHOICES)}")
    user_set = [name for name in GLIBC_VARS if name in environ]
    if choice == "system":
        _state = f"system ({ENV}=system)"
    elif user_set and choice is None:  # KFAC_REF_MALLOC=tuned overrides them
        _state = f"system ({', '.join(user_set)} set)"
    else:
        outcome = tune_malloc()
        _state = {
            True: "tuned (mmap and trim thresholds 1 GiB, one arena)",
            False: "partly tuned (glibc refused a setting)",
            None: "system (not glibc)",
        }[outcome]
    return _state


__all__ = ["CHOICES", "ENV", "GLIBC_VARS", "THRESHOLD", "for_command_line", "state", "tune_malloc"]
