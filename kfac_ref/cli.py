"""The command line: ``kfac-ref`` (or ``python -m kfac_ref``).

    kfac-ref compare ...      SGD vs NGD vs K-FAC by iteration and wall-clock (the article's figure)
    kfac-ref demo             the comparison on the bundled digits data (what `make demo` runs)
    kfac-ref sizes ...        Fisher-block vs Kronecker-factor sizes (the article's AlexNet figure)
    kfac-ref fisher-plot ...  exact Fisher, block-diagonal, K-FAC and their inverses as heatmaps

Bad input gives one line on stderr and a non-zero exit code; a failed run
leaves no partial results behind.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from .experiments.compare import DEFAULT_SETTINGS, CompareConfig, run_compare
from .fisher.seeds import KINDS
from .optim import OPTIMIZERS

PROG = "kfac-ref"
HYPER_TYPES = {"lr": float, "momentum": float, "damping": float, "T_inv": int, "T_cov": int,
               "ema_decay": float, "weight_decay": float, "mc_samples": int}


def _positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _positive_float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def _int_list(text):
    try:
        vals = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return vals


def _optimizer_list(text):
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [n for n in names if n not in OPTIMIZERS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown optimizer {bad[0] if bad else text!r}: "
                                         f"choose from {','.join(OPTIMIZERS)}")
    return names


def _hyper(name):
    """Parse NAME=VALUE for one hyper-parameter, e.g. --lr kfac=0.3 (or a bare value for all)."""
    def parse(text):
        opt, _, value = text.rpartition("=")
        if opt and opt not in OPTIMIZERS:
            raise argparse.ArgumentTypeError(f"unknown optimizer {opt!r} in {text!r}")
        try:
            v = HYPER_TYPES[name](value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--{name.replace('_', '-')}: expected a number, got {value!r}") \
                from None
        if v < 0:
            raise argparse.ArgumentTypeError(f"--{name.replace('_', '-')}: must be ≥ 0, got {v}")
        return opt or None, v
    return parse


def compare_parser(sub, name="compare", help_text="SGD vs NGD vs K-FAC by iteration and wall-clock"):
    p = sub.add_parser(name, help=help_text, description=help_text + ".",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("data and model")
    g.add_argument("--dataset", choices=("digits", "mnist", "cifar10"), default="digits",
                   help="digits is bundled; mnist reads any folder of MNIST-format IDX files "
                        "(e.g. Fashion-MNIST); cifar10 reads the official binary or python version")
    g.add_argument("--data-dir", help="folder with the mnist/cifar10 files (see data/README.md)")
    g.add_argument("--model", choices=("mlp", "convnet"), default="convnet")
    g.add_argument("--hidden", type=_int_list, default=(32,),
                   help="MLP hidden widths, or the ConvNet's fully-connected width, comma-separated")
    g.add_argument("--channels", type=_int_list, default=(8, 16), help="ConvNet channels per conv block")
    g.add_argument("--max-train", type=_positive_int, help="use only the first N training samples")
    g = p.add_argument_group("optimizers")
    g.add_argument("--optimizers", type=_optimizer_list, default=("sgd", "ngd", "kfac"),
                   help=f"comma-separated, any of {','.join(OPTIMIZERS)}")
    g.add_argument("--kind", choices=KINDS, help="Fisher kind for every Fisher method "
                   "(default: exact for NGD, mc for K-FAC)")
    for hp in ("lr", "momentum", "damping", "T_inv", "T_cov", "weight_decay"):
        g.add_argument(f"--{hp.replace('_', '-')}", type=_hyper(hp), action="append", default=[],
                       metavar="[OPT=]VALUE", help=f"{hp} for one optimizer (OPT=VALUE) or all (VALUE); repeatable")
    g.add_argument("--solver", choices=("dense", "woodbury"),
                   help="NGD's solver: dense (build F, Cholesky) or woodbury (the same direction, MATH.md §7)")
    g.add_argument("--grid", action="store_true",
                   help="small grid search per optimizer, the same budget for each, picked by validation loss")
    g.add_argument("--grid-iterations", type=_positive_int, help="iterations per grid configuration")
    g = p.add_argument_group("budget and run")
    g.add_argument("--iterations", type=_positive_int, default=300, help="training iterations per optimizer")
    g.add_argument("--epochs", type=_positive_int, help="train for this many epochs instead of --iterations")
    g.add_argument("--batch-size", type=_positive_int, default=128, help="mini-batch size N")
    g.add_argument("--eval-every", type=_positive_int, default=10,
                   help="measure the full training and validation loss every k iterations")
    g.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="NumPy (cpu) or CuPy (gpu)")
    g.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    g.add_argument("--seed", type=int, default=0, help="initialisation, batch order and Monte-Carlo targets")
    g.add_argument("--threads", type=_positive_int,
                   help="BLAS threads (via threadpoolctl); 1 is often fastest for these small matrices")
    g.add_argument("--target-loss", type=_positive_float, action="append", default=[],
                   help="a training-loss target of the summary; repeatable (default: 0.1, 0.01 and the "
                        "hardest every run reaches)")
    g.add_argument("--target-acc", type=_positive_float, action="append", default=[],
                   help="a validation-accuracy target of the summary; repeatable (default: 0.9, 0.95 and "
                        "the hardest every run reaches)")
    g.add_argument("--out", default=f"results/{name}", help="output folder")
    g.add_argument("--quick", action="store_true", help="a tiny budget, for smoke tests")
    g.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    return p


def config_from_args(args) -> CompareConfig:
    settings: dict = {}
    for hp in ("lr", "momentum", "damping", "T_inv", "T_cov", "weight_decay"):
        for opt, v in getattr(args, hp):
            targets = [opt] if opt else list(args.optimizers)
            for t in targets:
                if hp in ("T_inv", "T_cov") and t != "kfac":
                    continue
                if hp == "damping" and t == "sgd":
                    continue
                settings.setdefault(t, {})[hp] = v
    if args.solver and "ngd" in args.optimizers:
        settings.setdefault("ngd", {})["solver"] = args.solver
    cfg = CompareConfig(dataset=args.dataset, data_dir=args.data_dir, model=args.model, hidden=args.hidden,
                        channels=args.channels, optimizers=args.optimizers, kind=args.kind,
                        iterations=args.iterations, batch_size=args.batch_size, eval_every=args.eval_every,
                        settings=settings, grid=args.grid, grid_iterations=args.grid_iterations,
                        device=args.device, dtype=args.dtype, seed=args.seed, max_train=args.max_train,
                        target_loss=tuple(args.target_loss), target_acc=tuple(args.target_acc))
    if args.quick:
        cfg = replace(cfg, iterations=min(cfg.iterations, 12), eval_every=min(cfg.eval_every, 4),
                      batch_size=min(cfg.batch_size, 32), max_train=cfg.max_train or 256,
                      channels=(4, 8) if cfg.model == "convnet" else cfg.channels,
                      hidden=(16,), grid_iterations=4)
    return cfg


class ProgressBar:
    """A tqdm bar showing the mini-batch loss; called by the training loop after each step."""

    def __init__(self, desc: str, total: int):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=f"{desc:>10}", unit="it", file=sys.stderr, leave=True,
                        dynamic_ncols=True)

    def __call__(self, rec):
        self.bar.update(1)
        if rec["batch_loss"] is not None:
            self.bar.set_postfix(loss=f"{rec['batch_loss']:.4f}", refresh=False)

    def close(self):
        self.bar.close()


def _blas_threads(n):
    """A context limiting BLAS threads to n (no-op for None)."""
    import contextlib

    from threadpoolctl import threadpool_limits

    return contextlib.nullcontext() if n is None else threadpool_limits(limits=n, user_api="blas")


def cmd_compare(args) -> int:
    cfg = config_from_args(args)
    if args.dataset != "digits" and not args.data_dir:
        raise ValueError(f"--dataset {args.dataset} needs --data-dir (see data/README.md)")
    if args.epochs:
        from .experiments.compare import load_data
        n = load_data(cfg).n_train
        cfg = replace(cfg, iterations=args.epochs * max(1, n // cfg.batch_size))
    log = (lambda *a, **k: None) if args.quiet else print
    with _blas_threads(args.threads):
        run_compare(cfg, args.out, progress_factory=None if args.quiet else ProgressBar, log=log)
    if not args.quiet:
        print(f"wrote {args.out}/history.json, curves.png, curves.svg, summary.md")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # sizes and fisher-plot own their argument parsing
    if argv and argv[0] == "sizes":
        from .experiments import sizes
        return sizes.main(argv[1:])
    if argv and argv[0] == "fisher-plot":
        from .experiments import fisher_plot
        return fisher_plot.main(argv[1:])
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    sub = parser.add_subparsers(dest="command", metavar="{compare,demo,sizes,fisher-plot}")
    compare_parser(sub)
    demo = compare_parser(sub, "demo", "the comparison on the bundled digits ConvNet (make demo)")
    demo.set_defaults(out="results/demo", iterations=200)
    sub.add_parser("sizes", help="Fisher-block vs Kronecker-factor sizes (kfac-ref sizes --help)")
    sub.add_parser("fisher-plot", help="heatmaps of the Fisher and its approximations (kfac-ref fisher-plot --help)")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return cmd_compare(args)
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted; no results written", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, MemoryError, RuntimeError) as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 1


__all__ = ["DEFAULT_SETTINGS", "main"]
