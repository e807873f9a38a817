"""Distributed comparison runs on MPI ([O19]), and the communication cost model.

The transport is :mod:`kfac_ref.mpi`; the distributed optimizers (data-parallel statistics,
model-parallel refresh) are :mod:`kfac_ref.optim.distributed`.  Here: the comparison on R
ranks (:func:`run_compare_distributed`) and the analytic count of what travels per step.

Launch: ``mpiexec -n R python -m kfac_ref compare --distributed ...`` (docs/distributed.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .backend import to_numpy
from .fisher.kron import inverse_shapes
from .mpi import LABELS, Communicator, launched_by_mpi, shard, shard_mean, world
from .optim.distributed import (
    DISTRIBUTED,
    DataParallel,
    DistributedKFAC,
    DistributedSGD,
    distributed_optimizer,
    owners,
)


# ---- the comparison, distributed ------------------------------------------------------------
def run_compare_distributed(cfg, out, comm: Communicator | None = None, progress_factory=None, log=print):
    """:func:`kfac_ref.experiments.compare.run_compare` on R ranks; rank 0 logs, shows progress and writes.

    Every rank trains every optimizer (each on its slices); the records are the single-process
    run's.  Other ranks write nothing and return None; rank 0 returns the summary.
    """
    from . import nn  # noqa: PLC0415
    from .experiments.compare import build_model, load_data, settings_for, write_outputs  # noqa: PLC0415
    from .experiments.summary import format_summary  # noqa: PLC0415
    from .params import get_flat_params, set_flat_params  # noqa: PLC0415
    from .train import Trainer  # noqa: PLC0415

    comm = world() if comm is None else comm
    if cfg.grid:
        raise ValueError(
            "--grid is not supported with --distributed: pick the settings with a "
            "single-process grid search, then pass them"
        )
    for name in cfg.optimizers:
        if name not in DISTRIBUTED:
            distributed_optimizer(name, None, None, comm)  # raises, naming it
    shard(cfg.batch_size, comm.size, 0)  # R ≤ B, before any work
    lead = comm.rank == 0
    log = log if lead else (lambda *a, **k: None)
    progress_factory = progress_factory if lead else None
    data = load_data(cfg)
    theta0 = to_numpy(get_flat_params(build_model(cfg, data)))
    log(
        f"{cfg.dataset} on {comm.size} MPI rank(s): global batch {cfg.batch_size} "
        f"({cfg.batch_size // comm.size}–{-(-cfg.batch_size // comm.size)} samples per rank)"
    )
    runs = []
    for name in cfg.optimizers:
        model = build_model(cfg, data)
        set_flat_params(model, theta0)
        opt = distributed_optimizer(name, model, nn.CrossEntropyLoss(), comm, **settings_for(cfg, name))
        trainer = Trainer(opt, data, cfg.batch_size, np.random.default_rng(cfg.seed), cfg.eval_every)
        bar = progress_factory(name, cfg.iterations) if progress_factory else None
        hist = trainer.run(cfg.iterations, bar)
        if bar is not None:
            bar.close()
        if hist.stopped:
            log(f"{name}: {hist.stopped}")
        runs.append(
            {"optimizer": name, "settings": settings_for(cfg, name), "records": hist.records, "stopped": hist.stopped}
        )
    summary = None
    if lead:
        summary = write_outputs(Path(out), cfg, runs, None)
        log(format_summary(summary))
    comm.barrier()  # no rank exits before rank 0 has written
    return summary


def inverse_entries(layer, damping_mode: str = "factored") -> int:
    """Entries of one layer's shared inverse (step 3's payload)."""
    return sum(int(np.prod(s)) for s in inverse_shapes(damping_mode, layer.a_dim, layer.g_dim).values())


def payload_entries(model, batch: int, kind: str = "mc", damping_mode: str = "factored") -> dict:
    """The analytic count of entries per K-FAC step (what :class:`Communicator` measures, in entries).

    gradient all-reduce    P + 1 (the loss travels with ∇h), per rank
    statistics all-reduce  Σ_l a(a+1)/2 + d(d+1)/2 (upper triangles), per rank
    outputs all-gather     B·C over all ranks ('mc' only)
    inverse sharing        Σ_l inverse entries, over all ranks (each layer once, by its owner)
    """
    layers = model.param_layers()
    return {
        "gradient all-reduce": model.num_params + 1,
        "statistics all-reduce": sum(l.a_dim * (l.a_dim + 1) // 2 + l.g_dim * (l.g_dim + 1) // 2 for l in layers),
        "outputs all-gather": batch * layers[-1].g_dim if kind == "mc" else 0,
        "inverse sharing": sum(inverse_entries(l, damping_mode) for l in layers),
    }


__all__ = [
    "DISTRIBUTED",
    "LABELS",
    "Communicator",
    "DataParallel",
    "DistributedKFAC",
    "DistributedSGD",
    "distributed_optimizer",
    "launched_by_mpi",
    "owners",
    "payload_entries",
    "run_compare_distributed",
    "shard",
    "shard_mean",
    "world",
]


# ---- the cost model at [O19]'s scale ---------------------------------------------------------
def communication_per_step(rows, params: int, ranks: int) -> dict:
    """Entries each rank sends per step, with ring collectives, from a size table ([O19]'s scale).

    rows : :class:`kfac_ref.experiments.sizes.LayerSize` (d_in, d_out per layer);  params : P (all of them).
    An all-reduce of n entries sends 2 (R−1)/R · n per rank (reduce-scatter, then all-gather);
    an all-gather (or a reduce-scatter) of n entries in all sends (R−1)/R · n per rank.

    - gradient: all-reduce of P;
    - factors: all-reduce of Σ d_in² + d_out² (full), or of the upper triangles Σ d(d+1)/2
      ("packed", [O19]'s symmetry-aware communication, what this module sends), or a
      reduce-scatter of the packed factors to their owners (half the all-reduce);
    - inverses: all-gather of Σ d_in² + d_out² (packed: Σ d(d+1)/2).
    """
    f = (ranks - 1) / ranks
    full = sum(r.a_entries + r.g_entries for r in rows)
    packed = sum(
        r.groups * (r.d_in * (r.d_in + 1) // 2) + r.groups * (r.d_out_per_group * (r.d_out_per_group + 1) // 2)
        for r in rows
    )
    return {
        "gradient": 2 * f * params,
        "factors": 2 * f * full,
        "factors, packed": 2 * f * packed,
        "factors, packed, reduce-scatter": f * packed,
        "inverses": f * full,
        "inverses, packed": f * packed,
    }
