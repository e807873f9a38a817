"""``kfac-ref reference`` and ``kfac-ref audit``: arguments and runners for the command line.

kfac-ref reference --out DIR [--model mlp|convnet] [--kind exact] [--damping 0.01] ...
kfac-ref audit DIR THEIRS.npz [--json FILE] [--rtol R]     exit 0: every key agrees; 1 otherwise
"""

from __future__ import annotations

import time

import numpy as np

from ..experiments.arguments import int_list, positive_float, positive_int
from ..fisher.seeds import KINDS
from ..io import write_json
from .reference import DEFAULT_DAMPING, DEFAULT_MAX_DENSE, build_bundle, write_bundle

DEFAULT_BATCH = 32  # small enough that the dense (P, P) Fisher of every kind takes about a second


def add_reference_arguments(p) -> None:
    """The arguments of ``kfac-ref reference``."""
    p.add_argument("--out", required=True, help="output folder: spec.json and bundle.npz")
    p.add_argument("--model", choices=("mlp", "convnet"), default="mlp", help="the network, on the digits data")
    p.add_argument("--hidden", type=int_list, default=(32,), help="MLP hidden widths, or the ConvNet's FC width")
    p.add_argument("--channels", type=int_list, default=(8, 16), help="ConvNet channels per conv block")
    p.add_argument("--batch-size", type=positive_int, default=DEFAULT_BATCH, help="the batch N")
    p.add_argument("--seed", type=int, default=0, help="initialisation and the Monte-Carlo targets")
    p.add_argument("--kind", choices=KINDS, default="exact", help="the Fisher of A, G, F, kfac_step, ngd_step")
    p.add_argument(
        "--damping",
        type=positive_float,
        default=DEFAULT_DAMPING,
        help="λ of kfac_step and ngd_step",
    )
    p.add_argument(
        "--loss",
        choices=("cross-entropy", "squared-error"),
        default="cross-entropy",
        help="squared-error: ½‖f − y‖² against one-hot targets",
    )
    p.add_argument(
        "--max-dense",
        type=positive_int,
        default=DEFAULT_MAX_DENSE,
        help="store dense (P, P) and (p_l, p_l) matrices up to this size",
    )


def reference_problem(args):
    """(model, loss_fn, x, y) for the reference command's flags: the first N digits of the training split."""
    from .. import models, nn
    from ..data import load_digits

    data = load_digits(flatten=args.model == "mlp")
    n = args.batch_size
    if n > len(data.y_train):
        raise ValueError(f"--batch-size {n}: the digits training split has only {len(data.y_train)} samples")
    x, labels = np.asarray(data.x_train[:n]), np.asarray(data.y_train[:n])
    c = data.num_classes
    if args.model == "mlp":
        model = models.mlp(x.shape[1], args.hidden, c, seed=args.seed)
    else:
        model = models.convnet(x.shape[1:], args.channels, args.hidden[0], c, seed=args.seed)
    if args.loss == "squared-error":
        return model, nn.SquaredErrorLoss(), x, np.eye(c)[labels]
    return model, nn.CrossEntropyLoss(), x, labels


def run_reference(args, argv=None) -> int:
    t0 = time.perf_counter()
    model, loss_fn, x, y = reference_problem(args)
    spec, arrays = build_bundle(model, loss_fn, x, y, args.kind, args.damping, args.seed, args.max_dense)
    spec["command"] = "kfac-ref reference " + " ".join(argv or [])
    paths = write_bundle(args.out, spec, arrays)
    mib = sum(p.stat().st_size for p in paths) / 2**20
    print(
        f"wrote {paths[0]} and {paths[1]} ({mib:.1f} MiB): {args.model}, P = {spec['num_params']:,}, "
        f"N = {spec['batch_size']}, kind {args.kind}, λ = {args.damping:g}, {time.perf_counter() - t0:.1f} s"
    )
    return 0


def add_audit_arguments(p) -> None:
    """The arguments of ``kfac-ref audit``."""
    p.add_argument("bundle", help="a folder written by kfac-ref reference")
    p.add_argument("theirs", help="an .npz of your arrays, named as the bundle's keys (any subset)")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.add_argument(
        "--rtol",
        type=positive_float,
        help="agreement tolerance on ‖theirs − ref‖/‖ref‖ (default: 1e-6 for float64 arrays, 1e-3 for float32)",
    )


def run_audit(args, argv=None) -> int:
    from .audit import format_results, run

    results, doc, _ = run(args.bundle, args.theirs, args.rtol)
    print(format_results(results))
    if args.json:
        write_json(args.json, doc, indent=1, ensure_ascii=False)
    return 0 if all(r.status == "ok" for r in results) else 1
