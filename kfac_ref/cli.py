"""The command line: ``kfac-ref`` (or ``python -m kfac_ref``).

    kfac-ref compare ...      SGD vs NGD vs K-FAC by iteration and wall-clock (the article's figure)
    kfac-ref demo             the comparison on the bundled digits data (what `make demo` runs)
    kfac-ref race WORKLOAD    iterations and seconds to fixed targets, each method tuned alike, several seeds
    kfac-ref batch-sweep ...  iterations and seconds to a target against the batch size, each method tuned
    kfac-ref sizes ...        Fisher-block vs Kronecker-factor sizes (the article's AlexNet figure)
    kfac-ref fisher-plot ...  the exact Fisher, its approximations and their inverses as heatmaps
    kfac-ref download ...     a dataset's files (Fashion-MNIST, MNIST, CIFAR-10), sizes and checksums checked
    kfac-ref reference ...    a reference bundle: a network, a batch and every K-FAC quantity in float64
    kfac-ref audit ...        compare your K-FAC's arrays with a bundle; name the classic mistakes

Every sub-command is one entry of ``COMMANDS``: its help line and the module that owns it,
whose ``add_arguments(parser)`` builds its own parser and whose ``run(args)`` runs it
(``args.command_line``: the command as typed, for the records).

Bad input gives one line on stderr and a non-zero exit code; a failed run
leaves no partial results behind.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
from dataclasses import dataclass

from .experiments.arguments import DefaultsFormatter
from .malloc import for_command_line
from .mpi import end_every_rank, rank_label

PROG = "kfac-ref"


@dataclass(frozen=True)
class Command:
    """One sub-command: its one-line help and the module that owns it (``experiments.compare``),
    with ``add_arguments(parser)`` and ``run(args) -> exit code`` (``add``, ``run`` name others)."""

    help: str
    module: str
    add: str = "add_arguments"
    run: str = "run"

    def load(self):
        return importlib.import_module(f"kfac_ref.{self.module}")


#: every sub-command of ``kfac-ref``, in the order ``--help`` lists them
COMMANDS = {
    "compare": Command("SGD vs NGD vs K-FAC by iteration and wall-clock", "experiments.compare"),
    "demo": Command(
        "the comparison on the bundled digits ConvNet, with the race's measured table (make demo)", "experiments.demo"
    ),
    "batch-sweep": Command(
        "iterations and seconds to a loss and an accuracy target against the batch size, each "
        "method tuned on its compare --grid at every size",
        "experiments.batch_sweep",
    ),
    "race": Command(
        "iterations and seconds to fixed targets, the same tuning budget per method, several seeds",
        "experiments.race",
    ),
    "sizes": Command("Fisher-block vs Kronecker-factor sizes (the article's AlexNet figure)", "experiments.sizes"),
    "fisher-plot": Command(
        "heatmaps of the exact Fisher, its approximations and their damped inverses", "experiments.fisher_plot"
    ),
    "download": Command(
        "fetch a dataset's files, size and checksums checked",
        "data.downloads",
        "add_download_arguments",
        "run_download",
    ),
    "reference": Command(
        "a reference bundle (network, batch, K-FAC quantities in float64) to check another K-FAC against",
        "audit.commands",
        "add_reference_arguments",
        "run_reference",
    ),
    "audit": Command(
        "compare your K-FAC arrays with a reference bundle and name the classic mistakes",
        "audit.commands",
        "add_audit_arguments",
        "run_audit",
    ),
}


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, "kfac-ref compare: error: …" (the usage is in --help)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``kfac-ref`` parser: one sub-parser per entry of :data:`COMMANDS`, each built by its command."""
    parser = Parser(
        prog=PROG,
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}", parser_class=Parser)
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help + ".", formatter_class=DefaultsFormatter)
        getattr(cmd.load(), cmd.add)(p)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    args.command_line = shlex.join([PROG, *argv])
    try:
        for_command_line()  # glibc keeps freed memory for the next step (kfac_ref.malloc)
        cmd = COMMANDS[args.command]
        return getattr(cmd.load(), cmd.run)(args)
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}{rank_label()}: interrupted; no results written", file=sys.stderr)
        return end_every_rank(130, "interrupted")
    except (ValueError, TypeError, OSError, MemoryError, RuntimeError) as exc:
        print(f"{PROG} {args.command}{rank_label()}: error: {exc}", file=sys.stderr)
        return end_every_rank(1, f"{type(exc).__name__}: {exc}")


__all__ = ["COMMANDS", "build_parser", "main"]
