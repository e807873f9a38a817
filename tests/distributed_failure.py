"""A distributed run that fails on purpose on one rank; every rank must end at once, none hang.

    mpiexec -n R python tests/distributed_failure.py MODE RANK [OUT]

MODE ``raise``: rank RANK raises a ValueError after the first training step (a reported error,
as the command line reports it); ``uncaught``: the same with an exception no one catches;
``sigint``: every rank writes its process id to OUT/ready.RANK, then rank RANK sleeps while
the others wait for it in a collective (to be interrupted, either one); ``out``:
``kfac-ref compare --distributed`` where only rank RANK's ``--out`` is a path under a regular
file (every other rank's is OUT/good).
"""

import os
import sys
import time

import numpy as np


def main(mode: str, bad: int, out: str | None = None) -> int:
    rank = int(os.environ.get("PMI_RANK", "0"))
    if mode == "out":
        from kfac_ref.cli import main as cli

        target = os.path.join(out, "file", "run") if rank == bad else os.path.join(out, "good")
        if rank == bad:
            open(os.path.join(out, "file"), "w").close()
        argv = ["compare", "--distributed", "--quick", "--quiet", "--optimizers", "sgd", "--out", target]
        return cli(argv)

    from kfac_ref import models, nn
    from kfac_ref.cli import main as _  # noqa: F401  (the command line's imports, as in a real run)
    from kfac_ref.data import load_dataset
    from kfac_ref.mpi import end_every_rank, world
    from kfac_ref.optim.distributed import distributed_optimizer
    from kfac_ref.train import Trainer

    comm = world()
    data = load_dataset("digits", dtype=np.float64).subset(n_train=256).flat()
    opt = distributed_optimizer(
        "kfac", models.mlp(64, hidden=(16,), seed=0), nn.CrossEntropyLoss(), comm, lr=0.1, damping=0.3
    )
    trainer = Trainer(opt, data, 64, np.random.default_rng(0), eval_every=5)
    trainer.run(1)
    if mode == "sigint":  # announce this rank's process id, atomically
        tmp = os.path.join(out, f".{comm.rank}.tmp")
        with open(tmp, "w") as f:
            f.write(str(os.getpid()))
        os.replace(tmp, os.path.join(out, f"ready.{comm.rank}"))
    if comm.rank == bad:
        if mode == "sigint":
            time.sleep(120)
        elif mode == "uncaught":
            raise RuntimeError("injected failure")
        elif mode == "raise":
            try:
                raise ValueError("injected failure")
            except ValueError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return end_every_rank(1, f"ValueError: {exc}")
    trainer.run(100)  # the other ranks wait in the next step's collectives
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:]))
