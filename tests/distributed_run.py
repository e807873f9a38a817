"""One short training run, single-process or under ``mpiexec``; writes its records and θ to an .npz.

    python tests/distributed_run.py OUT.npz OPT [--distributed] [--model mlp|convnet] [--iterations K]

Used by tests/test_distributed.py: the same run on 1, 2 and 3 ranks must give the same history.
Rank 0 writes; the other ranks write nothing.  Every rank also reports a checksum of its final θ,
so the test sees that the ranks agree with each other.
"""

import argparse
import hashlib
import sys

import numpy as np

from kfac_ref import models, nn
from kfac_ref.data import load_dataset
from kfac_ref.optim import OPTIMIZERS
from kfac_ref.params import get_flat_params
from kfac_ref.train import RECORD_FIELDS, Trainer

# small settings that exercise every distributed path: MC targets, moving averages, T_inv > 1,
# rescaling with the exact model, Levenberg–Marquardt, weight decay, KL-clipping, exact damping
SETTINGS = {
    "sgd": {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3},
    "kfac": {
        "lr": 0.1,
        "momentum": 0.9,
        "damping": 0.3,
        "kind": "mc",
        "mc_samples": 2,
        "T_inv": 3,
        "ema_decay": 0.9,
        "weight_decay": 1e-3,
    },
    "kfac-rescale": {
        "lr": 1.0,
        "momentum": 0.0,
        "damping": 0.3,
        "kind": "mc",
        "T_inv": 2,
        "rescale": True,
        "kl_clip": None,
        "adapt_damping": True,
        "T_adapt": 2,
        "stats_fraction": 0.5,
    },
    "kfac-exact": {"lr": 0.1, "damping": 0.1, "kind": "exact", "damping_mode": "exact", "model_fraction": 0.5},
    "kfac-tridiag": {"lr": 0.1, "damping": 0.3, "kind": "mc", "T_inv": 2, "ema_decay": 0.9},
}
NAMES = {"kfac-tridiag": "kfac-tridiag"}  # a setting's optimizer, where it is not the name's first word


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("opt", choices=sorted(SETTINGS))
    p.add_argument("--distributed", action="store_true")
    p.add_argument("--model", choices=("mlp", "convnet"), default="mlp")
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    a = p.parse_args(argv)
    data = load_dataset("digits", dtype=np.float64).subset(n_train=512)
    if a.model == "mlp":
        data = data.flat()
        model = models.mlp(64, hidden=(24, 16), seed=0)
    else:
        model = models.convnet(channels=(4, 8), hidden=16, seed=0)
    name = NAMES.get(a.opt, a.opt.split("-")[0])
    rank = 0
    if a.distributed:
        from kfac_ref.mpi import world
        from kfac_ref.optim.distributed import distributed_optimizer

        comm = world()
        rank = comm.rank
        opt = distributed_optimizer(name, model, nn.CrossEntropyLoss(), comm, **SETTINGS[a.opt])
    else:
        opt = OPTIMIZERS[name](model, nn.CrossEntropyLoss(), **SETTINGS[a.opt])
    trainer = Trainer(opt, data, a.batch_size, np.random.default_rng(0), eval_every=3)
    hist = trainer.run(a.iterations)
    if hist.stopped:
        print(hist.stopped, file=sys.stderr)
        return 3
    theta = np.asarray(get_flat_params(model))
    if a.distributed:  # every rank holds the same θ, bit for bit
        sums = comm.allgather_objects(hashlib.sha256(theta.tobytes()).hexdigest()[:16])
        if len(set(sums)) != 1:
            print(f"ranks disagree on θ: {sums}", file=sys.stderr)
            return 4
    if rank == 0:
        cols = {
            k: np.array([np.nan if r[k] is None else r[k] for r in hist.records], dtype=float)
            for k in RECORD_FIELDS
            if k != "seconds"
        }
        np.savez(a.out, theta=theta, **cols)
    return 0


if __name__ == "__main__":
    sys.exit(main())
