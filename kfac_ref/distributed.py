"""Distributed K-FAC on MPI, as in [O19] (Osawa et al., CVPR 2019): identical results on any number of ranks.

R ranks (processes started by ``mpiexec -n R``) share one global mini-batch of B
samples.  Rank r computes on its contiguous slice of n_r samples (uneven splits
allowed, Σ_r n_r = B) and three collective steps make the run the single-process
run ([O19]):

1. data parallelism, gradient:  ∇h = Σ_r (n_r/B) ∇h_r                 one all-reduce of P + 1 numbers
2. data parallelism, statistics: A_l = Σ_r (n_r/B) A_{l,r}, G_l likewise   one all-reduce of the packed
   upper triangles (Ω, Γ for Conv2d); the moving averages are then updated identically on every rank
3. model parallelism, inverses: layer l's damped inverse (or eigendecomposition) is computed on
   one rank, :func:`owners` (largest O(d³) cost first onto the least-loaded rank), then shared
   with every rank by one all-gather.

Every rank holds the whole model, the data and the same random generator, so it
draws the same batch order and — from the *global* batch's outputs — the same
Monte-Carlo targets as the single-process run, then keeps its slice: the run does
not depend on R.  Everything else (the step, momentum, KL-clipping, the rescaling and
the Levenberg–Marquardt test) is computed from these global quantities and is the same
on every rank.  The single 1/B of every distributed average sits in :func:`shard_mean`.

Arrays may be NumPy or CuPy (backend by inference): with ``cuda_aware=True`` CuPy
buffers go to MPI directly (``__cuda_array_interface__``, needs a CUDA-aware MPI);
by default they are staged through host memory (one copy each way per collective).

Launch: ``mpiexec -n R python -m kfac_ref compare --distributed ...`` (docs/distributed.md).
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager

import numpy as np

from .backend import device_of, get_xp, synchronize, to_device, to_numpy
from .backprop import backward, forward
from .fisher.kfac import factors_from_stats
from .fisher.kron import EigenInverse, FactoredInverse
from .fisher.seeds import fisher_seeds
from .grads import GradResult, check_batch
from .jvp import fisher_gram_jvp
from .optim.base import needs_rng
from .optim.kfac import KFAC
from .optim.sgd import SGD
from .params import wbar_to_flat

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


def launched_by_mpi() -> bool:
    """True when an MPI launcher (mpiexec, mpirun, srun) started this process."""
    return any(v in os.environ for v in LAUNCHER_VARS)


def world(cuda_aware: bool = False) -> Communicator:
    """MPI_COMM_WORLD, with clear errors when mpi4py or the launcher is missing.

    One rank (``mpiexec -n 1``) is allowed: it is the R = 1 baseline, with the same code path.
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

    return Communicator(MPI.COMM_WORLD, MPI.SUM, cuda_aware)


# ---- splitting the batch and the layers ---------------------------------------------------
def shard(n: int, size: int, rank: int) -> slice:
    """Rank r's contiguous slice of n samples: [⌊r n/R⌋, ⌊(r+1) n/R⌋) — sizes differ by at most 1."""
    if size > n:
        raise ValueError(
            f"{size} ranks (R) exceed the {n} samples of the batch (B): every rank needs a sample; use R ≤ B"
        )
    return slice(rank * n // size, (rank + 1) * n // size)


def shard_mean(comm: Communicator, parts, n_local: int, n_total: int, label: str, symmetric: bool = False):
    """X = Σ_r (n_r / N) X_r from every rank's shard means X_r — the 1/N of the run's averages ([O19]).

    parts : arrays X_r (each a mean over this rank's n_r samples); with ``symmetric`` only
    their upper triangles travel (d(d+1)/2 of d² entries, [O19]'s symmetry-aware packing).
    Returns the global means, shapes as given, the same on every rank.
    """
    xp = get_xp(*parts)
    weight = n_local / n_total  # n_r / N
    if symmetric:
        flat = [p[xp.triu_indices(p.shape[0])] for p in parts]  # (d(d+1)/2,)
    else:
        flat = [p.ravel() for p in parts]
    total = comm.allreduce_sum(weight * xp.concatenate(flat), label)
    out, start = [], 0
    for p, f in zip(parts, flat):
        piece = total[start : start + f.size]
        start += f.size
        if symmetric:
            full = xp.empty_like(p)
            iu = xp.triu_indices(p.shape[0])
            full[iu] = piece
            full.T[iu] = piece  # the lower triangle from the upper
            out.append(full)
        else:
            out.append(piece.reshape(p.shape))
    return out


def inversion_cost(layer) -> int:
    """O(d³) work of inverting (or diagonalising) one layer's factors: a_dim³ + d_out³."""
    return layer.a_dim**3 + layer.g_dim**3


def owners(costs, size: int) -> list[int]:
    """Rank that inverts each layer: largest cost first onto the least-loaded rank (ties: lowest rank).

    The rule of [O19] ("each GPU inverts the factors of some layers"), balanced by O(d³) cost.
    """
    load, owner = [0] * size, [0] * len(costs)
    for l in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        r = min(range(size), key=lambda k: (load[k], k))
        owner[l] = r
        load[r] += costs[l]
    return owner


# The arrays of one layer's inverse and their shapes, from (a_dim, d_out): what travels in step 3.
INVERSE_ARRAYS = {
    FactoredInverse: lambda a, g: {"a_inv": (a, a), "g_inv": (g, g)},
    EigenInverse: lambda a, g: {"u_a": (a, a), "d_a": (a,), "u_g": (g, g), "d_g": (g,)},
}


# ---- the distributed optimizers -----------------------------------------------------------
class DataParallel:
    """Mixin for any :class:`~kfac_ref.optim.base.Optimizer`: gradient on this rank's slice, summed.

    ``step(x, y, rng)`` takes the *global* batch (every rank the same); ``res.loss``,
    ``res.grad`` and ``res.layer_grads`` are global, ``res.trace`` and ``res.stats`` this rank's.
    """

    def __init__(self, *args, comm: Communicator | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.comm = world() if comm is None else comm

    def _slice(self, n: int) -> slice:
        return shard(n, self.comm.size, self.comm.rank)

    def _forward_backward(self, x, y):
        """[O19] step 1: h and ∇_{W̄} h on this rank's slice, then Σ_r (n_r/B) (h_r, ∇h_r)."""
        check_batch(self.model, self.loss_fn, x, y)
        sl = self._slice(x.shape[0])
        res = super()._forward_backward(x[sl], y[sl])
        xp = get_xp(res.grad)
        loss = xp.asarray([res.loss], dtype=res.grad.dtype)  # (1,): travels with the gradient
        out = shard_mean(self.comm, [loss, *res.layer_grads], sl.stop - sl.start, x.shape[0], "gradient all-reduce")
        layer_grads = out[1:]
        grad = xp.concatenate([wbar_to_flat(st.layer, m) for st, m in zip(res.stats, layer_grads)])  # (P,)
        return GradResult(loss=float(out[0][0]), grad=grad, trace=res.trace, stats=res.stats, layer_grads=layer_grads)


class DistributedSGD(DataParallel, SGD):
    """SGD with the gradient all-reduced ([O19]'s data parallelism): identical to :class:`SGD` on B."""

    name = "sgd"


class DistributedKFAC(DataParallel, KFAC):
    """K-FAC with [O19]'s data-parallel statistics and model-parallel inverses; identical to :class:`KFAC`."""

    name = "kfac"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.owners = owners([inversion_cost(layer) for layer in self.model.param_layers()], self.comm.size)

    def _shard_trace(self, res, x, m):
        """This rank's slice of the first m samples, and its forward trace (the gradient's when m = B)."""
        sl = self._slice(m)
        trace = res.trace if m == x.shape[0] else forward(self.model, x[:m][sl])
        return sl, trace

    def _seeds(self, trace, y, sl, m, rng):
        """Fisher seeds of this rank's slice.  For 'mc' the targets are drawn for all m samples from the
        all-gathered outputs — the draws of the single-process run — and sliced.  (S, n_r, C)"""
        if self.kind != "mc":
            return fisher_seeds(self.loss_fn, trace.output, y[sl], self.kind, rng, self.mc_samples)
        f = trace.output  # (n_r, C)
        c = f.shape[1]
        counts = [
            (shard(m, self.comm.size, r).stop - shard(m, self.comm.size, r).start) * c for r in range(self.comm.size)
        ]
        f_all = self.comm.allgather(f.ravel(), counts, "outputs all-gather").reshape(m, c)  # (m, C)
        return fisher_seeds(self.loss_fn, f_all, None, "mc", rng, self.mc_samples)[:, sl]  # (M, n_r, C)

    def _update_factors(self, res, x, y, rng):
        """[O19] step 2: factors of this rank's slice, Σ_r (n_r/m) (A_r, G_r), then KFAC's moving averages."""
        needs_rng(self.kind, rng)
        m = self._stats_size(x.shape[0])
        sl, trace = self._shard_trace(res, x, m)
        stats, _ = backward(self.model, trace, self._seeds(trace, y[:m], sl, m, rng))
        local = [f for pair in factors_from_stats(stats) for f in pair]  # [A_1, G_1, A_2, …]
        glob = shard_mean(self.comm, local, sl.stop - sl.start, m, "statistics all-reduce", symmetric=True)
        self._fold_factors(list(zip(glob[0::2], glob[1::2])))  # KFAC's moving averages, unchanged

    def _refresh_inverses(self):
        """[O19] step 3: layer l's inverse on rank owners[l], then one all-gather shares them all."""
        cls = FactoredInverse if self.damping_mode == "factored" else EigenInverse
        layers, comm = self.model.param_layers(), self.comm
        xp = get_xp(self.factors[0][0])
        mine, error = {}, None
        with comm.clock("inversion", xp):
            for l, (a, g) in enumerate(self.factors):
                if self.owners[l] == comm.rank and error is None:
                    try:
                        mine[l] = cls.from_factors(a, g, self.gamma)
                    except (np.linalg.LinAlgError, ValueError) as exc:  # every rank must stop, not hang
                        error = f"rank {comm.rank}, layer {l} ({layers[l]!r}): {type(exc).__name__}: {exc}"
        errors = [e for e in comm.allgather_objects(error) if e is not None]
        if errors:
            raise np.linalg.LinAlgError("distributed inversion failed on " + "; ".join(errors))
        shapes = [INVERSE_ARRAYS[cls](layer.a_dim, layer.g_dim) for layer in layers]
        sizes = [sum(int(np.prod(s)) for s in sh.values()) for sh in shapes]
        counts = [sum(sizes[l] for l in range(len(layers)) if self.owners[l] == r) for r in range(comm.size)]
        parts = [getattr(mine[l], k).ravel() for l in sorted(mine) for k in shapes[l]]
        send = xp.concatenate(parts) if parts else xp.empty(0, dtype=self.factors[0][0].dtype)
        flat = comm.allgather(send, counts, "inverse sharing")
        # unpack: rank r's layers in order, at the offset of rank r's block
        offset = np.cumsum([0, *counts])
        pos = {r: int(offset[r]) for r in range(comm.size)}
        inverses = []
        for l in range(len(layers)):
            r, arrays = self.owners[l], {}
            for k, shape in shapes[l].items():
                n = int(np.prod(shape))
                arrays[k] = flat[pos[r] : pos[r] + n].reshape(shape)
                pos[r] += n
            if cls is EigenInverse:
                arrays["gamma"] = self.gamma
            inverses.append(cls(**arrays))
        self.inverses = inverses
        self.inverse_damping = self.gamma

    def _exact_gram(self, res, x, vectors):
        """[vᵢᵀ F vⱼ] of the first model_fraction of the batch: this rank's slice, Σ_r (n_r/m) Gram_r."""
        xp = get_xp(vectors[0])
        m = max(1, int(round(self.model_fraction * x.shape[0])))
        sl, trace = self._shard_trace(res, x, m)
        gram = fisher_gram_jvp(self.model, self.loss_fn, trace, xp.stack(vectors))  # (k, k), mean over n_r
        return to_numpy(shard_mean(self.comm, [gram], sl.stop - sl.start, m, "control")[0])

    # The Levenberg–Marquardt test (KFAC._after_update) evaluates h(θ + δ) on the global batch on
    # every rank: exact and the same everywhere, but not split (one forward of B every T₁ steps).


DISTRIBUTED = {"sgd": DistributedSGD, "kfac": DistributedKFAC}


def distributed_optimizer(name: str, model, loss_fn, comm: Communicator | None = None, **hyper):
    """The distributed version of optimizer ``name`` ('sgd' or 'kfac'), same hyper-parameters."""
    if name not in DISTRIBUTED:
        raise ValueError(
            f"optimizer {name!r} has no distributed version yet: --distributed supports "
            f"{', '.join(DISTRIBUTED)} (NGD's dense Fisher, P² entries, is not all-reduced)"
        )
    return DISTRIBUTED[name](model, loss_fn, comm=comm, **hyper)


__all__ = [
    "DISTRIBUTED",
    "Communicator",
    "DataParallel",
    "DistributedKFAC",
    "DistributedSGD",
    "distributed_optimizer",
    "launched_by_mpi",
    "owners",
    "shard",
    "shard_mean",
    "world",
]
