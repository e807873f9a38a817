"""The cost of one optimizer step, relative to SGD, split into phases.

Models (each built by ``kfac_ref.experiments.compare.build_model`` as ``kfac-ref compare``
builds it by default, so the numbers are those of the comparison):

    digits-convnet   the digits ConvNet on ``load_digits()`` (1×8×8)
    mnist-convnet    the ConvNet compare builds for 28×28 MNIST-format data (synthetic 1×28×28 images)
    cifar-convnet    the ConvNet compare builds for CIFAR-10 (synthetic 3×32×32 images)
                     (the synthetic images get random labels: nothing to learn, see _images)
    digits-mlp       the digits MLP (hidden 32)

at the comparison's default batch size (``CompareConfig.batch_size``; ``--batch``), float64
(``--dtype``), once per BLAS thread count in ``--threads`` (default 1,2), with ``--workers`` blocks of samples
on threads (``model.workers``, default 1; kfac_ref.backprop).  Every row names all
its hyper-parameters — nothing is a class default by accident:

    row            optimizer and hyper-parameters (lr small: nothing may diverge while timed)
    sgd            the comparison's SGD: DEFAULT_SETTINGS["sgd"]
    kfac           the comparison's K-FAC: DEFAULT_SETTINGS["kfac"] ([MG15] §7 rescale + LM, T_cov = T_inv = 10)
    kfac-amortised the amortised K-FAC: DEFAULT_SETTINGS["kfac"] with AMORTISED_KFAC (KL-clip, momentum)
    kfac-textbook  K-FAC's textbook defaults, spelled out: factors and inverses every step
    kfac-quarter   as kfac-amortised, factors from 1/4 of the batch every step (T_cov = 1, stats_fraction = 0.25)
    ngd-woodbury   NGD(kind="exact", solver="woodbury")     (C·N, C·N) system
    ngd-dense      NGD(kind="exact", solver="dense")        build F (P, P), Cholesky (slow: few steps)
    block-ngd      BlockNGD(kind="exact")                   exact layer blocks (slow: few steps)

For each row: the wall-clock ms of ``opt.step`` (mean and median over the timed steps),
the mean's ratio to SGD's, and the mean ms of each phase of ``info["times"]``
(forward_backward, curvature, inversion, update).  "other" = step − Σ phases.

How it is timed.  Each optimizer has its own model copy (same seed), its own seeded stream
of the same batches and its own MC generator.  The optimizers step round-robin — round r is
one step of every row, starting with a different one each round — so a slow spell of the
machine hits all alike.  After ``--warmup`` untimed rounds come ``--steps`` timed rounds
(default 20: two whole T_inv = 10 periods, so K-FAC's mean is the amortised cost of its
refreshes).  The exact-Fisher NGD rows step in only ``--ngd-steps`` rounds.

Goal: the comparison's K-FAC step ≤ 1.15× an SGD step (the aim beyond: ≤ 1.1×) on the three
ConvNets at 1 and 2 BLAS threads; the script prints the verdict per model and thread count.

    python benchmarks/bench_optimizers.py                          # the goal table (a few minutes)
    python benchmarks/bench_optimizers.py --quick                  # smoke run, < 30 s
    python benchmarks/bench_optimizers.py --models digits-convnet --rows sgd,kfac,kfac-textbook --threads 1
    python benchmarks/bench_optimizers.py --json results/bench_optimizers.json
    python benchmarks/bench_optimizers.py --device gpu --dtype float32   # needs CuPy

Run from the repository root; kfac_ref need not be installed.
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
from common import limit_blas_threads, machine_info, tune_malloc  # noqa: E402  (benchmarks/common.py)

from kfac_ref import nn  # noqa: E402
from kfac_ref.backend import synchronize, to_device, xp_for  # noqa: E402
from kfac_ref.data import BatchStream, load_digits  # noqa: E402
from kfac_ref.data.synthetic import make_images  # noqa: E402
from kfac_ref.experiments.compare import AMORTISED_KFAC, DEFAULT_SETTINGS, CompareConfig, build_model  # noqa: E402
from kfac_ref.optim import KFAC, NGD, PHASES, SGD, BlockNGD  # noqa: E402

LR = 0.01  # small: the timings must not depend on convergence, and nothing may diverge
GOAL, AIM = 1.15, 1.1  # the comparison's K-FAC / SGD, per ConvNet and thread count
GOAL_MODELS = ("digits-convnet", "mnist-convnet", "cifar-convnet")


def _digits(flatten):
    def load(dtype):
        ds = load_digits(flatten=flatten, dtype=dtype)
        return ds.x_train, ds.y_train, ds.input_shape

    return load


def _images(c, h, w, n=4096):
    """Synthetic images with labels drawn independently of them: nothing to learn, so that no row
    drives its loss to 0 while timed (float32 gradients then turn subnormal, and every step slows
    down 2–4×: the timings would measure convergence, not the methods)."""

    def load(dtype):
        x, _ = make_images(n, c, h, w, 10, np.random.default_rng(0))
        y = np.random.default_rng(1).integers(0, 10, size=n)
        return x.astype(dtype), y, (c, h, w)

    return load


# name → (data loader(dtype) → (x, y, input_shape), model kind of compare's CompareConfig)
MODELS = {
    "digits-convnet": (_digits(False), "convnet"),
    "mnist-convnet": (_images(1, 28, 28), "convnet"),
    "cifar-convnet": (_images(3, 32, 32), "convnet"),
    "digits-mlp": (_digits(True), "mlp"),
}


def _named(settings, **override):
    """A comparison's settings with lr replaced by the small timing lr."""
    return {**settings, "lr": LR, **override}


TEXTBOOK = dict(
    momentum=0.9,
    damping=0.3,
    kind="mc",
    mc_samples=1,
    T_cov=1,
    T_inv=1,
    ema_decay=0.95,
    stats_fraction=1.0,
    damping_mode="factored",
    kl_clip=1e-3,
    rescale=False,
    adapt_damping=False,
)
# key → (label, class, hyper-parameters, one of the slow exact-Fisher NGD rows?)
ROWS = {
    "sgd": ("SGD (compare)", SGD, _named(DEFAULT_SETTINGS["sgd"]), False),
    "kfac": ("K-FAC (compare)", KFAC, _named(DEFAULT_SETTINGS["kfac"]), False),
    "kfac-amortised": ("K-FAC amortised", KFAC, _named({**DEFAULT_SETTINGS["kfac"], **AMORTISED_KFAC}), False),
    "kfac-textbook": ("K-FAC textbook", KFAC, dict(TEXTBOOK, lr=LR), False),
    "kfac-quarter": (
        "K-FAC 1/4 batch, T_cov=1",
        KFAC,
        _named({**DEFAULT_SETTINGS["kfac"], **AMORTISED_KFAC}, T_cov=1, stats_fraction=0.25),
        False,
    ),
    "ngd-woodbury": (
        "NGD Woodbury, exact F",
        NGD,
        dict(momentum=0.0, damping=0.1, kind="exact", solver="woodbury", kl_clip=0.1, lr=LR),
        True,
    ),
    "ngd-dense": (
        "NGD dense, exact F",
        NGD,
        dict(momentum=0.0, damping=0.1, kind="exact", solver="dense", kl_clip=0.1, lr=LR),
        True,
    ),
    "block-ngd": (
        "BlockNGD, exact F",
        BlockNGD,
        dict(momentum=0.0, damping=0.1, kind="exact", kl_clip=0.1, lr=LR),
        True,
    ),
}
QUICK_SKIP = ("ngd-dense", "block-ngd", "ngd-woodbury")


# ---- machine ---------------------------------------------------------------------------
# ---- timing ----------------------------------------------------------------------------
class _Shape:
    """What build_model reads of a dataset."""

    def __init__(self, shape):
        self.input_shape, self.num_classes = tuple(shape), 10


class Runner:
    """One optimizer on its own model copy, batch stream and MC generator; records every step."""

    def __init__(self, key, model_name, data, args):
        label, cls, hyper, slow = ROWS[key]
        x, y, shape = data
        self.key, self.label, self.slow = key, label, slow
        cfg = CompareConfig(model=MODELS[model_name][1], dtype=args.dtype, device=args.device)
        self.model = build_model(cfg, _Shape(shape))  # same seed → the same θ₀ for every row
        self.model.workers = args.workers  # blocks of samples on threads (kfac_ref.backprop)
        self.opt = cls(self.model, nn.CrossEntropyLoss(), **hyper)
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

        row = {
            "key": self.key,
            "label": self.label,
            "hyper": self.opt.hyper(),
            "P": self.model.num_params,
            "steps": len(self.steps),
            "mean_ms": ms(self.steps),
            "median_ms": 1e3 * statistics.median(self.steps),
            "max_ms": 1e3 * max(self.steps),
            "loss_first": self.losses[0],
            "loss_last": self.losses[-1],
            "step_ms": [1e3 * t for t in self.steps],
        }
        for p in PHASES:
            row[f"{p}_ms"] = ms(self.phases[p])
            row[f"{p}_median_ms"] = 1e3 * statistics.median(self.phases[p])
        row["other_ms"] = row["mean_ms"] - sum(row[f"{p}_ms"] for p in PHASES)
        return row


def bench_model(model_name, keys, args):
    """Round-robin steps of every row on one model; returns the rows' summaries."""
    x, y, shape = MODELS[model_name][0](np.dtype(args.dtype))
    data = (to_device(x, args.device), to_device(y, args.device), shape)  # (N_train, ...), (N_train,)
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


COLUMNS = (
    f"{'optimizer':<26}{'steps':>6} | {'mean ms':>8}{'median':>8}{'×SGD':>8}{'med×':>8} | {'fwd_bwd':>8}"
    f"{'curv':>8}{'inv':>8}{'update':>8}{'other':>8} | {'h first→last':>14}"
)


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
        ratios = (
            f"{fmt_ratio(r['mean_ms'] / sgd['mean_ms']):>8}{fmt_ratio(r['median_ms'] / sgd['median_ms']):>8}"
            if sgd
            else f"{'-':>8}{'-':>8}"
        )
        phases = "".join(f"{fmt_ms(r[f'{ph}_ms']):>8}" for ph in PHASES)
        print(
            f"{r['label']:<26}{r['steps']:>6} | {fmt_ms(r['mean_ms']):>8}{fmt_ms(r['median_ms']):>8}{ratios} | "
            f"{phases}{fmt_ms(r['other_ms']):>8} | {r['loss_first']:>6.3f}→{r['loss_last']:.3f}",
            flush=True,
        )
    kfac = next((r for r in rows if r["key"] == "kfac"), None)
    if sgd and kfac:  # both do the same forward and backward: their ratio shows the timing noise
        fb = "forward_backward_median_ms"
        print(
            f"noise check: K-FAC / SGD forward_backward (medians) = {kfac[fb] / sgd[fb]:.2f} "
            f"(the same work: ≈ 1 on a quiet machine)"
        )
    print()


LEGEND = """\
ms per step of opt.step (wall clock, GPU synchronised); mean over the timed steps (K-FAC's refreshes amortised);
×SGD = mean / SGD's mean, med× = median / SGD's median (robust to spikes, but blind to K-FAC's rare refreshes);
phase columns = mean ms of info["times"]; other = step − Σ phases (adapt_damping's LM forward pass, overhead);
h = the training loss at the first and last step (lr = {lr:g}: only for timing)."""


def print_goal(results, args):
    """The verdict per ConvNet and thread count: K-FAC / SGD, mean over whole T_inv periods, for the
    comparison's K-FAC and the amortised one (the goal was set for the amortised step)."""
    print(f"goal: K-FAC's step ≤ {GOAL:g}× an SGD step (aim ≤ {AIM:g}×), amortised over whole T_inv periods")
    verdicts = {}
    for key, rows in results.items():
        model_name, threads = key
        rows = {r["key"]: r for r in rows}
        for row in ("kfac", "kfac-amortised"):
            if model_name not in GOAL_MODELS or "sgd" not in rows or row not in rows:
                continue
            ratio = rows[row]["mean_ms"] / rows["sgd"]["mean_ms"]
            t_inv = max(rows[row]["hyper"]["T_inv"], rows[row]["hyper"]["T_cov"])
            verdict = (
                "not judged (steps not a multiple of T_inv)"
                if args.steps % t_inv
                else "met, and the aim"
                if ratio <= AIM
                else "met"
                if ratio <= GOAL
                else "MISSED"
            )
            median = rows[row]["median_ms"] / rows["sgd"]["median_ms"]
            print(
                f"  {row:<15}{model_name:<15} {threads} thread{'s' if threads > 1 else ' '}: {ratio:.2f}× "
                f"(medians {median:.2f}×; SGD {fmt_ms(rows['sgd']['mean_ms'])} ms)  {verdict}"
            )
            verdicts[f"{row}/{model_name}/{threads}"] = ratio
    if not verdicts:
        print(f"  not measured: needs --models among {list(GOAL_MODELS)} and --rows including sgd and kfac")
    return verdicts


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(GOAL_MODELS), help=f"comma-separated subset of {list(MODELS)}")
    ap.add_argument(
        "--rows",
        default=None,
        help=f"comma-separated subset of {list(ROWS)} (default: all; --quick: all but {list(QUICK_SKIP)})",
    )
    ap.add_argument(
        "--batch",
        type=int,
        default=CompareConfig.batch_size,
        help=f"batch size N (default {CompareConfig.batch_size}, the comparison's)",
    )
    ap.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    ap.add_argument(
        "--steps",
        type=int,
        default=20,
        help="timed rounds (default 20; keep it a multiple of the comparison's T_inv = 10)",
    )
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    ap.add_argument(
        "--ngd-steps",
        type=int,
        default=2,
        help="timed steps of the exact-Fisher NGD rows, spread over the rounds (default 2)",
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of the batches and MC targets (default 0)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "gpu"), help="'gpu' needs CuPy")
    ap.add_argument("--threads", default="1,2", help="BLAS thread counts to measure, comma-separated (default 1,2)")
    ap.add_argument(
        "--workers",
        type=int,
        default=1,
        help="model.workers: the batch in this many blocks of samples, each on a Python thread "
        "(default 1; use with --threads 1 for one BLAS thread per block)",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 10 steps, 1 warm-up, batch 64, digits only, no exact-Fisher NGD rows",
    )
    ap.add_argument(
        "--tune-malloc",
        action="store_true",
        help="glibc only: keep freed memory in the process (mmap/trim thresholds 1 GiB, one arena), so that "
        "the arrays of K-FAC's covering steps are not page-faulted in afresh (benchmarks/README.md)",
    )
    ap.add_argument("--json", metavar="PATH", help="also save the results (with every step's time) as JSON")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.ngd_steps, args.batch = 10, 1, 0, min(args.batch, 64)
        if args.models == ",".join(GOAL_MODELS):
            args.models = "digits-convnet"
    args.ngd_steps = min(args.ngd_steps, args.steps)
    if args.rows is None:
        args.rows = ",".join(
            k
            for k in ROWS
            if not (args.quick and k in QUICK_SKIP) and not (k in ("ngd-dense", "block-ngd") and args.batch > 256)
        )
    models, keys = args.models.split(","), args.rows.split(",")
    for chosen, known in ((models, MODELS), (keys, ROWS)):
        bad = [k for k in chosen if k not in known]
        if bad:
            ap.error(f"unknown {bad}: expected a subset of {list(known)}")
    try:
        thread_counts = [int(t) for t in args.threads.split(",")]
    except ValueError:
        ap.error(f"--threads: expected comma-separated positive integers, got {args.threads!r}")
    if args.steps < 1 or args.warmup < 0 or args.ngd_steps < 0 or args.batch < 1 or min(thread_counts) < 1:
        ap.error("--steps, --batch and --threads must be ≥ 1, --warmup and --ngd-steps ≥ 0")
    if args.workers < 1:
        ap.error(f"--workers must be ≥ 1, got {args.workers}")
    keys = [k for k in ROWS if k in keys]  # the table's order

    t_start = time.perf_counter()
    try:
        xp_for(args.device)  # a clear error now if 'gpu' is asked for without CuPy
    except RuntimeError as exc:
        sys.exit(f"bench_optimizers.py: {exc}")
    info = machine_info(args.device)
    info["malloc"] = "system default"
    if args.tune_malloc:
        info["malloc"] = (
            "tuned (mmap/trim thresholds 1 GiB, one arena)" if tune_malloc() else "default (tuning unavailable)"
        )
    print(
        f"kfac_ref {info['kfac_ref']}  numpy {info['numpy']}  python {info['python']}  "
        f"device {info['device']}{' (' + info['gpu'] + ')' if 'gpu' in info else ''}  from {info['kfac_ref_path']}"
    )
    print(
        f"cpu_count {info['cpu_count']}  BLAS {info['blas'] or '?'}  load average {info.get('loadavg_start', '?')}  "
        f"malloc {info['malloc']}"
    )
    print(
        f"batch N = {args.batch}, {args.dtype}, lr = {LR:g}; {args.warmup} warm-up + {args.steps} timed "
        f"rounds, round-robin; exact-Fisher NGD rows: {args.ngd_steps} timed steps; BLAS threads {thread_counts}; "
        f"model.workers {args.workers}\n"
    )
    load = info.get("loadavg_start", [0.0])[0]
    if load > 0.5:
        print(
            f"warning: load average {load:.2f} before starting: other processes are using the CPU, "
            f"so timings are noisy\n",
            file=sys.stderr,
            flush=True,
        )

    results = {}
    for threads in thread_counts:
        with limit_blas_threads(threads):
            for model_name in models:
                results[(model_name, threads)] = bench_model(model_name, keys, args)
                print_table(
                    f"{model_name}, {threads} BLAS thread{'s' if threads > 1 else ''}", results[(model_name, threads)]
                )
    print(LEGEND.format(lr=LR))
    print()
    verdicts = print_goal(results, args)
    info["runtime_s"] = round(time.perf_counter() - t_start, 1)
    if hasattr(os, "getloadavg"):
        info["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    print(f"\ntotal runtime {info['runtime_s']:.0f} s;  load average at the end {info.get('loadavg_end', '?')}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump(
                {
                    "machine": info,
                    "args": vars(args),
                    "lr": LR,
                    "goal": GOAL,
                    "ratios": verdicts,
                    "results": {f"{m}/{t}": rows for (m, t), rows in results.items()},
                },
                fh,
                indent=2,
            )
        print(f"saved {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
