"""MPI transport for data- and model-parallel runs ([O19]): the collectives, and how a batch is split.

:class:`Communicator` wraps an mpi4py communicator with the three collectives of [O19]
(all-reduce, all-gather, small objects), counting the bytes and seconds of each label.
:func:`shard` gives rank r its contiguous slice of a batch; :func:`shard_mean` turns every
rank's shard means into the global mean, Σ_r (n_r / N) X_r — the single 1/N of a distributed average.

Arrays may be NumPy or CuPy (backend by inference): with ``cuda_aware=True`` CuPy buffers go
to MPI directly (``__cuda_array_interface__``, needs a CUDA-aware MPI); by default they are
staged through host memory (one copy each way per collective).

No rank waits for ever: in a run of R > 1 ranks, an error or an interrupt on one rank ends
every rank with a message naming it (:func:`end_every_rank`, MPI_Abort).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from contextlib import contextmanager

import numpy as np

from .backend import device_of, get_xp, synchronize, to_device, to_numpy

# Environment variables an MPI launcher sets (MPICH/Hydra, Intel MPI: PMI_*; Open MPI: OMPI_*; PMIx, e.g. srun)
LAUNCHER_VARS = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK")
LABELS = (
    "gradient all-reduce",
    "statistics all-reduce",
    "outputs all-gather",
    "inversion",
    "inverse sharing",
    "control",
)


# ---- the communicator --------------------------------------------------------------------
class Communicator:
    """An mpi4py communicator with the three collectives of [O19], counting bytes and seconds.

    ``bytes[label]``: payload this rank put into the collectives of that label (an all-reduce:
    the whole buffer; an all-gather: this rank's part); ``seconds[label]``: wall-clock time.
    """

    def __init__(self, comm, sum_op, cuda_aware: bool = False):
        self.comm, self.sum_op, self.cuda_aware = comm, sum_op, bool(cuda_aware)  # sum_op: MPI.SUM
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.reset_counters()

    def reset_counters(self) -> None:
        self.bytes = dict.fromkeys(LABELS, 0)
        self.seconds = dict.fromkeys(LABELS, 0.0)

    @contextmanager
    def clock(self, label: str, xp=np):
        """Time a labelled piece of work (GPU synchronised)."""
        synchronize(xp)
        start = time.perf_counter()
        try:
            yield
        finally:
            synchronize(xp)
            self.seconds[label] += time.perf_counter() - start

    def _buffer(self, x):
        """What MPI reads: the array itself (NumPy, or CuPy with CUDA-aware MPI), else a host copy."""
        if get_xp(x) is np or self.cuda_aware:
            synchronize(get_xp(x))
            return get_xp(x).ascontiguousarray(x)
        return np.ascontiguousarray(to_numpy(x))  # host staging

    def _back(self, buf, like):
        return buf if get_xp(buf) is get_xp(like) else to_device(buf, device_of(like))

    def allreduce_sum(self, x, label: str):
        """Σ_r x_r, the same on every rank.  (n,) → (n,)"""
        with self.clock(label, get_xp(x)):
            send = self._buffer(x)
            recv = get_xp(send).empty_like(send)
            self.comm.Allreduce(send, recv, op=self.sum_op)
            self.bytes[label] += send.nbytes
            return self._back(recv, x)

    def allgather(self, x, counts, label: str):
        """[x_0, …, x_{R−1}] concatenated on every rank; rank r sends counts[r] entries.  (n_r,) → (Σ n_r,)"""
        with self.clock(label, get_xp(x)):
            send = self._buffer(x)
            if send.size != counts[self.rank]:
                raise ValueError(f"rank {self.rank}: all-gather of {send.size} entries, expected {counts[self.rank]}")
            recv = get_xp(send).empty(int(sum(counts)), dtype=send.dtype)
            self.comm.Allgatherv(send, [recv, list(counts)])
            self.bytes[label] += send.nbytes
            return self._back(recv, x)

    def barrier(self) -> None:
        self.comm.Barrier()

    def allgather_objects(self, obj, label: str = "control") -> list:
        """Small Python objects from every rank (errors, checks); pickled."""
        with self.clock(label):
            return self.comm.allgather(obj)

    def abort(self, message: str, status: int = 1):
        """Print one line naming this rank and ``message``, then end every rank (MPI_Abort); never returns.

        The other ranks may be waiting in a collective this rank will never join: only an
        abort of the communicator ends them.
        """
        print(f"kfac-ref: rank {self.rank} of {self.size}: {message}; ending all {self.size} ranks", file=sys.stderr)
        sys.stderr.flush()
        sys.stdout.flush()
        time.sleep(0.2)  # the launcher forwards the message before it tears the job down
        self.comm.Abort(status)


# ---- no rank waits for ever: a failure or an interrupt on one rank ends them all ------------
_ENDING = {"comm": None}  # the multi-rank communicator whose ranks end together (set by world())


def rank_label() -> str:
    """ " (rank r of R)" in a multi-rank run, else "" — for messages that must say which rank speaks."""
    comm = _ENDING["comm"]
    return "" if comm is None else f" (rank {comm.rank} of {comm.size})"


def end_every_rank(status: int, message: str = "failed") -> int:
    """In a multi-rank run: abort every rank with ``status`` (never returns); else return ``status``.

    For a command that has reported its error and would exit: exiting alone would leave the
    other ranks waiting in their next collective for ever.
    """
    comm = _ENDING["comm"]
    if comm is not None and status != 0:
        comm.abort(message, status)
    return status


def _end_together(comm: Communicator) -> None:
    """From now on an interrupt (SIGINT) or an uncaught exception on this rank ends every rank.

    SIGINT: Python's C handler writes the signal's number to a socket (``signal.set_wakeup_fd``)
    from whichever thread receives it; a watcher thread reads it and aborts — even while the
    main thread is blocked inside a collective, where no Python handler would run.
    """
    _ENDING["comm"] = comm
    previous_hook = sys.excepthook

    def hook(kind, exc, tb):
        previous_hook(kind, exc, tb)
        comm.abort(f"{kind.__name__}: {exc}", 1)

    sys.excepthook = hook
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return  # the program handles (or ignores) interrupts itself
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    signal.signal(signal.SIGINT, lambda signum, frame: None)  # the watcher thread acts
    signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)

    def watch():
        reader.recv(1)
        comm.abort("interrupted (SIGINT)", 130)

    threading.Thread(target=watch, name="kfac-ref SIGINT watcher", daemon=True).start()
    _ENDING["sockets"] = (reader, writer)  # kept open for the life of the process


def launched_by_mpi() -> bool:
    """True when an MPI launcher (mpiexec, mpirun, srun) started this process."""
    return any(v in os.environ for v in LAUNCHER_VARS)


def world(cuda_aware: bool = False) -> Communicator:
    """MPI_COMM_WORLD, with clear errors when mpi4py or the launcher is missing.

    One rank (``mpiexec -n 1``) is allowed: it is the R = 1 baseline, with the same code path.
    With R > 1 ranks, an interrupt (SIGINT) or an uncaught exception on any rank ends every
    rank at once with a message naming the rank (MPI_Abort); a command that reports its own
    error calls :func:`end_every_rank`.
    """
    try:
        import mpi4py  # noqa: F401, PLC0415  (the package only: importing mpi4py.MPI starts MPI)
    except ImportError as exc:
        raise RuntimeError(
            "--distributed needs mpi4py and an MPI implementation: "
            "pip install 'kfac_ref[mpi]' (mpi4py + the mpich wheel, which ships mpiexec)"
        ) from exc
    if not launched_by_mpi():
        raise RuntimeError(
            "--distributed: this process was not started by an MPI launcher (none of "
            f"{', '.join(LAUNCHER_VARS)} is set); run it as "
            "`mpiexec -n R python -m kfac_ref compare --distributed ...`"
        )
    from mpi4py import MPI  # noqa: PLC0415

    comm = Communicator(MPI.COMM_WORLD, MPI.SUM, cuda_aware)
    if comm.size > 1:
        _end_together(comm)
    return comm


# ---- splitting the batch and the layers ---------------------------------------------------
def shard(n: int, size: int, rank: int, what: str = "the batch (B)", remedy: str = "use R ≤ B") -> slice:
    """Rank r's contiguous slice of n samples: [⌊r n/R⌋, ⌊(r+1) n/R⌋) — sizes differ by at most 1.

    ``what``: the n samples, for the message when R > n (the batch, or the statistics subset m).
    """
    if size > n:
        raise ValueError(f"{size} ranks (R) exceed the {n} samples of {what}: every rank needs a sample; {remedy}")
    return slice(rank * n // size, (rank + 1) * n // size)


def shard_mean(comm: Communicator, parts, n_local: int, n_total: int, label: str, symmetric=False):
    """X = Σ_r (n_r / N) X_r from every rank's shard means X_r — the 1/N of the run's averages ([O19]).

    parts : arrays X_r (each a mean over this rank's n_r samples); with ``symmetric`` only
    their upper triangles travel (d(d+1)/2 of d² entries, [O19]'s symmetry-aware packing);
    ``symmetric`` may also be one flag per part.
    Returns the global means, shapes as given, the same on every rank.
    """
    xp = get_xp(*parts)
    weight = n_local / n_total  # n_r / N
    sym = list(symmetric) if isinstance(symmetric, (list, tuple)) else [symmetric] * len(parts)
    flat = [p[xp.triu_indices(p.shape[0])] if s else p.ravel() for p, s in zip(parts, sym)]  # (d(d+1)/2,) or all
    total = comm.allreduce_sum(weight * xp.concatenate(flat), label)
    out, start = [], 0
    for p, f, s in zip(parts, flat, sym):
        piece = total[start : start + f.size]
        start += f.size
        if s:
            full = xp.empty_like(p)
            iu = xp.triu_indices(p.shape[0])
            full[iu] = piece
            full.T[iu] = piece  # the lower triangle from the upper
            out.append(full)
        else:
            out.append(piece.reshape(p.shape))
    return out
