"""Distributed optimizers on MPI, as in [O19] (Osawa et al., CVPR 2019): identical results on any number of ranks.

R ranks (processes started by ``mpiexec -n R``) share one global mini-batch of B samples.
Rank r computes on its contiguous slice of n_r samples (:func:`kfac_ref.mpi.shard`; uneven
splits allowed, Σ_r n_r = B) and three collective steps make the run the single-process run:

1. data parallelism, gradient:   ∇h = Σ_r (n_r/B) ∇h_r             one all-reduce of P + 1 numbers
2. data parallelism, statistics: ``C.statistic`` of this rank's slice, Σ_r (n_r/B) X_r by one
   all-reduce (symmetric statistics as upper triangles), then ``C.fold`` — the moving averages
   are updated identically on every rank.  Any structure whose statistic is a mean over samples.
3. model parallelism, refresh: for a structure that refreshes layer by layer (``refresh_layer`` /
   ``install``: K-FAC's Kronecker factors), layer l's inverse is computed on one rank,
   :func:`owners` (largest O(d³) cost first onto the least-loaded rank), then shared with every
   rank by one all-gather; any other structure refreshes on every rank (the same result).

Every rank holds the whole model, the data and the same random generator, so it draws the same
batch order and — from the *global* batch's outputs — the same Monte-Carlo targets as the
single-process run, then keeps its slice: the run does not depend on R.  Everything else (the
step, momentum, KL-clipping, the rescaling and the Levenberg–Marquardt test) is computed from
these global quantities and is the same on every rank.

Launch: ``mpiexec -n R python -m kfac_ref compare --distributed ...`` (docs/distributed.md).
"""

from __future__ import annotations

import numpy as np

from ..backend import get_xp, to_numpy
from ..backprop import backward, forward
from ..fisher.seeds import check_fisher_args, fisher_seeds
from ..grads import GradResult, check_batch
from ..jvp import fisher_gram_jvp
from ..mpi import Communicator, shard, shard_mean, world
from ..params import wbar_to_flat
from . import KFAC, SGD, KFACTridiag
from .preconditioned import sample_count


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


class DataParallel:
    """Mixin for any :class:`~kfac_ref.optim.base.Optimizer`: gradient on this rank's slice, summed.

    ``step(x, y, rng)`` takes the *global* batch (every rank the same); ``res.loss``,
    ``res.grad`` and ``res.layer_grads`` are global, ``res.trace`` and ``res.stats`` this rank's.
    """

    def __init__(self, *args, comm: Communicator | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.comm = world() if comm is None else comm

    def _slice(self, n: int, fraction: str | None = None) -> slice:
        """This rank's slice of the batch's n samples, or (``fraction``: the hyper-parameter that chose
        them) of its first n, m = fraction · B."""
        if fraction is None:
            return shard(n, self.comm.size, self.comm.rank)
        use = "the statistics" if fraction == "stats_fraction" else "the exact quadratic model"
        what = f"the subset m = {fraction} · B that {use} use"
        return shard(
            n, self.comm.size, self.comm.rank, what, f"raise {fraction} or the batch size (B), or use fewer ranks"
        )

    def check_batch_size(self, n: int) -> None:
        """Every rank needs a sample of a batch of n: refused before the first step (R ≤ B)."""
        self._slice(n)

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


class DataParallelCurvature(DataParallel):
    """Mixin for a :class:`~.preconditioned.Preconditioned` method: steps 2 and 3 of the module docstring."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.owners = owners([inversion_cost(layer) for layer in self.model.param_layers()], self.comm.size)

    def check_batch_size(self, n: int) -> None:
        """R ≤ B, and R ≤ m for the subsets a step uses (statistics; the exact model when rescaling or adapting λ)."""
        super().check_batch_size(n)
        self._slice(sample_count(self.stats_fraction, n), "stats_fraction")
        if self.rescale or self.adapt_damping:
            self._slice(sample_count(self.model_fraction, n), "model_fraction")

    def _shard_trace(self, res, x, m, fraction):
        """This rank's slice of the first m samples, and its forward trace (the gradient's when m = B)."""
        sl = self._slice(m, fraction)
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

    def batch_stats(self, res, x, y, rng):
        """This rank's statistics of its slice of the first m samples, and m."""
        check_fisher_args(self.kind, self.mc_samples, rng)
        m = sample_count(self.stats_fraction, x.shape[0])
        sl, trace = self._shard_trace(res, x, m, "stats_fraction")
        stats, _ = backward(self.model, trace, self._seeds(trace, y[:m], sl, m, rng))
        return stats, m

    def _update_curvature(self, stats, m):
        """[O19] step 2: this slice's statistic, Σ_r (n_r/m) X_r, then the structure's moving averages."""
        curv = self.curvature
        sl = self._slice(m, "stats_fraction")
        local = curv.statistic(stats, sl.stop - sl.start)
        names = list(local)
        flat = [arr for name in names for pair in local[name] for arr in pair]  # [A_1, G_1, A_2, …]
        sym = [name in curv.symmetric for name in names for pair in local[name] for _ in pair]
        glob = iter(shard_mean(self.comm, flat, sl.stop - sl.start, m, "statistics all-reduce", symmetric=sym))
        curv.fold({name: [tuple(next(glob) for _ in pair) for pair in local[name]] for name in names})

    def _refresh_curvature(self):
        """[O19] step 3: layer l's inverse on rank owners[l], then one all-gather shares them all."""
        curv, comm, gamma = self.curvature, self.comm, self.gamma
        if not hasattr(curv, "refresh_layer"):
            curv.refresh(gamma)  # the same on every rank
            return
        layers = self.model.param_layers()
        like = curv.factors[0][0]
        xp = get_xp(like)
        mine, error = {}, None
        with comm.clock("inversion", xp):
            for l in range(len(layers)):
                if self.owners[l] == comm.rank and error is None:
                    try:
                        mine[l] = curv.refresh_layer(l, gamma)
                    except (np.linalg.LinAlgError, ValueError) as exc:  # every rank must stop, not hang
                        error = f"rank {comm.rank}, layer {l} ({layers[l]!r}): {type(exc).__name__}: {exc}"
        errors = [e for e in comm.allgather_objects(error) if e is not None]
        if errors:
            raise np.linalg.LinAlgError("distributed inversion failed on " + "; ".join(errors))
        shapes = [curv.layer_shapes(layer) for layer in layers]
        sizes = [sum(int(np.prod(s)) for s in sh.values()) for sh in shapes]
        counts = [sum(sizes[l] for l in range(len(layers)) if self.owners[l] == r) for r in range(comm.size)]
        parts = [mine[l][k].ravel() for l in sorted(mine) for k in shapes[l]]
        send = xp.concatenate(parts) if parts else xp.empty(0, dtype=like.dtype)
        flat = comm.allgather(send, counts, "inverse sharing")
        # unpack: rank r's layers in order, at the offset of rank r's block
        offset = np.cumsum([0, *counts])
        pos = {r: int(offset[r]) for r in range(comm.size)}
        arrays = []
        for l in range(len(layers)):
            r, got = self.owners[l], {}
            for k, shape in shapes[l].items():
                n = int(np.prod(shape))
                got[k] = flat[pos[r] : pos[r] + n].reshape(shape)
                pos[r] += n
            arrays.append(got)
        curv.install(arrays, gamma)

    def _exact_gram(self, res, x, vectors):
        """[vᵢᵀ F vⱼ] of the first model_fraction of the batch: this rank's slice, Σ_r (n_r/m) Gram_r."""
        xp = get_xp(vectors[0])
        m = sample_count(self.model_fraction, x.shape[0])
        sl, trace = self._shard_trace(res, x, m, "model_fraction")
        gram = fisher_gram_jvp(self.model, self.loss_fn, trace, xp.stack(vectors))  # (k, k), mean over n_r
        return to_numpy(shard_mean(self.comm, [gram], sl.stop - sl.start, m, "control")[0])

    # The Levenberg–Marquardt test evaluates h(θ + δ) on the global batch on every rank:
    # exact and the same everywhere, but not split (one forward of B every T₁ steps).


class DistributedSGD(DataParallel, SGD):
    """SGD with the gradient all-reduced ([O19]'s data parallelism): identical to :class:`SGD` on B."""


class DistributedKFAC(DataParallelCurvature, KFAC):
    """K-FAC with [O19]'s data-parallel statistics and model-parallel inverses; identical to :class:`KFAC`."""


class DistributedKFACTridiag(DataParallelCurvature, KFACTridiag):
    """Block-tridiagonal K-FAC with data-parallel statistics; identical to :class:`KFACTridiag`."""


DISTRIBUTED = {"sgd": DistributedSGD, "kfac": DistributedKFAC, "kfac-tridiag": DistributedKFACTridiag}


def distributed_optimizer(name: str, model, loss_fn, comm: Communicator | None = None, **hyper):
    """The distributed version of optimizer ``name`` (a key of :data:`DISTRIBUTED`), same hyper-parameters."""
    if name not in DISTRIBUTED:
        raise ValueError(
            f"optimizer {name!r} has no distributed version yet: --distributed supports "
            f"{', '.join(DISTRIBUTED)} (NGD's dense Fisher, P² entries, is not all-reduced)"
        )
    return DISTRIBUTED[name](model, loss_fn, comm=comm, **hyper)
