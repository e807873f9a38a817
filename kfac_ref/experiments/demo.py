"""``kfac-ref demo`` (make demo): compare at its defaults on the bundled digits ConvNet, dense NGD
capped (:data:`~.compare.DEMO_NGD_ITERATIONS`), output in results/demo; its summary.md ends with
the race's measured table on the same workload (:func:`~.race.measured_note`), so that the single
run's ratios are read beside the fair comparison's."""

from __future__ import annotations

from . import compare, race

WORKLOAD = "digits-convnet"


def add_arguments(p) -> None:
    compare.add_demo_arguments(p)


def run(args) -> int:
    return compare.run(args, appendix=race.measured_note(WORKLOAD))
