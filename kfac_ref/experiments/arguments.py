"""What the training sub-commands (compare, demo, batch-sweep) parse alike.

Typed argument parsers that name what they expected, the optimizer names (a misspelt one
suggests the closest), the per-optimizer hyper-parameters read from each optimizer's
signature, the machine arguments (--device, --dtype, --seed, --threads), the help
formatter (each default shown once) and the progress bar.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import inspect
import math
import sys

from ..optim import OPTIMIZERS


def checked(convert, ok, expected: str):
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


positive_int = checked(int, lambda v: v >= 1, "a positive integer")
positive_float = checked(float, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
seed = checked(int, lambda v: v >= 0, "an integer ≥ 0")  # argparse names --seed itself
fraction = checked(float, lambda v: 0 < v <= 1, "an accuracy in (0, 1]")
every_or_off = checked(int, lambda v: v >= 0, "an integer ≥ 0 (0: off)")


def count_or_all(text):
    """A positive integer, or 'all' (None)."""
    if text.strip().lower() == "all":
        return None
    return positive_int(text)


def int_list(text):
    """Comma-separated positive integers, e.g. "8,16"."""
    try:
        vals = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        vals = ()
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return vals


def unknown_optimizer(name: str) -> str:
    """ "unknown optimizer 'kfca' (did you mean 'kfac'?); choose from …": the closest registered name."""
    close = difflib.get_close_matches(name, list(OPTIMIZERS), n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown optimizer {name!r}{hint}; choose from {','.join(OPTIMIZERS)}"


def optimizer_list(text):
    """Comma-separated optimizer names, each registered in :data:`kfac_ref.optim.OPTIMIZERS`."""
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated optimizer names, got {text!r}")
    for n in names:
        if n not in OPTIMIZERS:
            raise argparse.ArgumentTypeError(unknown_optimizer(n))
    return names


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


def hyper(name):
    """Parse [OPT=]VALUE for one hyper-parameter, e.g. --lr kfac=0.3 (a bare value: every optimizer)."""

    def parse(text):
        opt, _, value = text.rpartition("=")
        if opt and opt not in OPTIMIZERS:
            raise argparse.ArgumentTypeError(f"{unknown_optimizer(opt)} (in {text!r})")
        if opt and name not in hyper_types(opt):
            raise argparse.ArgumentTypeError(
                f"{opt} has no {name}: its hyper-parameters are {', '.join(hyper_types(opt))}"
            )
        return opt or None, value

    parse.__name__ = f"--{name.replace('_', '-')}"  # argparse names the option in its messages
    return parse


def setting(text):
    """OPT.KEY=VALUE for --set."""
    lhs, eq, value = text.partition("=")
    opt, dot, key = lhs.partition(".")
    if not eq or not dot or not key:
        raise argparse.ArgumentTypeError(f"expected OPTIMIZER.KEY=VALUE (e.g. kfac.T_inv=1), got {text!r}")
    if opt not in OPTIMIZERS:
        raise argparse.ArgumentTypeError(f"{unknown_optimizer(opt)} (in {text!r})")
    try:
        return opt, key, parse_value(opt, key, value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_set_argument(g, help: str) -> None:
    """--set OPT.KEY=VALUE (repeatable), parsed by :func:`setting`; :func:`set_settings` gathers them."""
    g.add_argument("--set", type=setting, action="append", default=[], metavar="OPT.KEY=VALUE", help=help)


def set_settings(pairs) -> dict:
    """{optimizer: {key: value}} from --set's (optimizer, key, value) triples, the last one winning."""
    settings: dict = {}
    for opt, key, value in pairs:
        settings.setdefault(opt, {})[key] = value
    return settings


def add_machine_arguments(g, dtype: str) -> None:
    """--device, --dtype, --seed, --threads: how any training sub-command runs (see :func:`blas_threads`)."""
    g.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="NumPy (cpu) or CuPy (gpu)")
    g.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default=dtype,
        help="floating-point type of the data, the parameters and every computation",
    )
    g.add_argument("--seed", type=seed, default=0, help="initialisation, batch order and Monte-Carlo targets")
    g.add_argument(
        "--threads",
        type=positive_int,
        help="CPU threads: a ConvNet runs its batch as that many blocks of samples on threads, each with "
        "one BLAS thread; other models give BLAS that many threads (docs/benchmarks.md: the thread rule). "
        "Default 1: one core, steady timings, the same numbers on any machine",
    )


def thread_plan(args, model: str) -> tuple:
    """(BLAS threads, workers) for --threads T on the CPU — the thread rule, measured in docs/benchmarks.md:

    a ConvNet ("convnet") splits its batch over up to T threads (``model.workers = T``, blocks big
    enough to gain: kfac_ref.nn.blocks) with one BLAS thread each: ×1.70–1.83 on the 28×28 and
    CIFAR-shaped ConvNets at N = 1,024 on two idle cores, 1.5–1.6× faster than T BLAS threads
    (×1.02–1.23 on the digits ConvNet, at the rule's edge); any other model gives BLAS the T threads
    (its products are large).  On the GPU: (None, 1),
    the host's BLAS left alone.
    """
    if args.device != "cpu":
        return None, 1
    t = args.threads or 1
    return (1, t) if model == "convnet" else (t, 1)


def blas_threads(args, model: str = ""):
    """A context limiting BLAS threads as :func:`thread_plan` says (SciPy's own BLAS included)."""
    import scipy.linalg  # noqa: F401  (SciPy's own BLAS, loaded now so that the limit covers it too)
    from threadpoolctl import threadpool_limits

    n = thread_plan(args, model)[0]
    return contextlib.nullcontext() if n is None else threadpool_limits(limits=n, user_api="blas")


class DefaultsFormatter(argparse.HelpFormatter):
    """Appends "(default: …)" to a help line that states no default itself, and only for a real default."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, False, [], (), argparse.SUPPRESS):
            return text
        return text + " (default: %(default)s)"


def logger(args):
    """print, or nothing with --quiet."""
    return (lambda *a, **k: None) if args.quiet else print


def progress_bars(args):
    """The progress-bar factory, None with --quiet."""
    return None if args.quiet else ProgressBar


class ProgressBar:
    """A tqdm bar; called by the training loop after each step.

    It shows the mini-batch loss of the last step ("batch loss") and, from the last evaluation,
    the training loss on the evaluation samples ("eval train loss": the subset the run's log
    line names) and the validation accuracy ("val acc").
    """

    def __init__(self, desc: str, total: int):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=f"{desc:>10}", unit="it", file=sys.stderr, leave=True, dynamic_ncols=True)
        self.shown: dict = {}

    def __call__(self, rec):
        self.bar.update(1)
        if rec["batch_loss"] is not None:
            self.shown["batch loss"] = f"{rec['batch_loss']:.4f}"
        if rec["train_loss"] is not None:
            self.shown["eval train loss"] = f"{rec['train_loss']:.4f}"
        if rec["val_acc"] is not None:
            self.shown["val acc"] = f"{rec['val_acc']:.3f}"
        self.bar.set_postfix(self.shown, refresh=False)

    def close(self):
        self.bar.close()
