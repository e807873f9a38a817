"""The command line: ``kfac-ref`` (or ``python -m kfac_ref``).

    kfac-ref compare ...      SGD vs NGD vs K-FAC by iteration and wall-clock (the article's figure)
    kfac-ref demo             the comparison on the bundled digits data (what `make demo` runs)
    kfac-ref batch-sweep ...  iterations and seconds to a target against the batch size, each method tuned
    kfac-ref sizes ...        Fisher-block vs Kronecker-factor sizes (the article's AlexNet figure)
    kfac-ref fisher-plot ...  the exact Fisher, its approximations and their inverses as heatmaps
    kfac-ref reference ...    a reference bundle: a network, a batch and every K-FAC quantity in float64
    kfac-ref audit ...        compare your K-FAC's arrays with a bundle; name the classic mistakes

Every sub-command is one entry of ``COMMANDS``: its help line, the function that adds its
arguments to its own parser, and the function that runs it.

Bad input gives one line on stderr and a non-zero exit code; a failed run
leaves no partial results behind.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from .audit import commands as audit_commands
from .experiments.compare import DEFAULT_SETTINGS, ITERATION_CAPS, CompareConfig, load_data, run_compare
from .fisher.seeds import KINDS
from .optim import OPTIMIZERS

PROG = "kfac-ref"
# make demo: compare at its defaults, with the dense exact-Fisher NGD capped at fewer iterations
# (≈ 6.5 s a step at batch 1024 on 2 cores; the figure says so), so that the demo stays under 5 minutes
DEMO_NGD_ITERATIONS = 25
HYPER_OPTIONS = ("lr", "momentum", "damping", "T_inv", "T_cov", "weight_decay")


def _checked(convert, ok, expected: str):
    """An argparse type: ``convert(text)`` that must satisfy ``ok``, else "expected …, got '…'"."""

    def parse(text):
        try:
            v = convert(text)
        except ValueError:
            v = None
        if v is None or not ok(v):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return v

    return parse


_positive_int = _checked(int, lambda v: v >= 1, "a positive integer")
_positive_float = _checked(float, lambda v: v > 0, "a positive number")
_seed = _checked(int, lambda v: v >= 0, "an integer ≥ 0")  # argparse names --seed itself
_fraction = _checked(float, lambda v: 0 < v <= 1, "an accuracy in (0, 1]")
_every_or_off = _checked(int, lambda v: v >= 0, "an integer ≥ 0 (0: off)")


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
        raise argparse.ArgumentTypeError(
            f"unknown optimizer {bad[0] if bad else text!r}: choose from {','.join(OPTIMIZERS)}"
        )
    return names


def _hyper(name):
    """Parse [OPT=]VALUE for one hyper-parameter, e.g. --lr kfac=0.3 (a bare value: every optimizer)."""
    flag = f"--{name.replace('_', '-')}"

    def parse(text):
        opt, _, value = text.rpartition("=")
        if opt and opt not in OPTIMIZERS:
            raise argparse.ArgumentTypeError(f"unknown optimizer {opt!r} in {text!r}")
        if opt and name not in hyper_types(opt):
            raise argparse.ArgumentTypeError(
                f"{opt} has no {name}: its hyper-parameters are {', '.join(hyper_types(opt))}"
            )
        return opt or None, value

    parse.__name__ = flag  # argparse names the option in its messages
    return parse


def hyper_types(name: str) -> dict:
    """{hyper-parameter: (type, may be None)} of optimizer ``name``, read from its signature.

    A subclass that passes ``*args, **kwargs`` on (EKFAC, KFACTridiag) also has its base class's.
    """
    out = {}
    for cls in OPTIMIZERS[name].__mro__:
        if "__init__" not in vars(cls):
            continue
        params = list(inspect.signature(vars(cls)["__init__"]).parameters.values())[3:]  # after self, model, loss_fn
        for p in params:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            ann = str(p.annotation)
            kind = bool if "bool" in ann else int if ann.startswith("int") else float if "float" in ann else str
            out.setdefault(p.name, (kind, "None" in ann or p.default is None))
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return out


def parse_value(opt: str, key: str, text):
    """A hyper-parameter value from the command line or a settings file, typed by the optimizer."""
    types = hyper_types(opt)
    if key not in types:
        raise ValueError(f"{opt} has no hyper-parameter {key!r}: expected one of {', '.join(types)}")
    kind, nullable = types[key]
    if not isinstance(text, str):  # from a JSON/TOML file: already typed; the optimizer validates it
        return text
    low = text.strip().lower()
    if nullable and low in ("none", "null", "off"):
        return None
    try:
        if kind is bool:
            if low not in ("true", "false"):
                raise ValueError
            return low == "true"
        if kind is int:
            return int(low)
        if kind is float:
            return float(low)
    except ValueError:
        want = {bool: "true or false", int: "an integer", float: "a number"}[kind]
        raise ValueError(f"{opt}.{key}: expected {want}{' or none' if nullable else ''}, got {text!r}") from None
    return text


def _setting(text):
    """OPT.KEY=VALUE for --set."""
    lhs, eq, value = text.partition("=")
    opt, dot, key = lhs.partition(".")
    if not eq or not dot or not key:
        raise argparse.ArgumentTypeError(f"expected OPTIMIZER.KEY=VALUE (e.g. kfac.T_inv=1), got {text!r}")
    if opt not in OPTIMIZERS:
        raise argparse.ArgumentTypeError(f"unknown optimizer {opt!r} in {text!r}: choose from {','.join(OPTIMIZERS)}")
    try:
        return opt, key, parse_value(opt, key, value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def read_settings_file(path) -> dict:
    """{optimizer: {key: value}} from a JSON (.json) or TOML (.toml) file, checked key by key."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--settings {path}: {'is a folder' if path.is_dir() else 'does not exist'}")
    try:
        if path.suffix == ".toml":
            import tomllib  # Python ≥ 3.11

            doc = tomllib.loads(path.read_text())
        else:
            doc = json.loads(path.read_text())
    except ImportError:
        raise ValueError(f"--settings {path}: TOML needs Python ≥ 3.11; use a .json file") from None
    except ValueError as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise ValueError(f"--settings {path}: not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}") from None
    if not isinstance(doc, dict) or not all(isinstance(v, dict) for v in doc.values()):
        raise ValueError(f"--settings {path}: expected {{optimizer: {{hyper-parameter: value}}}}")
    out = {}
    for opt, table in doc.items():
        if opt not in OPTIMIZERS:
            raise ValueError(f"--settings {path}: unknown optimizer {opt!r}: choose from {','.join(OPTIMIZERS)}")
        out[opt] = {key: parse_value(opt, key, v) for key, v in table.items()}
    return out


def _add_machine_arguments(g) -> None:
    """--device, --dtype, --seed, --threads: how any training sub-command runs (see :func:`_threads`)."""
    g.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="NumPy (cpu) or CuPy (gpu)")
    g.add_argument("--dtype", choices=("float32", "float64"), default="float64", help="floating-point type")
    g.add_argument("--seed", type=_seed, default=0, help="initialisation, batch order and Monte-Carlo targets")
    g.add_argument(
        "--threads",
        type=_positive_int,
        help="BLAS threads (via threadpoolctl); default: 1 on the CPU — these small matrix "
        "products run no faster on more, and steadier (benchmarks/README.md)",
    )


def _threads(args) -> int | None:
    """The BLAS thread limit: --threads, else 1 on the CPU, else none (the GPU's host threads are left alone)."""
    return args.threads or (1 if args.device == "cpu" else None)


def add_compare_arguments(p, name: str = "compare") -> None:
    """The arguments of ``kfac-ref compare`` (and ``demo``, whose ``--out`` defaults to results/demo)."""
    g = p.add_argument_group("data and model")
    g.add_argument(
        "--dataset",
        choices=("digits", "mnist", "cifar10"),
        default="digits",
        help="digits is bundled; mnist reads any folder of MNIST-format IDX files "
        "(e.g. Fashion-MNIST); cifar10 reads the official binary or python version",
    )
    g.add_argument("--data-dir", help="folder with the mnist/cifar10 files (see data/README.md)")
    g.add_argument("--model", choices=("mlp", "convnet"), default="convnet")
    g.add_argument(
        "--hidden",
        type=_int_list,
        default=None,
        help="MLP hidden widths, or the ConvNet's fully-connected width, comma-separated "
        "(default: 32; with --quick: 16)",
    )
    g.add_argument(
        "--channels",
        type=_int_list,
        default=None,
        help="ConvNet channels per conv block (default: 8,16; with --quick: 4,8)",
    )
    g.add_argument("--max-train", type=_positive_int, help="use only the first N training samples")
    g = p.add_argument_group("optimizers")
    g.add_argument(
        "--optimizers",
        type=_optimizer_list,
        default="sgd,ngd,kfac",
        help=f"comma-separated, any of {','.join(OPTIMIZERS)}",
    )
    g.add_argument(
        "--kind", choices=KINDS, help="Fisher kind for every Fisher method (default: exact for NGD, mc for K-FAC)"
    )
    for hp in HYPER_OPTIONS:
        g.add_argument(
            f"--{hp.replace('_', '-')}",
            type=_hyper(hp),
            action="append",
            default=[],
            metavar="[OPT=]VALUE",
            help=f"{hp} for one optimizer (OPT=VALUE) or every one that has it (VALUE); repeatable",
        )
    g.add_argument(
        "--set",
        type=_setting,
        action="append",
        default=[],
        metavar="OPT.KEY=VALUE",
        help="any hyper-parameter of any optimizer, e.g. kfac.rescale=true, kfac.kl_clip=none, "
        "kfac.stats_fraction=0.25 (applied last); repeatable",
    )
    g.add_argument(
        "--settings",
        metavar="FILE",
        help="a JSON or TOML file {optimizer: {hyper-parameter: value}} (applied before --set)",
    )
    g.add_argument(
        "--solver",
        choices=("dense", "woodbury"),
        help="NGD's solver: dense (build F, Cholesky) or woodbury (the same direction, docs/math.md §7)",
    )
    g.add_argument(
        "--grid",
        action="store_true",
        help="small grid search per optimizer, the same budget for each, picked by validation loss",
    )
    g.add_argument("--grid-iterations", type=_positive_int, help="iterations per grid configuration")
    g = p.add_argument_group("budget and run")
    g.add_argument("--iterations", type=_positive_int, default=300, help="training iterations per optimizer")
    g.add_argument("--epochs", type=_positive_int, help="train for this many epochs instead of --iterations")
    g.add_argument("--batch-size", type=_positive_int, default=CompareConfig.batch_size, help="mini-batch size N")
    g.add_argument(
        "--ngd-iterations",
        type=_positive_int,
        default=ITERATION_CAPS["ngd"],
        help="at most this many iterations for the dense exact-Fisher NGD and BlockNGD "
        "(seconds per step); the figure says so",
    )
    g.add_argument(
        "--eval-every",
        type=_positive_int,
        default=CompareConfig.eval_every,
        help="measure the full training and validation loss every k iterations",
    )
    _add_machine_arguments(g)
    g.add_argument(
        "--target-loss",
        type=_positive_float,
        action="append",
        default=[],
        help="a training-loss target of the summary; repeatable (default: 0.1, 0.01 and the hardest every run reaches)",
    )
    g.add_argument(
        "--target-acc",
        type=_fraction,
        action="append",
        default=[],
        help="a validation-accuracy target of the summary; repeatable (default: 0.9, 0.95 and "
        "the hardest every run reaches)",
    )
    g.add_argument(
        "--diagnostics",
        type=_every_or_off,
        default=0,
        metavar="K",
        help="every K iterations, each method's angle to the exact damped natural gradient "
        "(F + γI)⁻¹∇h and its curvature error, on that batch at θ before the step; not "
        "timed; γ: each method's damping, K-FAC's for SGD (docs/diagnostics.md); 0: off",
    )
    g.add_argument("--out", default=f"results/{name}", help="output folder")
    g.add_argument("--quick", action="store_true", help="a tiny budget, for smoke tests")
    g.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    g.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel K-FAC/SGD over MPI ranks, as in Osawa et al. 2019: run as "
        "`mpiexec -n R kfac-ref compare --distributed ...`; the same records as one process; "
        "rank 0 writes (docs/distributed.md)",
    )


def add_demo_arguments(p) -> None:
    """``kfac-ref demo``: compare at its defaults, NGD capped at 25 iterations, output in results/demo (make demo)."""
    add_compare_arguments(p, "demo")
    p.set_defaults(ngd_iterations=DEMO_NGD_ITERATIONS)


def config_from_args(args) -> CompareConfig:
    settings: dict = {}
    for hp in HYPER_OPTIONS:  # --lr 0.3 (every optimizer that has lr) or --lr kfac=0.3
        for opt, value in getattr(args, hp):
            for t in [opt] if opt else [o for o in args.optimizers if hp in hyper_types(o)]:
                settings.setdefault(t, {})[hp] = parse_value(t, hp, value)
    if args.solver:
        settings.setdefault("ngd", {})["solver"] = args.solver
    if args.settings:
        for opt, table in read_settings_file(args.settings).items():
            settings.setdefault(opt, {}).update(table)
    for opt, key, value in args.set:
        settings.setdefault(opt, {})[key] = value
    quick = args.quick
    cfg = CompareConfig(
        dataset=args.dataset,
        data_dir=args.data_dir,
        model=args.model,
        hidden=args.hidden or ((16,) if quick else (32,)),
        channels=args.channels or ((4, 8) if quick and args.model == "convnet" else (8, 16)),
        optimizers=args.optimizers,
        kind=args.kind,
        iterations=args.iterations,
        batch_size=args.batch_size,
        eval_every=args.eval_every,
        iteration_caps={"ngd": args.ngd_iterations, "block-ngd": args.ngd_iterations},
        settings=settings,
        grid=args.grid,
        grid_iterations=args.grid_iterations,
        device=args.device,
        dtype=args.dtype,
        seed=args.seed,
        max_train=args.max_train,
        target_loss=tuple(args.target_loss),
        target_acc=tuple(args.target_acc),
        diagnostics_every=args.diagnostics,
    )
    if quick:  # a tiny budget; what the user gave explicitly is kept
        cfg = replace(
            cfg,
            iterations=min(cfg.iterations, 12),
            eval_every=min(cfg.eval_every, 4),
            batch_size=min(cfg.batch_size, 32),
            max_train=cfg.max_train or 256,
            grid_iterations=4,
        )
    return cfg


class ProgressBar:
    """A tqdm bar showing the mini-batch loss; called by the training loop after each step."""

    def __init__(self, desc: str, total: int):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=f"{desc:>10}", unit="it", file=sys.stderr, leave=True, dynamic_ncols=True)

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


def cmd_compare(args, argv=None) -> int:
    cfg = config_from_args(args)
    if args.dataset != "digits" and not args.data_dir:
        raise ValueError(f"--dataset {args.dataset} needs --data-dir (see data/README.md)")
    if args.epochs:  # count the samples on the host: nothing is moved to a device for it
        n = load_data(replace(cfg, device="cpu")).n_train
        cfg = replace(cfg, iterations=args.epochs * max(1, n // cfg.batch_size))
    log = (lambda *a, **k: None) if args.quiet else print
    bars = None if args.quiet else ProgressBar
    threads = _threads(args)
    if args.distributed and cfg.diagnostics_every:
        raise ValueError("--diagnostics is not available with --distributed (run it on one process)")
    if args.distributed:  # every rank trains; rank 0 alone logs, shows progress and writes
        from .distributed import run_compare_distributed, world

        comm = world()  # clear errors without mpi4py or without mpiexec
        with _blas_threads(threads):
            run_compare_distributed(cfg, args.out, comm, progress_factory=bars, log=log)
        if comm.rank == 0 and not args.quiet:
            print(f"wrote {args.out}/history.json, curves.png, curves.svg, summary.md ({comm.size} MPI ranks)")
        return 0
    with _blas_threads(threads):
        run_compare(cfg, args.out, progress_factory=bars, log=log)
    if not args.quiet:
        print(f"wrote {args.out}/history.json, curves.png, curves.svg, summary.md")
    return 0


def _batch_sizes(text):
    """Comma-separated batch sizes: positive integers or 'full' (the whole training set), none twice."""
    vals = []
    for t in (t.strip() for t in text.split(",")):
        v = None if t == "full" else int(t) if t.isdigit() else 0
        if v is not None and v < 1:
            raise argparse.ArgumentTypeError(
                f"expected positive integers or 'full', comma-separated, got {t!r} in {text!r}"
            )
        if v in vals:
            raise argparse.ArgumentTypeError(f"batch size {t!r} appears twice in {text!r}")
        vals.append(v)
    return tuple(vals)


def add_batch_sweep_arguments(p) -> None:
    """The arguments of ``kfac-ref batch-sweep``."""
    from .experiments import batch_sweep as bs

    p.add_argument(
        "--optimizers",
        type=_optimizer_list,
        default=",".join(bs.DEFAULT_OPTIMIZERS),
        help=f"comma-separated, any of {','.join(OPTIMIZERS)} (ngd: Woodbury solver, where C·B < P)",
    )
    p.add_argument(
        "--batch-sizes",
        type=_batch_sizes,
        default=argparse.SUPPRESS,  # absent: the defaults below, which depend on --quick
        help="comma-separated; 'full' = the whole training set (default: 128,256,512,1024,full; with --quick: 32,full)",
    )
    p.add_argument("--iterations", type=_positive_int, default=bs.DEFAULT_ITERATIONS, help="per run")
    p.add_argument(
        "--ngd-iterations",
        type=_positive_int,
        default=bs.ITERATION_CAPS["ngd"],
        help="at most this many iterations for NGD and BlockNGD (seconds per step)",
    )
    p.add_argument(
        "--target-loss",
        type=_positive_float,
        default=bs.DEFAULT_TARGETS["train_loss"],
        help="the training-loss target, the same at every batch size",
    )
    p.add_argument(
        "--target-acc",
        type=_fraction,
        default=bs.DEFAULT_TARGETS["val_acc"],
        help="the validation-accuracy target, the same at every batch size",
    )
    p.add_argument(
        "--eval-every",
        type=_positive_int,
        default=CompareConfig.eval_every,
        help="measure the full losses every k iterations (the resolution of 'iterations to target')",
    )
    p.add_argument("--max-train", type=_positive_int, help="use only the first N training samples")
    _add_machine_arguments(p)
    p.add_argument("--out", default="results/batch-sweep", help="output folder")
    p.add_argument(
        "--quick",
        action="store_true",
        help="a tiny budget for smoke tests: 256 samples, a small ConvNet, 8 iterations, batch 32,full",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars or log lines")


def cmd_batch_sweep(args, argv) -> int:
    import shlex

    from .experiments.batch_sweep import DEFAULT_BATCH_SIZES, run_batch_sweep

    q = args.quick
    cfg = CompareConfig(
        optimizers=args.optimizers,
        iterations=min(args.iterations, 8) if q else args.iterations,
        hidden=(16,) if q else (32,),
        channels=(4, 8) if q else (8, 16),
        eval_every=min(args.eval_every, 4) if q else args.eval_every,
        iteration_caps={"ngd": args.ngd_iterations, "block-ngd": args.ngd_iterations},
        device=args.device,
        dtype=args.dtype,
        seed=args.seed,
        max_train=args.max_train or (256 if q else None),
    )
    sizes = getattr(args, "batch_sizes", None) or ((32, None) if q else DEFAULT_BATCH_SIZES)
    with _blas_threads(_threads(args)):
        run_batch_sweep(
            cfg,
            sizes,
            {"train_loss": args.target_loss, "val_acc": args.target_acc},
            args.out,
            shlex.join([PROG, *argv]),
            None if args.quiet else ProgressBar,
            (lambda *a, **k: None) if args.quiet else print,
        )
    if not args.quiet:
        print(f"wrote {args.out}/batch_sweep.json, batch-sweep.png, summary.md")
    return 0


def _add_sizes_arguments(p) -> None:
    from .experiments import sizes

    sizes.add_arguments(p)


def _run_sizes(args, argv) -> int:
    from .experiments import sizes

    return sizes.run(args)


def _add_fisher_plot_arguments(p) -> None:
    from .experiments import fisher_plot

    fisher_plot.add_arguments(p)


def _run_fisher_plot(args, argv) -> int:
    from .experiments import fisher_plot

    return fisher_plot.run(args)


@dataclass(frozen=True)
class Command:
    """One sub-command: its one-line help, the function that adds its arguments to its own parser,
    and the function that runs it, ``run(args, argv) -> exit code``."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, list], int]
    show_defaults: bool = True  # append "(default: …)" to every help line (sizes and fisher-plot write their own)


#: every sub-command of ``kfac-ref``, in the order ``--help`` lists them
COMMANDS = {
    "compare": Command("SGD vs NGD vs K-FAC by iteration and wall-clock", add_compare_arguments, cmd_compare),
    "demo": Command("the comparison on the bundled digits ConvNet (make demo)", add_demo_arguments, cmd_compare),
    "batch-sweep": Command(
        "iterations and seconds to a loss and an accuracy target against the batch size, each "
        "method tuned on its compare --grid at every size",
        add_batch_sweep_arguments,
        cmd_batch_sweep,
    ),
    "sizes": Command(
        "Fisher-block vs Kronecker-factor sizes (the article's AlexNet figure)",
        _add_sizes_arguments,
        _run_sizes,
        show_defaults=False,
    ),
    "fisher-plot": Command(
        "heatmaps of the exact Fisher, its approximations and their damped inverses",
        _add_fisher_plot_arguments,
        _run_fisher_plot,
        show_defaults=False,
    ),
    "reference": Command(
        "a reference bundle (network, batch, K-FAC quantities in float64) to check another K-FAC against",
        audit_commands.add_reference_arguments,
        audit_commands.run_reference,
    ),
    "audit": Command(
        "compare your K-FAC arrays with a reference bundle and name the classic mistakes",
        audit_commands.add_audit_arguments,
        audit_commands.run_audit,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The ``kfac-ref`` parser: one sub-parser per entry of :data:`COMMANDS`, each built by its command."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    for name, cmd in COMMANDS.items():
        formatter = argparse.ArgumentDefaultsHelpFormatter if cmd.show_defaults else argparse.HelpFormatter
        cmd.add_arguments(sub.add_parser(name, help=cmd.help, description=cmd.help + ".", formatter_class=formatter))
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command].run(args, argv)
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted; no results written", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, MemoryError, RuntimeError) as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 1


__all__ = ["DEFAULT_SETTINGS", "main"]
