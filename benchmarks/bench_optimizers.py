"""The cost of one optimizer step, relative to SGD, split into phases.

For the digits MLP ``models.mlp(64, hidden=(64,))`` on ``load_digits(flatten=True)``
and the digits ConvNet ``models.convnet()`` on ``load_digits()``, a batch of
N = 128 (``--batch``) in float64 (``--dtype``), every optimizer below takes steps
through the one interface

    opt = Cls(model, loss_fn, lr=..., **hyper);   info = opt.step(x, y, rng)

and the table gives, per optimizer, the wall-clock ms of ``opt.step`` (mean and
median over the timed steps), the mean's ratio to SGD's, and the mean ms of each
phase of ``info["times"]`` (forward_backward, curvature, inversion, update; GPU
synchronised).  "other" = step − Σ phases: work ``step`` does outside the four
phases (the Levenberg–Marquardt forward pass of adapt_damping) and overhead.

    row            optimizer and hyper-parameters (lr small: nothing may diverge while timed)
    sgd            SGD(momentum=0.9)
    ngd-dense      NGD(kind="exact", solver="dense")        build F (P, P), Cholesky
    ngd-woodbury   NGD(kind="exact", solver="woodbury")     (C·N, C·N) system
    block-ngd      BlockNGD(kind="exact")                   exact layer blocks, Cholesky each
    kfac           KFAC()  the class defaults: kind="mc", T_inv=20, T_cov=1
    kfac-tinv1     KFAC(T_inv=1)                            inverses refreshed every step
    kfac-exact     KFAC(kind="exact")                       C seeds per sample for the factors
    kfac-rescale   KFAC(rescale=True, kl_clip=None, model_fraction=0.125) [MG15] §7 (α, μ) from the exact F on N/8
                   samples (without model_fraction where KFAC lacks that hyper-parameter)
    kfac-adapt     KFAC(adapt_damping=True)                 [MG15] §6.5 LM rule, every T₁ = 5 steps

How it is timed.  Each optimizer has its own copy of the model (same seed) and
its own seeded stream of batches (the same batches for all) and MC generator.
The optimizers take their steps round-robin — round r is one step of every
optimizer, starting with a different one each round — so a slow spell of the
machine hits all of them alike.  After ``--warmup`` untimed rounds come
``--steps`` timed rounds (default 40: two whole T_inv = 20 periods, so K-FAC's
mean is the amortised cost of its inverse refreshes).  The three exact-Fisher NGD
rows cost seconds per step at P ≈ 4·10³ and do no periodic work, so they step in
only ``--ngd-steps`` of the rounds (default 4, spread evenly; one warm-up step).

Goal (issue acceptance): a K-FAC step (T_inv = 20) ≤ 1.5× an SGD step on the ConvNet.

    python benchmarks/bench_optimizers.py                     # both models, all rows (a few minutes)
    python benchmarks/bench_optimizers.py --quick             # smoke run, < 15 s (no dense NGD; not amortised)
    python benchmarks/bench_optimizers.py --threads 1         # steadier on a busy machine
    python benchmarks/bench_optimizers.py --models convnet --rows sgd,kfac --steps 60
    python benchmarks/bench_optimizers.py --json results/bench_optimizers.json
    python benchmarks/bench_optimizers.py --device gpu        # needs CuPy

Run from the repository root; kfac_ref need not be installed.  ``--threads``
sets OPENBLAS/MKL/OMP_NUM_THREADS before NumPy is imported (when run as a
script) and limits the BLAS pool with threadpoolctl when it is installed.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import sys
import time
from pathlib import Path

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS")


def _threads_before_numpy(argv):
    """Honour ``--threads T`` through the environment: BLAS reads it once, when NumPy is imported."""
    for i, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if arg.startswith("--threads=") else \
            argv[i + 1] if arg == "--threads" and i + 1 < len(argv) else None
        if value is not None and value.isdigit():
            for var in THREAD_VARS:
                os.environ[var] = value


if __name__ == "__main__":
    _threads_before_numpy(sys.argv[1:])

import numpy as np  # noqa: E402  (after the thread variables)

try:
    import kfac_ref  # noqa: E402, F401  (only to find the package)
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kfac_ref import nn  # noqa: E402
from kfac_ref.backend import synchronize, to_device, xp_for  # noqa: E402
from kfac_ref.data import BatchStream, load_digits  # noqa: E402
from kfac_ref.models import convnet, mlp  # noqa: E402
from kfac_ref.optim import KFAC, NGD, PHASES, SGD, BlockNGD  # noqa: E402

from common import limit_blas_threads, machine_info  # noqa: E402  (benchmarks/common.py)

LR = 0.01  # small: the timings must not depend on convergence, and nothing may diverge
GOAL = 1.5  # K-FAC (T_inv = 20) / SGD on the ConvNet
GOAL_MODEL, GOAL_ROW = "convnet", "kfac"
MODELS = {  # name → (builder(dtype, device), flatten the digits?)
    "mlp": (lambda dtype, device: mlp(64, hidden=(64,), dtype=dtype, device=device), True),
    "convnet": (lambda dtype, device: convnet(dtype=dtype, device=device), False),
}
# [MG15] §7 on a fraction of the batch, where this version of KFAC has the hyper-parameter
_RESCALE = dict(rescale=True, kl_clip=None, model_fraction=0.125) if "model_fraction" in inspect.signature(KFAC).parameters \
    else dict(rescale=True, kl_clip=None)
# key → (label, class, hyper-parameters, one of the slow exact-Fisher NGD rows?)
ROWS = {
    "sgd": ("SGD μ=0.9", SGD, dict(momentum=0.9), False),
    "ngd-dense": ("NGD dense, exact F", NGD, dict(kind="exact", solver="dense"), True),
    "ngd-woodbury": ("NGD Woodbury, exact F", NGD, dict(kind="exact", solver="woodbury"), True),
    "block-ngd": ("BlockNGD, exact F", BlockNGD, dict(kind="exact"), True),
    "kfac": ("K-FAC T_inv=20 (mc)", KFAC, dict(), False),
    "kfac-tinv1": ("K-FAC T_inv=1", KFAC, dict(T_inv=1), False),
    "kfac-exact": ("K-FAC kind=exact", KFAC, dict(kind="exact"), False),
    "kfac-rescale": ("K-FAC rescale (§7)" + (", f=1/8" if "model_fraction" in _RESCALE else ""), KFAC,
                     _RESCALE, False),
    "kfac-adapt": ("K-FAC adapt_damping", KFAC, dict(adapt_damping=True), False),
}
QUICK_SKIP = ("ngd-dense", "block-ngd")  # --quick leaves out the rows with a Cholesky of size ≈ P


# ---- machine ---------------------------------------------------------------------------
# ---- timing ----------------------------------------------------------------------------
class Runner:
    """One optimizer on its own model copy, batch stream and MC generator; records every step."""

    def __init__(self, key, model_name, data, args):
        label, cls, hyper, slow = ROWS[key]
        build, _ = MODELS[model_name]
        self.key, self.label, self.slow = key, label, slow
        self.model = build(np.dtype(args.dtype), args.device)  # same seed → the same θ₀ for every row
        self.opt = cls(self.model, nn.CrossEntropyLoss(), lr=LR, **hyper)
        x, y = data
        self.batches = BatchStream(x, y, args.batch, np.random.default_rng(args.seed))  # same batches for all
        self.rng = np.random.default_rng(args.seed + 1)  # MC targets
        self.xp = xp_for(args.device)
        self.steps, self.phases, self.losses = [], {p: [] for p in PHASES}, []

    def step(self, record: bool):
        xb, yb = next(self.batches)
        synchronize(self.xp)
        t0 = time.perf_counter()
        info = self.opt.step(xb, yb, self.rng)
        synchronize(self.xp)
        t = time.perf_counter() - t0
        self.losses.append(float(info["loss"]))
        if record:
            self.steps.append(t)
            for p in PHASES:
                self.phases[p].append(info["times"][p])

    def summary(self):
        def ms(ts):
            return 1e3 * statistics.fmean(ts)

        row = {"key": self.key, "label": self.label, "hyper": self.opt.hyper(), "P": self.model.num_params,
               "steps": len(self.steps), "mean_ms": ms(self.steps), "median_ms": 1e3 * statistics.median(self.steps),
               "max_ms": 1e3 * max(self.steps), "loss_first": self.losses[0], "loss_last": self.losses[-1],
               "step_ms": [1e3 * t for t in self.steps]}
        for p in PHASES:
            row[f"{p}_ms"] = ms(self.phases[p])
            row[f"{p}_median_ms"] = 1e3 * statistics.median(self.phases[p])
        row["other_ms"] = row["mean_ms"] - sum(row[f"{p}_ms"] for p in PHASES)
        return row


def bench_model(model_name, keys, args):
    """Round-robin steps of every row on one model; returns the rows' summaries."""
    _, flatten = MODELS[model_name]
    ds = load_digits(flatten=flatten, dtype=np.dtype(args.dtype))
    data = (to_device(ds.x_train, args.device), to_device(ds.y_train, args.device))  # (N_train, ...), (N_train,)
    runners = [Runner(k, model_name, data, args) for k in keys]
    # The slow rows step in ngd_steps of the timed rounds, evenly spaced, and in the first warm-up round.
    stride = max(1, args.steps // max(1, args.ngd_steps))
    slow_rounds = set(range(0, stride * args.ngd_steps, stride)) if args.ngd_steps else set()
    for r in range(args.warmup + args.steps):
        timed = r >= args.warmup
        turn = r % len(runners)
        for run in runners[turn:] + runners[:turn]:  # a different one goes first each round
            if run.slow and not (r - args.warmup in slow_rounds if timed else r == 0):
                continue
            run.step(record=timed)
    return [run.summary() for run in runners if run.steps]


# ---- report ----------------------------------------------------------------------------
def fmt_ms(t):
    return f"{t:.0f}" if t >= 100 else f"{t:.1f}" if t >= 1 else f"{t:.2f}"


COLUMNS = (f"{'optimizer':<26}{'steps':>6} | {'mean ms':>8}{'median':>8}{'×SGD':>8}{'med×':>8} | {'fwd_bwd':>8}"
           f"{'curv':>8}{'inv':>8}{'update':>8}{'other':>8} | {'h first→last':>14}")


def fmt_ratio(r):
    return f"{r:.2f}" if r < 10 else f"{r:.1f}" if r < 100 else f"{r:.0f}"


def print_table(model_name, rows):
    if not rows:
        print(f"{model_name}: no timed steps (every chosen row is an NGD row and --ngd-steps is 0)\n")
        return
    p = rows[0]["P"]
    print(f"{model_name}  (P = {p:,})")
    print(COLUMNS)
    print("-" * len(COLUMNS))
    sgd = next((r for r in rows if r["key"] == "sgd"), None)
    for r in rows:
        ratios = (f"{fmt_ratio(r['mean_ms'] / sgd['mean_ms']):>8}{fmt_ratio(r['median_ms'] / sgd['median_ms']):>8}"
                  if sgd else f"{'-':>8}{'-':>8}")
        phases = "".join(f"{fmt_ms(r[f'{ph}_ms']):>8}" for ph in PHASES)
        print(f"{r['label']:<26}{r['steps']:>6} | {fmt_ms(r['mean_ms']):>8}{fmt_ms(r['median_ms']):>8}{ratios} | "
              f"{phases}{fmt_ms(r['other_ms']):>8} | {r['loss_first']:>6.3f}→{r['loss_last']:.3f}", flush=True)
    kfac = next((r for r in rows if r["key"] == "kfac"), None)
    if sgd and kfac:  # both do the same forward and backward: their ratio shows the timing noise
        fb = "forward_backward_median_ms"
        print(f"noise check: K-FAC / SGD forward_backward (medians) = {kfac[fb] / sgd[fb]:.2f} "
              f"(the same work: ≈ 1 on a quiet machine)")
    print()


LEGEND = """\
ms per step of opt.step (wall clock, GPU synchronised); mean over the timed steps (K-FAC's refreshes amortised);
×SGD = mean / SGD's mean, med× = median / SGD's median (robust to spikes, but blind to K-FAC's rare refreshes);
phase columns = mean ms of info["times"]; other = step − Σ phases (adapt_damping's LM forward pass, overhead);
h = the training loss at the first and last step (lr = {lr:g}: only for timing)."""


def print_goal(results, args):
    print(f"goal: K-FAC (T_inv = 20) step ≤ {GOAL:g}× an SGD step on the ConvNet")
    rows = {r["key"]: r for r in results.get(GOAL_MODEL, [])}
    if "sgd" not in rows or GOAL_ROW not in rows:
        print(f"  not measured: needs --models {GOAL_MODEL} and --rows including sgd,{GOAL_ROW}")
        return None
    ratio = rows[GOAL_ROW]["mean_ms"] / rows["sgd"]["mean_ms"]
    t_inv = rows[GOAL_ROW]["hyper"]["T_inv"]
    median_ratio = rows[GOAL_ROW]["median_ms"] / rows["sgd"]["median_ms"]
    verdict = "met" if ratio <= GOAL else "MISSED"
    note = ""
    if args.steps % t_inv:
        verdict = "not judged"
        note = f"  ({args.steps} steps: not a multiple of T_inv = {t_inv}, refresh not amortised)"
    print(f"  {verdict}: {fmt_ms(rows[GOAL_ROW]['mean_ms'])} ms / {fmt_ms(rows['sgd']['mean_ms'])} ms = "
          f"{ratio:.2f}× (medians: {median_ratio:.2f}×){note}")
    return ratio


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {list(MODELS)}")
    ap.add_argument("--rows", default=None,
                    help=f"comma-separated subset of {list(ROWS)} (default: all; --quick: all but {list(QUICK_SKIP)})")
    ap.add_argument("--batch", type=int, default=128, help="batch size N (default 128)")
    ap.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    ap.add_argument("--steps", type=int, default=40,
                    help="timed rounds (default 40; keep it a multiple of T_inv = 20)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    ap.add_argument("--ngd-steps", type=int, default=4,
                    help="timed steps of the exact-Fisher NGD rows, spread over the rounds (default 4)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the batches and MC targets (default 0)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "gpu"), help="'gpu' needs CuPy")
    ap.add_argument("--threads", type=int, default=None,
                    help="BLAS threads (environment before NumPy loads, and threadpoolctl); steadier when busy")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 4 steps, 1 warm-up, 1 NGD step, batch 32, no dense Cholesky rows "
                         "(K-FAC's refresh not amortised)")
    ap.add_argument("--json", metavar="PATH", help="also save the results (with every step's time) as JSON")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.ngd_steps, args.batch = 4, 1, 1, min(args.batch, 32)
    args.ngd_steps = min(args.ngd_steps, args.steps)
    if args.rows is None:  # the dense (P, P) Cholesky rows take seconds per step whatever the batch
        args.rows = ",".join(k for k in ROWS if not (args.quick and k in QUICK_SKIP))
    models, keys = args.models.split(","), args.rows.split(",")
    for chosen, known in ((models, MODELS), (keys, ROWS)):
        bad = [k for k in chosen if k not in known]
        if bad:
            ap.error(f"unknown {bad}: expected a subset of {list(known)}")
    if args.steps < 1 or args.warmup < 0 or args.ngd_steps < 0 or args.batch < 1:
        ap.error("--steps and --batch must be ≥ 1, --warmup and --ngd-steps ≥ 0")
    keys = [k for k in ROWS if k in keys]  # the table's order

    t_start = time.perf_counter()
    _limiter = limit_blas_threads(args.threads) if args.threads else None  # noqa: F841 (kept alive)
    try:
        xp_for(args.device)  # a clear error now if 'gpu' is asked for without CuPy
    except RuntimeError as exc:
        sys.exit(f"bench_optimizers.py: {exc}")
    info = machine_info(args.device)
    print(f"kfac_ref {info['kfac_ref']}  numpy {info['numpy']}  python {info['python']}  "
          f"device {info['device']}{' (' + info['gpu'] + ')' if 'gpu' in info else ''}")
    print(f"cpu_count {info['cpu_count']}  BLAS {info['blas'] or '?'} threads {info['blas_threads'] or '?'}  "
          f"load average {info.get('loadavg_start', '?')}")
    print(f"batch N = {args.batch} digits, {args.dtype}, lr = {LR:g}; {args.warmup} warm-up + {args.steps} timed "
          f"rounds, round-robin; exact-Fisher NGD rows: {args.ngd_steps} timed steps\n")
    load = info.get("loadavg_start", [0.0])[0]
    if load > 0.5:
        sys.stdout.flush()
        print(f"warning: load average {load:.2f} before starting: other processes are using the CPU, "
              f"so timings are noisy (--threads 1 steadies them)\n", file=sys.stderr, flush=True)

    results = {}
    for model_name in models:
        results[model_name] = bench_model(model_name, keys, args)
        print_table(model_name, results[model_name])
    print(LEGEND.format(lr=LR))
    print()
    ratio = print_goal(results, args)
    info["runtime_s"] = round(time.perf_counter() - t_start, 1)
    if hasattr(os, "getloadavg"):
        info["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    print(f"\ntotal runtime {info['runtime_s']:.0f} s;  load average at the end {info.get('loadavg_end', '?')}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump({"machine": info, "args": vars(args), "lr": LR, "goal": GOAL, "goal_ratio": ratio,
                       "results": results}, fh, indent=2)
        print(f"saved {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
