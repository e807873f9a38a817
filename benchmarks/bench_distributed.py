"""Distributed K-FAC ([O19]): per-step time by phase and bytes per step, on R = 1, 2, 4 MPI ranks.

    python benchmarks/bench_distributed.py [--ranks 1,2,4] [--steps 5] [--batch 64]

The script launches itself under the venv's ``mpiexec -n R`` (one BLAS thread per rank) for each
model — the CIFAR-shaped ConvNet (3×32×32 synthetic images, channels 8-16-16) and a deep MLP
(8 hidden layers of 256, where model-parallel inversion pays) — with K-FAC refreshing every
factor and inverse at every step (T_cov = T_inv = 1: the worst case for communication).

Per step, on rank 0: compute (forward, backward, factors, the step), gradient all-reduce,
statistics all-reduce (with the all-gather of the outputs for the Monte-Carlo targets),
inversion (this rank's layers only), inverse sharing (the all-gather), and the payload in bytes
this rank puts into the collectives, measured by :class:`kfac_ref.mpi.Communicator`, next
to the analytic count of :func:`kfac_ref.experiments.sizes.payload_entries` (all-reduce: per rank; all-gathers:
summed over ranks).  On a 2-core machine R = 4 oversubscribes the cores: read the ratios, not the times.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MODELS = ("cifar-convnet", "deep-mlp")


def build(name, batch):
    from kfac_ref import models
    from kfac_ref.data.synthetic import make_classification, make_images

    rng = np.random.default_rng(0)
    if name == "cifar-convnet":
        x, y = make_images(batch, 3, 32, 32, 10, rng)
        return models.convnet(in_shape=(3, 32, 32), channels=(8, 16, 16), seed=0), x, y
    x, y = make_classification(batch, 256, 10, rng)
    return models.mlp(256, hidden=(256,) * 8, num_classes=10, seed=0), x, y


def worker(args) -> int:
    """One measurement under mpiexec: rank 0 prints a JSON line."""
    from kfac_ref import nn
    from kfac_ref.experiments.sizes import payload_entries
    from kfac_ref.mpi import LABELS, world
    from kfac_ref.optim.distributed import DistributedKFAC

    comm = world()
    model, x, y = build(args.model, args.batch)
    opt = DistributedKFAC(model, nn.CrossEntropyLoss(), comm=comm, kind="mc", T_cov=1, T_inv=1)
    rng = np.random.default_rng(0)
    for _ in range(2):  # warm-up
        opt.step(x, y, rng)
    comm.reset_counters()
    comm.barrier()
    start = time.perf_counter()
    for _ in range(args.steps):
        opt.step(x, y, rng)
    total = (time.perf_counter() - start) / args.steps
    sec = {k: v / args.steps for k, v in comm.seconds.items()}
    sent = {k: v / args.steps for k, v in comm.bytes.items()}
    # all-gathers: sum the ranks' parts (each rank sends only its own)
    summed = {k: sum(comm.allgather_objects(sent[k])) for k in ("outputs all-gather", "inverse sharing")}
    if comm.rank == 0:
        analytic = {k: 8 * v for k, v in payload_entries(model, args.batch, "mc").items()}
        print(
            json.dumps(
                {
                    "model": args.model,
                    "ranks": comm.size,
                    "params": model.num_params,
                    "total": total,
                    "seconds": sec,
                    "bytes": {**sent, **summed},
                    "analytic": analytic,
                    "layers": len(model.param_layers()),
                    "labels": list(LABELS),
                }
            )
        )
    return 0


def fmt_bytes(n):
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", default="1,2,4")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    mpiexec = Path(sys.executable).parent / "mpiexec"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    print(
        f"# Distributed K-FAC per step (T_cov = T_inv = 1, batch {args.batch}, float64, "
        f"{os.cpu_count()} cores; R > cores oversubscribes: compare ratios)\n"
    )
    print(
        "| model | R | step (×R=1) | compute | grad all-reduce | stats all-reduce | inversion | "
        "inverse sharing | bytes: grad | stats | inverses (Σ ranks) | analytic = measured |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        base = None
        for r in (int(v) for v in args.ranks.split(",")):
            cmd = [
                str(mpiexec),
                "-n",
                str(r),
                sys.executable,
                __file__,
                "--worker",
                "--model",
                name,
                "--steps",
                str(args.steps),
                "--batch",
                str(args.batch),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
            if proc.returncode:
                print(proc.stderr, file=sys.stderr)
                return proc.returncode
            d = json.loads(proc.stdout.strip().splitlines()[-1])
            s, b, a = d["seconds"], d["bytes"], d["analytic"]
            comm_s = sum(s.values())
            compute = d["total"] - comm_s
            base = base or d["total"]
            stats = s["statistics all-reduce"] + s["outputs all-gather"]
            ok = all(abs(b[k] - a[k]) < 0.5 for k in a)

            def pct(v, total=d["total"]):
                return f"{1e3 * v:.1f} ms ({100 * v / total:.0f}%)"

            print(
                f"| {name} (P = {d['params']:,}, {d['layers']} layers) | {r} | {1e3 * d['total']:.0f} ms "
                f"(×{d['total'] / base:.2f}) | {pct(compute)} | {pct(s['gradient all-reduce'])} | {pct(stats)} | "
                f"{pct(s['inversion'])} | {pct(s['inverse sharing'])} | {fmt_bytes(b['gradient all-reduce'])} | "
                f"{fmt_bytes(b['statistics all-reduce'] + b['outputs all-gather'])} | "
                f"{fmt_bytes(b['inverse sharing'])} | {'yes' if ok else 'NO'} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
