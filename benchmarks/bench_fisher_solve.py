"""Exact natural gradient two ways: the dense Fisher + Cholesky against Woodbury (docs/math.md §7).

For digits MLPs and ConvNets with P ≈ 10³, 3·10³ and 10⁴ parameters, a batch of
N = 128 real digits (``--batch``) in float64, and each Fisher kind ("exact",
"mc" with M = 1, "empirical"), the same damped direction (F + λI)⁻¹ g, g the
batch gradient, is computed

    dense     F = kfac_ref.fisher.dense(...)                  (P, P)   build: O(P² K)
              kfac_ref.fisher.dense_solve(F, g, λ)                     Cholesky: O(P³/3)
    woodbury  kfac_ref.fisher.woodbury_solve(model, loss, x, y, g, λ, kind)
              = fisher_stats (backprop the seeds)  +  woodbury_solve_from_stats
                (Gram V Vᵀ (K, K), K×K Cholesky): O(P K² + K³)

with K = S·N backpropagated vectors (S = C = 10 for "exact", 1 otherwise).
Woodbury is timed end to end (it backpropagates its own seeds), and its two
parts are timed on their own as well.  Each repetition runs every method in
turn (build, solve, woodbury, backprop, pure solve), so all see the same
machine state; the table gives medians.  Dense at P ≈ 10⁴ takes seconds, so
the number of repetitions of a case is cut to fit ``--budget`` seconds, and
the cheap Woodbury methods then take several turns per repetition (``--reps``
timings in all: column "reps" reads dense/Woodbury).  For "mc", dense and
Woodbury get generators with the same seed, hence the same sampled labels.
The relative difference of the two directions is printed (it must be
≤ 1e-9; the exit status is 1 otherwise).

Goal: Woodbury ≥ 20× faster than the dense solve at P ≈ 10⁴.

    python benchmarks/bench_fisher_solve.py                    # the full table (a few minutes)
    python benchmarks/bench_fisher_solve.py --quick            # smoke run, P ≈ 10³ (seconds)
    python benchmarks/bench_fisher_solve.py --kinds exact --models mlp --json fisher_solve.json
    python benchmarks/bench_fisher_solve.py --threads 1        # steadier on a busy machine

Run from the repository root; kfac_ref need not be installed.  The dense
exact Fisher at P ≈ 10⁴ is 800 MB (peak ≈ 3× that during the solve).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

# This checkout's kfac_ref, even where another one is installed in the environment.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import limit_blas_threads, machine_info  # noqa: E402  (benchmarks/common.py)

import kfac_ref  # noqa: E402
from kfac_ref import fisher, nn
from kfac_ref.backend import synchronize, to_device, to_numpy, xp_for
from kfac_ref.data import load_digits
from kfac_ref.fisher.solve import woodbury_solve_from_stats
from kfac_ref.models import convnet, mlp
from kfac_ref.params import layer_slices

KINDS = ("exact", "mc", "empirical")

# The sizes: one hidden layer MLP, P = 75 h + 10;  ConvNet (two 3×3 convs, 8×8 inputs),
# P = 10 c₁ + c₂ (9 c₁ + 1) + (4 c₂ + 1) h + 10 (h + 1).  P ≈ 10³, 3·10³, 10⁴ in each family.
MLP_HIDDEN = (13, 40, 133)  # P = 985, 3010, 9985
CONV_SIZES = (((4, 8), 16), ((8, 16), 24), ((16, 32), 37))  # (channels, hidden): P = 1034, 3058, 9953
MODELS = {  # family → [(label, builder(device))]
    "mlp": [
        (f"mlp(64, hidden=({h},))", lambda device, h=h: mlp(64, hidden=(h,), num_classes=10, device=device))
        for h in MLP_HIDDEN
    ],
    "convnet": [
        (
            f"convnet(channels={ch}, hidden={h})",
            lambda device, ch=ch, h=h: convnet(channels=ch, hidden=h, num_classes=10, device=device),
        )
        for ch, h in CONV_SIZES
    ],
}
METHODS = ("dense_build", "dense_solve", "woodbury", "wood_backprop", "wood_solve")
REL_TOL = 1e-9  # dense and Woodbury must give the same direction to this relative error
GOAL = 20.0  # dense solve / Woodbury at P ≈ 10⁴
LEGEND = """\
build = fisher.dense, solve = fisher.dense_solve (Cholesky); woodbury = fisher.woodbury_solve end to end
      = backprop (fisher_stats) + solve (woodbury_solve_from_stats);
b+s/W = (build + solve) / woodbury, s/W = solve / woodbury; rel err = ‖woodbury − dense‖ / ‖dense‖.
Woodbury pays off when K ≪ P: for 'exact' K = C·N = 1280, so at P ≈ 10³ its (K, K) system is the larger one."""


# ---- machine ---------------------------------------------------------------------------
# ---- timing ----------------------------------------------------------------------------
def timed(fn, xp):
    """(result, seconds) of one call, the device drained before each clock reading."""
    synchronize(xp)
    t0 = time.perf_counter()
    out = fn()
    synchronize(xp)
    return out, time.perf_counter() - t0


def bench_case(family, label, build, data, kind, args):
    """Time the dense and Woodbury solves of one model and one Fisher kind."""
    xp = xp_for(args.device)
    model = build(args.device)
    loss = nn.CrossEntropyLoss()
    x, y = data[family]
    g = kfac_ref.batch_grad(model, loss, x, y)  # (P,) the direction to precondition
    n, p, lam = x.shape[0], model.num_params, args.damping
    max_bytes = 4 * p * p * np.dtype(model.dtype).itemsize  # generous: F is P² entries

    def rng():  # a fresh generator per call: dense and Woodbury sample the same labels
        return np.random.default_rng(args.seed) if kind == "mc" else None

    calls = {  # in the order they run within each repetition
        "dense_build": lambda: fisher.dense(model, loss, x, y, kind, rng=rng(), max_bytes=max_bytes),
        "dense_solve": lambda: fisher.dense_solve(f_dense, g, lam),
        "woodbury": lambda: fisher.woodbury_solve(model, loss, x, y, g, lam, kind, rng=rng()),
        "wood_backprop": lambda: fisher.fisher_stats(model, loss, x, y, kind, rng())[0],
        "wood_solve": lambda: woodbury_solve_from_stats(stats, g, lam, n, layer_slices(model)),
    }
    times = {m: [] for m in METHODS}

    def one_round(wood_turns=1):
        """Every method once, in order; the (cheap) Woodbury ones ``wood_turns`` times."""
        nonlocal f_dense, stats
        out = {}
        for m in METHODS[:2] + METHODS[2:] * wood_turns:
            out[m], t = timed(calls[m], xp)
            times[m].append(t)
            if m == "dense_build":
                f_dense = out[m]
            elif m == "wood_backprop":
                stats = out[m]
        return out

    f_dense = stats = None
    t0 = time.perf_counter()
    first = one_round()  # warm-up (allocations, BLAS threads); also the correctness check
    warm = time.perf_counter() - t0
    del first["dense_build"]  # keep one (P, P) matrix alive, not two
    for ts in times.values():
        ts.clear()
    # As many rounds as fit the budget; Woodbury gets ≥ args.reps timings even with one round.
    reps = max(1, min(args.reps, int(args.budget / warm)))
    wood_turns = -(-args.reps // reps)  # ⌈reps / rounds⌉
    for _ in range(reps):
        one_round(wood_turns)
    f_dense = stats = None  # free the (P, P) matrix before the next case

    d, w, w2 = (to_numpy(first[m]) for m in ("dense_solve", "woodbury", "wood_solve"))
    row = {
        "family": family,
        "model": label,
        "P": p,
        "kind": kind,
        "N": n,
        "K": int(first["wood_backprop"][0].g.shape[0]) * n,
        "damping": lam,
        "reps": reps,
        "wood_reps": reps * wood_turns,
        "rel_err": float(np.linalg.norm(w - d) / np.linalg.norm(d)),
        "rel_err_from_stats": float(np.linalg.norm(w2 - d) / np.linalg.norm(d)),
    }
    for m in METHODS:
        row[f"{m}_s"] = statistics.median(times[m])
    row["ratio_build_solve"] = (row["dense_build_s"] + row["dense_solve_s"]) / row["woodbury_s"]
    row["ratio_solve"] = row["dense_solve_s"] / row["woodbury_s"]
    return row


# ---- report ----------------------------------------------------------------------------
def fmt_ratio(r):
    return f"{r:.1f}×" if r < 10 else f"{r:.0f}×"


def fmt_s(t):
    return f"{t:.2f} s" if t >= 1 else f"{1e3 * t:.1f} ms" if t >= 1e-2 else f"{1e3 * t:.2f} ms"


def print_header(info, args):
    print(
        f"kfac_ref {info['kfac_ref']}  numpy {info['numpy']}  python {info['python']}  "
        f"device {info['device']}{' (' + info['gpu'] + ')' if 'gpu' in info else ''}"
    )
    print(
        f"cpu_count {info['cpu_count']}  BLAS {info['blas'] or '?'} threads {info['blas_threads'] or '?'}  "
        f"load average {info.get('loadavg_start', '?')}"
    )
    print(
        f"batch N = {args.batch} digits, float64, λ = {args.damping:g}, medians of ≤ {args.reps} timings "
        f"(dense: ≤ {args.budget:g} s per case)\n"
    )


COLUMNS = (
    f"{'P':>6} {'kind':<9}{'K':>5}{'reps':>6} | {'build':>9}{'solve':>10} | {'woodbury':>9}"
    f"{'backprop':>10}{'solve':>9} | {'b+s/W':>7}{'s/W':>7} | {'rel err':>8}"
)


def print_row(r):
    flag = "" if r["rel_err"] <= REL_TOL and r["rel_err_from_stats"] <= REL_TOL else "  > 1e-9 !"
    reps = f"{r['reps']}/{r['wood_reps']}"
    print(
        f"{r['P']:>6} {r['kind']:<9}{r['K']:>5}{reps:>6} | {fmt_s(r['dense_build_s']):>9}"
        f"{fmt_s(r['dense_solve_s']):>10} | {fmt_s(r['woodbury_s']):>9}{fmt_s(r['wood_backprop_s']):>10}"
        f"{fmt_s(r['wood_solve_s']):>9} | {fmt_ratio(r['ratio_build_solve']):>7}{fmt_ratio(r['ratio_solve']):>7} | "
        f"{r['rel_err']:>8.1e}{flag}",
        flush=True,
    )


def print_goal(rows):
    """The goal, on the exact Fisher of the largest model of each family."""
    print(f"\ngoal: dense solve / Woodbury ≥ {GOAL:g} at P ≈ 10⁴ (exact Fisher; Woodbury end to end)")
    for family in MODELS:
        exact = [r for r in rows if r["family"] == family and r["kind"] == "exact"]
        if not exact:
            continue
        r = max(exact, key=lambda r: r["P"])
        if r["P"] < 5000:
            print(f"  {family:<8} largest P = {r['P']:,} < 5,000: run without --quick/--max-params")
            continue
        ok = "met" if r["ratio_solve"] >= GOAL else "MISSED"
        print(
            f"  {family:<8} P = {r['P']:,}: {fmt_s(r['dense_solve_s'])} / {fmt_s(r['woodbury_s'])} = "
            f"{fmt_ratio(r['ratio_solve'])}  ({ok}; dense build + solve: {fmt_ratio(r['ratio_build_solve'])})"
        )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=128, help="batch size N (default 128)")
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated subset of {list(KINDS)}")
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {list(MODELS)}")
    ap.add_argument("--max-params", type=float, default=2e4, help="skip models with more parameters")
    ap.add_argument("--reps", type=int, default=5, help="most timed repetitions per case (default 5)")
    ap.add_argument(
        "--budget",
        type=float,
        default=20.0,
        help="seconds per case: repetitions = min(reps, budget / warm-up time) (default 20)",
    )
    ap.add_argument("--damping", type=float, default=1e-3, help="λ (default 1e-3)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the MC labels (default 0)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "gpu"), help="'gpu' needs CuPy")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="limit NumPy's BLAS to this many threads (threadpoolctl); steadier on a busy machine",
    )
    ap.add_argument("--quick", action="store_true", help="smoke run: P ≈ 10³ only, 1 repetition")
    ap.add_argument("--json", metavar="PATH", help="also save the results as JSON")
    args = ap.parse_args(argv)
    if args.quick:
        args.max_params, args.reps = min(args.max_params, 1500), 1
    kinds, families = args.kinds.split(","), args.models.split(",")
    for chosen, known in ((kinds, KINDS), (families, MODELS)):
        bad = [k for k in chosen if k not in known]
        if bad:
            ap.error(f"unknown {bad}: expected a subset of {list(known)}")

    t_start = time.perf_counter()
    _limiter = limit_blas_threads(args.threads) if args.threads else None  # noqa: F841 (kept alive)
    xp_for(args.device)  # a clear error now if 'gpu' is asked for without CuPy
    info = machine_info(args.device)
    ds = load_digits().subset(n_train=args.batch)  # the first N training digits (a shuffled split)
    data = {
        "mlp": (ds.flat().x_train, ds.y_train),  # (N, 64), (N,)
        "convnet": (ds.x_train, ds.y_train),
    }  # (N, 1, 8, 8), (N,)
    data = {k: (to_device(x, args.device), to_device(y, args.device)) for k, (x, y) in data.items()}
    print_header(info, args)
    load = info.get("loadavg_start", [0.0])[0]
    if load > 0.5:
        print(
            f"warning: load average {load:.2f} before starting: other processes are using the CPU, "
            f"so timings are noisy (--threads 1 steadies them)\n",
            file=sys.stderr,
        )

    rows = []
    for family in families:
        chosen = [(label, build) for label, build in MODELS[family] if build("cpu").num_params <= args.max_params]
        print(f"{family}: " + ", ".join(label for label, _ in chosen))
        print(COLUMNS)
        print("-" * len(COLUMNS))
        for label, build in chosen:
            for kind in kinds:
                row = bench_case(family, label, build, data, kind, args)
                rows.append(row)
                print_row(row)
        print()
    print(LEGEND)
    print_goal(rows)
    info["runtime_s"] = round(time.perf_counter() - t_start, 1)
    if hasattr(os, "getloadavg"):
        info["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    print(f"\ntotal runtime {info['runtime_s']:.0f} s;  load average at the end {info.get('loadavg_end', '?')}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": info, "args": vars(args), "results": rows}, fh, indent=2)
        print(f"saved {args.json}")
    bad = [r for r in rows if max(r["rel_err"], r["rel_err_from_stats"]) > REL_TOL]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
