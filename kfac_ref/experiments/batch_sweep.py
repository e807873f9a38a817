"""When does K-FAC pay off?  Iterations and seconds to fixed targets, against the batch size (docs/results.md).

For each batch size B and each method, every configuration of the method's grid
(:data:`~.compare.GRIDS`, what ``compare --grid`` tries: :func:`~.compare.grid_search`) trains
for the same iterations from the same θ₀ on the same seeded mini-batches: the same tuning budget
at every B.  The pick is the race's (docs/race.md), made per target from the recorded trials:
the configuration that reaches the target in the fewest iterations, ties by seconds
(:func:`~.race.pick`).  The targets are fixed in the sweep's definition (:data:`DEFAULT_TARGETS`,
how they were chosen in :data:`TARGETS_CHOSEN`), never derived from the sweep's runs.  A target
is reached at the first measured record that meets it (:func:`~.race.reach`); a method none of
whose configurations reaches it gets None, never an extrapolated value.  Unlike the race, the
picks are not re-run on further seeds: a pick's count is that of its own tuning run.  Exact NGD
runs with the Woodbury solver (docs/math.md §7), only where C·B < P, its iterations capped
(:data:`ITERATION_CAPS`).  This is Zhang et al. 2019's question ("Which algorithmic choices
matter at which batch sizes?"): a larger batch has a less noisy gradient, so curvature can be
used more aggressively.

Outputs, all or none (:func:`kfac_ref.io.write_together`): ``batch_sweep.json`` (schema in
:func:`sweep_document`), ``summary.md`` (:func:`format_table`), ``batch-sweep.png``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import statistics
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from ..backend import to_numpy
from ..io import check_output_dir, write_together
from ..params import get_flat_params
from . import arguments
from .compare import (
    AMORTISED_KFAC,
    CLI_DTYPE,
    GRIDS,
    QUICK,
    CompareConfig,
    add_eval_arguments,
    add_model_arguments,
    build_model,
    check_settings,
    config_from_shared_args,
    evaluation_note,
    grid_search,
    iterations_for,
    jsonable,
    load_data,
    machine_info,
    writers,
)
from .curves import COLORS, LABELS
from .race import Target, pick, reach
from .summary import cell, format_ratio, seconds_per_iteration

DEFAULT_BATCH_SIZES = (128, 256, 512, 1024, None)  # None: the whole training set
DEFAULT_OPTIMIZERS = ("sgd", "ngd", "kfac")


def sweep_targets(train_loss: float, val_acc: float) -> tuple[Target, Target]:
    """The sweep's two targets as the race's :class:`~.race.Target`: training loss ≤ ``train_loss``,
    validation accuracy ≥ ``val_acc``."""
    return (
        Target(f"train loss ≤ {train_loss:g}", "train_loss", "<=", train_loss),
        Target(f"val acc ≥ {val_acc:g}", "val_acc", ">=", val_acc),
    )


#: fixed across batch sizes, so that the points of one line are comparable
DEFAULT_TARGETS = sweep_targets(0.05, 0.95)
TARGETS_CHOSEN = (
    "fixed in the sweep's definition since its first version (2026-12-02), before any per-target pick: "
    "round levels chosen then from a pilot run of the default sweep (each method picked by its last "
    "validation loss) as ones every SGD and K-FAC line reached at every batch size within 200 iterations, "
    "well short of the runs' last values (training loss 0.013–0.018 for SGD, below 0.002 for K-FAC; best "
    "validation accuracy 0.961 and 0.969–0.981); neither is a method's own best value, and neither was "
    "re-chosen for the per-target rule.  0.95 is 341 of the 359 validation images"
)
GIVEN_TARGETS = "given by the caller (--target-loss, --target-acc), fixed before the sweep ran"
PICK_RULE = (
    "per target, the configuration that reaches it in the fewest iterations (ties: fewer seconds, then the "
    "earlier configuration): the race's rule (docs/race.md), on the sweep's one seed, without re-runs"
)
# 200 iterations per run: in the pilot, SGD at compare's lr of the time (0.03) needed up to 180 for the
# default targets at batch 128.  The whole default sweep (5 batch sizes, SGD and K-FAC 3 configurations each, NGD 3 at
# B = 128 and 256) is 6,000 steps of SGD or K-FAC and 120 of NGD; docs/results.md gives its wall-clock time.
DEFAULT_ITERATIONS = 200
# NGD (Woodbury) solves a C·B × C·B system every step: seconds per step at B = 256 on 2 cores.
ITERATION_CAPS = {"ngd": 20, "block-ngd": 20}
FIGURE = "batch-sweep.png"
JSON = "batch_sweep.json"
TABLE = "summary.md"
#: what a target may measure (the fields of a record that :func:`~.race.reach` compares)
METRICS = {
    "train_loss": "training-loss",
    "val_loss": "validation-loss",
    "train_acc": "training-accuracy",
    "val_acc": "validation-accuracy",
}


def resolve_batch_sizes(batch_sizes, n_train: int) -> list[int]:
    """The batch sizes as integers (None or "full" → n_train), checked: each in [1, n_train], no repeats."""
    out = []
    for b in batch_sizes:
        if b is None or b == "full":
            b = n_train
        elif isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1:
            raise ValueError(f"batch size {b!r}: expected a positive integer or 'full'")
        elif b > n_train:
            raise ValueError(
                f"batch size {b}: larger than the {n_train} training samples (use 'full' for the whole training set)"
            )
        if b in out:
            raise ValueError(
                f"batch size {b} appears twice in {list(batch_sizes)} ('full' is {n_train}, the whole training set)"
            )
        out.append(int(b))
    if not out:
        raise ValueError("batch sizes: none given")
    return out


def affordable(name: str, batch_size: int, num_classes: int, num_params: int) -> bool:
    """Whether optimizer ``name`` runs at this batch size: NGD (Woodbury) only where C·B < P."""
    return name != "ngd" or num_classes * batch_size < num_params


def check_targets(targets) -> None:
    """Targets: 1 … len(:data:`TARGET_STYLES`) :class:`~.race.Target` with distinct names, each on a
    recorded metric, a loss with ``<=`` and a positive value, an accuracy with ``>=`` and a value in (0, 1]."""
    targets = tuple(targets)
    if not 1 <= len(targets) <= len(TARGET_STYLES):
        raise ValueError(f"targets: {len(targets)} given, expected 1 to {len(TARGET_STYLES)}")
    names = [getattr(t, "name", None) for t in targets]
    for t in targets:
        if not isinstance(t, Target):
            raise ValueError(f"target {t!r}: expected a race.Target(name, metric, op, value)")
        if t.metric not in METRICS:
            raise ValueError(f"target {t.name!r}: unknown metric {t.metric!r}, expected one of {', '.join(METRICS)}")
        what, loss = METRICS[t.metric], t.metric.endswith("loss")
        if t.op != ("<=" if loss else ">="):
            raise ValueError(f"{what} target {t.name!r}: op {t.op!r}, expected {'<=' if loss else '>='}")
        ok = isinstance(t.value, (int, float)) and not isinstance(t.value, bool)
        if loss and not (ok and 0 < t.value < math.inf):
            raise ValueError(f"{what} target {t.value!r} ({t.name!r}): expected a positive number")
        if not loss and not (ok and 0 < t.value <= 1):
            raise ValueError(f"{what} target {t.value!r} ({t.name!r}): expected an accuracy in (0, 1]")
    if len(set(names)) != len(names):
        raise ValueError(f"target names {names}: each must be distinct (the picks are keyed by name)")


def check_sweep(cfg: CompareConfig, targets) -> None:
    """Optimizers and targets, checked before anything is loaded."""
    for name in cfg.optimizers:
        if name not in GRIDS:
            raise ValueError(f"unknown optimizer {name!r}: expected any of {sorted(GRIDS)}")
    if len(set(cfg.optimizers)) != len(cfg.optimizers) or not cfg.optimizers:
        raise ValueError(f"optimizers {list(cfg.optimizers)}: give each at least once and at most once")
    check_targets(targets)


def sweep_config(cfg: CompareConfig) -> CompareConfig:
    """cfg with NGD on its Woodbury solver (the only one affordable per step at these batch sizes) and
    the amortised K-FAC (compare.AMORTISED_KFAC: KL-clipping and momentum; ``--set`` still overrides).

    The sweep measures the amortised K-FAC because it goes down to small batches, where compare's
    K-FAC is fragile: its exact-model step ([MG15] §7) fits the batch's own Fisher, and on the
    quick sweep's 32-sample batches it diverged."""
    return replace(
        cfg,
        settings={
            **cfg.settings,
            "ngd": {**cfg.settings.get("ngd", {}), "solver": "woodbury"},
            "kfac": {**AMORTISED_KFAC, **cfg.settings.get("kfac", {})},
        },
    )


def tune(cfg: CompareConfig, name: str, data, theta0, progress_factory=None) -> dict:
    """Every configuration of the grid at cfg.batch_size (:func:`~.compare.grid_search`), as one point.

    Returns {"batch_size", "optimizer", "trials": [len(grid)] {"settings", "records", "stopped"}} in the
    grid's order.  grid_search's own pick (the lowest last validation loss) is not used: the sweep picks
    per target (:func:`point_picks`).
    """
    bars = None if progress_factory is None else (lambda desc, n: progress_factory(f"B={cfg.batch_size} {desc}", n))
    _, trials = grid_search(cfg, name, data, theta0, bars)
    return {
        "batch_size": cfg.batch_size,
        "optimizer": name,
        "trials": [{k: t["run"][k] for k in ("settings", "records", "stopped")} for t in trials],
    }


def sweep(cfg: CompareConfig, batch_sizes, data=None, theta0=None, progress_factory=None, log=None):
    """:func:`tune` every optimizer of cfg at every batch size (C·B < P for NGD).

    batch_sizes : [K] positive integers ≤ n_train, or None for the whole training set
    Returns (points, skipped): the :func:`tune` dicts in batch-size order, and
    [{"batch_size", "optimizer", "reason"}] for the combinations not run.
    """
    cfg = sweep_config(cfg)
    data = load_data(cfg) if data is None else data
    model = build_model(cfg, data)
    theta0 = to_numpy(get_flat_params(model)) if theta0 is None else theta0
    points, skipped = [], []
    for b in resolve_batch_sizes(batch_sizes, data.n_train):
        for name in cfg.optimizers:
            if not affordable(name, b, data.num_classes, model.num_params):
                skipped.append(
                    {
                        "batch_size": b,
                        "optimizer": name,
                        "reason": f"C·B = {data.num_classes * b:,} ≥ P = {model.num_params:,}",
                    }
                )
                continue
            point = tune(replace(cfg, batch_size=b), name, data, theta0, progress_factory)
            points.append(point)
            if log is not None:
                log(
                    f"B={b} {name}: "
                    + "; ".join(
                        f"{_settings_text(t['settings'], GRIDS[name])} → final training loss "
                        f"{cell(_last(t['records'], 'train_loss'), '.4g')}"
                        for t in point["trials"]
                    )
                )
    return points, skipped


def _last(records, key):
    vals = [r[key] for r in records if r.get(key) is not None]
    return vals[-1] if vals else None


def _settings_text(settings: dict, keys) -> str:
    """The searched hyper-parameters of a configuration: "lr 0.1", "lr 0.5, damping 0.1"."""
    keys = keys[0] if isinstance(keys, list) else keys  # a grid (list of points) or a {param: values} dict
    return ", ".join(f"{k} {settings[k]:g}" for k in keys)


def point_picks(point: dict, targets) -> dict:
    """Per target name, the point's pick by :func:`~.race.pick`: {"trial": index into point["trials"]
    or None (none reached it), "settings", "iterations", "seconds"} (None where not reached)."""
    out = {}
    for t in targets:
        i = pick(point["trials"], t)
        hit = None if i is None else reach(point["trials"][i]["records"], t)
        out[t.name] = {
            "trial": i,
            "settings": None if i is None else point["trials"][i]["settings"],
            "iterations": None if hit is None else hit[0],
            "seconds": None if hit is None else hit[1],
        }
    return out


def measured(records) -> list:
    """The records a target can be met on: those with a measured metric (:data:`METRICS`), every
    ``eval_every`` iterations and the last; the per-iteration batch losses between them are left out."""
    return [r for r in records if any(r.get(m) is not None for m in METRICS)]


def sweep_document(
    cfg: CompareConfig, points, skipped, targets, n_train: int, num_params: int, command: str = ""
) -> dict:
    """The JSON document (batch_sweep.json)::

        {"command", "date", "machine", "model", "seed", "iterations",
         "targets": [{"name", "metric", "op", "value"}], "targets_chosen", "rule",
         "grids": {opt: {param: [values]}},   # the i-th configuration takes the i-th value of each
         "points": [{"batch_size", "optimizer",
                     "trials": [{"settings", "records": [{"iteration", "seconds", "train_loss", ...}], "stopped"}],
                     # records: the measured ones only (:func:`measured`)
                     "picks": {target name: {"trial", "settings", "iterations", "seconds"}},
                     "seconds_per_iteration"}],   # the median over the trials
         "n_train", "eval_every", "evaluation", "iteration_caps": {opt: iterations}, "skipped": [...]}

    "batch_size" is the actual size (n_train for the whole training set); a pick's "trial" indexes
    the point's "trials" (None: none reached the target, and its iterations and seconds are None).
    """
    targets = tuple(targets)
    model = f"{cfg.dataset} {cfg.model}"
    if cfg.model == "convnet":
        model += f" (channels {','.join(map(str, cfg.channels))}, fc {cfg.hidden[0] if cfg.hidden else 0})"
    else:
        model += f" (hidden {','.join(map(str, cfg.hidden))})"
    model += f", P = {num_params:,}, {cfg.dtype}"
    out_points = []
    for p in points:
        per_it = [v for v in (seconds_per_iteration(t) for t in p["trials"]) if v is not None]
        out_points.append(
            {
                **p,
                "trials": [{**t, "records": measured(t["records"])} for t in p["trials"]],
                "picks": point_picks(p, targets),
                "seconds_per_iteration": statistics.median(per_it) if per_it else None,
            }
        )
    return jsonable(
        {
            "command": command,
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": machine_info(cfg),
            "model": model,
            "seed": cfg.seed,
            "iterations": cfg.iterations,
            "targets": [asdict(t) for t in targets],
            "targets_chosen": TARGETS_CHOSEN if targets == DEFAULT_TARGETS else GIVEN_TARGETS,
            "rule": PICK_RULE,
            "grids": {n: {k: [p[k] for p in GRIDS[n]] for k in GRIDS[n][0]} for n in cfg.optimizers},
            "points": out_points,
            "n_train": n_train,
            "eval_every": cfg.eval_every,
            "evaluation": evaluation_note(cfg, n_train),
            "iteration_caps": {
                n: iterations_for(cfg, n) for n in cfg.optimizers if iterations_for(cfg, n) < cfg.iterations
            },
            "skipped": skipped,
        }
    )


# ---- the table ----------------------------------------------------------------------------------


def _batch_label(b: int, n_train: int) -> str:
    return f"full ({n_train})" if b == n_train else str(b)


def format_table(doc: dict) -> str:
    """summary.md: the settings, the per-point table and each method's ratios to SGD."""
    n, names = doc["n_train"], [t["name"] for t in doc["targets"]]
    caps = ", ".join(f"{k} at most {v}" for k, v in doc["iteration_caps"].items())
    grids = "; ".join(
        f"{o}: " + ", ".join(f"{k} ∈ {{{', '.join(f'{v:g}' for v in vals)}}}" for k, vals in g.items())
        for o, g in doc["grids"].items()
    )
    lines = [
        f"# Batch-size sweep: {doc['model']}",
        "",
        f"`{doc['command']}` — {doc['date']}, {doc['machine']['platform']}, "
        f"{doc['machine']['cpu_count']} CPUs, device {doc['machine']['device']}.",
        "",
        f"Targets, the same at every batch size: {'; '.join(f'**{x}**' for x in names)} — "
        f"{doc['targets_chosen']}.  Reached at the first measured iteration (every {doc['eval_every']}); "
        f"seconds of training only; {doc.get('evaluation', 'training loss on all training samples')}.",
        "",
        f"Budget: {doc['iterations']} iterations per run"
        + (f" ({caps})" if caps else "")
        + f", every configuration of each method's grid at every batch size, seed {doc['seed']} ({grids}; "
        f"the i-th configuration takes the i-th value of each).  Pick: {doc['rule']}.",
        "",
    ]
    for s in doc["skipped"]:
        lines.append(f"- {s['optimizer']} not run at batch {_batch_label(s['batch_size'], n)}: {s['reason']}")
    if doc["skipped"]:
        lines.append("")
    lines.append(points_markdown(doc).rstrip("\n"))
    methods = [o for o in dict.fromkeys(p["optimizer"] for p in doc["points"]) if o != "sgd"]
    per_method = {m: ratios(doc, m) for m in methods}
    if any(per_method.values()):
        lines += [
            "",
            "Each method's cost against SGD's at the same batch size, each with its own pick for the target "
            '("5.0× fewer": a fifth of SGD\'s iterations; "10× more time": ten times SGD\'s seconds):',
            "",
            "| batch | optimizer | " + " | ".join(f"{x}: iterations vs SGD | time vs SGD" for x in names) + " |",
            "|---|---|" + "---:|---:|" * len(names),
        ]
        for b in sorted({r["batch_size"] for rs in per_method.values() for r in rs}):
            for m, rs in per_method.items():
                cells = [
                    format_ratio(r[f"{f}_ratio"], *words)
                    for r in rs
                    if r["batch_size"] == b
                    for f, words in (("iterations", ("fewer", "more")), ("seconds", ("less time", "more time")))
                ]
                if cells:
                    lines.append(f"| {_batch_label(b, n)} | {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---- reading the document back (notebook 05) ----------------------------------------------------
DOCUMENT_KEYS = ("command", "date", "machine", "model", "iterations", "targets", "rule", "grids", "points")
POINT_KEYS = ("batch_size", "optimizer", "trials", "picks", "seconds_per_iteration")
PICK_KEYS = ("trial", "settings", "iterations", "seconds")


def load_document(path) -> dict | None:
    """The JSON :func:`write_outputs` writes, or None when the file does not exist (not measured yet).

    A file that exists but lacks a key of the schema (:data:`DOCUMENT_KEYS`, per point
    :data:`POINT_KEYS`, a pick per target with :data:`PICK_KEYS`) is refused with the file and the
    missing key named.
    """
    path = Path(path)
    if not path.exists():
        return None
    doc = json.loads(path.read_text())
    missing = [k for k in DOCUMENT_KEYS if k not in doc]
    if missing:
        old = "rows" in doc and "points" not in doc
        raise ValueError(
            f"{path}: not a batch-sweep file, missing {missing} (expected keys {DOCUMENT_KEYS})"
            + (
                "; it is the older format without the trials (one pick by validation loss): re-run kfac-ref batch-sweep"
                if old
                else ""
            )  # fmt: skip
        )
    names = [t["name"] for t in doc["targets"]]
    for i, point in enumerate(doc["points"]):
        lacks = [k for k in POINT_KEYS if k not in point]
        if lacks:
            raise ValueError(f"{path}: points[{i}] lacks {lacks} (expected keys {POINT_KEYS})")
        for name in names:
            p = point["picks"].get(name)
            if p is None or any(k not in p for k in PICK_KEYS):
                raise ValueError(
                    f"{path}: points[{i}] has no complete pick for target {name!r} (expected keys {PICK_KEYS})"
                )
    return doc


def ratios(doc, method: str = "kfac", base: str = "sgd") -> list[dict]:
    """Per batch size (ascending) and target (the document's order): base's cost divided by method's
    (> 1: method is cheaper), each with its own pick for the target.

    Returns [{"batch_size", "target" (its name), "iterations_ratio", "seconds_ratio", "method_reached",
    "base_reached"}]; a ratio is None unless both reached the target (method after ≥ 1 step).
    """
    points = {(p["batch_size"], p["optimizer"]): p for p in doc["points"]}
    out = []
    for b in sorted({p["batch_size"] for p in doc["points"]}):
        m, s = points.get((b, method)), points.get((b, base))
        if m is None or s is None:
            continue
        for t in doc["targets"]:
            mt, st = m["picks"][t["name"]], s["picks"][t["name"]]
            both = bool(mt["iterations"]) and st["iterations"] is not None  # (reached at iteration 0: no ratio)
            out.append(
                {
                    "batch_size": b,
                    "target": t["name"],
                    "iterations_ratio": st["iterations"] / mt["iterations"] if both else None,
                    "seconds_ratio": st["seconds"] / mt["seconds"] if both else None,
                    "method_reached": mt["iterations"] is not None,
                    "base_reached": st["iterations"] is not None,
                }
            )
    return out


def points_markdown(doc, n_train: int | None = None) -> str:
    """A Markdown table of the sweep: one line per batch size and optimizer, per target its pick's
    iterations, seconds and configuration ("not reached" and "none of its K" when no configuration
    reached it), then the median seconds per iteration over the configurations and how many ran.

    n_train : the training set's size (default: the document's "n_train", if it has one): that
              batch size is shown as "full (N)".
    """
    n_train = doc.get("n_train") if n_train is None else n_train
    names = [t["name"] for t in doc["targets"]]
    lines = [
        "| batch | optimizer | "
        + " | ".join(f"iterations to {x} | seconds | pick" for x in names)
        + " | ms / iteration | configurations |",
        "|---|---|" + "---:|---:|---|" * len(names) + "---:|---:|",
    ]
    for p in sorted(doc["points"], key=lambda p: (p["batch_size"], p["optimizer"])):
        k, grid = len(p["trials"]), doc["grids"].get(p["optimizer"], {})
        cells = []
        for name in names:
            pk = p["picks"][name]
            if pk["trial"] is None:
                cells += ["not reached", "—", f"none of its {k}"]
            else:
                cells += [f"{pk['iterations']:d}", f"{pk['seconds']:.2f}", _settings_text(pk["settings"], grid) or "—"]
        ms = None if p["seconds_per_iteration"] is None else 1e3 * p["seconds_per_iteration"]
        lines.append(
            f"| {_batch_label(p['batch_size'], n_train)} | {p['optimizer']} | "
            + " | ".join(cells)
            + f" | {cell(ms, '.1f')} | {k} |"
        )
    return "\n".join(lines) + "\n"


# ---- the figure ---------------------------------------------------------------------------------

#: per target, in the document's order: (line style, marker, marker size, filled); the second an open
#: square drawn around the first's filled circle where both coincide
TARGET_STYLES = (("-", "o", 6, True), ("--", "s", 10, False), (":", "^", 8, False), ("-.", "D", 8, False))


def draw_batch_sweep(ax_iterations, ax_seconds, doc: dict, legend: bool = True) -> None:
    """Iterations (left) and seconds (right) to each target against the batch size, log–log, each
    method's point being its pick for that target.

    One colour per method, one line style per target (:data:`TARGET_STYLES`: solid circles for the
    first, dashed open squares for the second, drawn around the circle where the two coincide); a
    batch size where no configuration reached a target has no point.
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

    n = doc["n_train"]
    sizes = sorted({p["batch_size"] for p in doc["points"]})
    for name in dict.fromkeys(p["optimizer"] for p in doc["points"]):
        points = {p["batch_size"]: p for p in doc["points"] if p["optimizer"] == name}
        label = LABELS.get(name, name)
        if name == "ngd":
            label = "NGD (Woodbury)"
        if name in doc["iteration_caps"]:
            label += f", ≤ {doc['iteration_caps'][name]} it."
        color = COLORS.get(name)
        for t, (style, marker, size, filled) in zip(doc["targets"], TARGET_STYLES):
            for ax, field in ((ax_iterations, "iterations"), (ax_seconds, "seconds")):
                ys = [
                    np.nan
                    if b not in points or points[b]["picks"][t["name"]][field] is None
                    else points[b]["picks"][t["name"]][field]
                    for b in sizes
                ]
                ax.plot(
                    sizes,
                    ys,
                    style,
                    marker=marker,
                    color=color,
                    lw=1.6,
                    ms=size,
                    mew=1.5,
                    mfc=color if filled else "none",
                    label=f"{label}: {t['name']}",
                )
    for ax, ylab in ((ax_iterations, "iterations to target"), (ax_seconds, "seconds to target (training only)")):
        ax.set_xscale("log")
        if any(np.isfinite(y).any() for y in (line.get_ydata() for line in ax.get_lines())):
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        else:
            ax.text(0.5, 0.5, "no target reached", transform=ax.transAxes, ha="center")
        ax.set_xlim(min(sizes) / 1.25, max(sizes) * 1.25)
        ax.set_xticks(sizes, [f"full\n({b})" if b == n else str(b) for b in sizes])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("batch size B")
        ax.set_ylabel(ylab)
        ax.grid(True, which="both", alpha=0.3)
    if legend:
        ax_iterations.legend(fontsize=8)


def batch_sweep_figure(doc: dict):
    """A bare Figure (no pyplot) with :func:`draw_batch_sweep`'s two panels and a title."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 5.6), layout="constrained")
    ax_iterations, ax_seconds = fig.subplots(1, 2)
    draw_batch_sweep(ax_iterations, ax_seconds, doc, legend=False)
    fig.legend(*ax_iterations.get_legend_handles_labels(), loc="outside lower center", ncol=3, fontsize=9)
    caps = "".join(f", {k} ≤ {v}" for k, v in doc["iteration_caps"].items())
    fig.suptitle(
        f"{doc['model']}: cost to a fixed target against the batch size\n"
        f"{doc['iterations']} iterations per run{caps}; each method's grid at every B, per target the "
        "configuration that reaches it first; no point = not reached",
        fontsize=10,
    )
    return fig


# ---- the command --------------------------------------------------------------------------------


def write_outputs(out, doc: dict) -> None:
    """batch_sweep.json, summary.md and batch-sweep.png into ``out`` — all or nothing
    (:func:`kfac_ref.io.write_together`)."""
    write_together(writers(out, {JSON: doc, TABLE: format_table(doc), FIGURE: batch_sweep_figure(doc)}))


def run_batch_sweep(
    cfg: CompareConfig,
    batch_sizes=DEFAULT_BATCH_SIZES,
    targets=None,
    out="results/batch-sweep",
    command: str = "",
    progress_factory=None,
    log=print,
) -> dict:
    """Check everything, sweep, write the outputs; returns the document.

    cfg carries the model, data, iterations per run, optimizers, caps, eval_every, seed and device;
    its batch_size is ignored (each point sets its own).  targets: :class:`~.race.Target` s
    (default :data:`DEFAULT_TARGETS`).
    """
    targets = DEFAULT_TARGETS if targets is None else tuple(targets)
    check_sweep(cfg, targets)
    check_output_dir(out)
    cfg = sweep_config(cfg)
    data = load_data(cfg)
    sizes = resolve_batch_sizes(batch_sizes, data.n_train)
    check_settings(replace(cfg, grid=True, batch_size=min(sizes)), data)
    model = build_model(cfg, data)
    log(
        f"{cfg.dataset}: {data.n_train} training / {data.n_val} validation samples; {cfg.model} with "
        f"P = {model.num_params:,}; batch sizes {sizes}; {cfg.iterations} iterations per run; "
        f"targets {'; '.join(t.name for t in targets)}; {cfg.dtype}"
    )
    log(f"every {cfg.eval_every} iterations: {evaluation_note(cfg, data.n_train)}")
    points, skipped = sweep(cfg, sizes, data, to_numpy(get_flat_params(model)), progress_factory, log)
    doc = sweep_document(cfg, points, skipped, targets, data.n_train, model.num_params, command)
    write_outputs(out, doc)
    log(format_table(doc))
    return doc


# ---- the command line: kfac-ref batch-sweep ------------------------------------------------------
#: --quick: compare's budget (:data:`~.compare.QUICK`) with these changes
QUICK_ITERATIONS, QUICK_BATCH_SIZES = 8, (32, None)


def batch_size_list(text):
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


def _sizes_text(sizes) -> str:
    return ",".join("full" if b is None else str(b) for b in sizes)


def add_arguments(p) -> None:
    """The arguments of ``kfac-ref batch-sweep``."""
    add_model_arguments(p.add_argument_group("data and model"))
    g = p.add_argument_group("the sweep")
    g.add_argument(
        "--optimizers",
        type=arguments.optimizer_list,
        default=",".join(DEFAULT_OPTIMIZERS),
        help=f"comma-separated, any of {','.join(GRIDS)} (ngd: Woodbury solver, where C·B < P)",
    )
    g.add_argument(
        "--batch-sizes",
        type=batch_size_list,
        help=f"comma-separated; 'full' = the whole training set (default: {_sizes_text(DEFAULT_BATCH_SIZES)}; "
        f"with --quick: {_sizes_text(QUICK_BATCH_SIZES)})",
    )
    g.add_argument("--iterations", type=arguments.positive_int, default=DEFAULT_ITERATIONS, help="per run")
    g.add_argument(
        "--ngd-iterations",
        type=arguments.positive_int,
        default=ITERATION_CAPS["ngd"],
        help="at most this many iterations for NGD and BlockNGD (seconds per step)",
    )
    g.add_argument(
        "--target-loss",
        type=arguments.positive_float,
        default=DEFAULT_TARGETS[0].value,
        help="the training-loss target, the same at every batch size",
    )
    g.add_argument(
        "--target-acc",
        type=arguments.fraction,
        default=DEFAULT_TARGETS[1].value,
        help="the validation-accuracy target, the same at every batch size",
    )
    add_eval_arguments(g)  # --eval-every: the resolution of 'iterations to target'
    arguments.add_machine_arguments(g, CLI_DTYPE)
    g.add_argument("--out", default="results/batch-sweep", help="output folder")
    g.add_argument(
        "--quick",
        action="store_true",
        help=f"a tiny budget for smoke tests: {QUICK['max_train']} samples, a small ConvNet, "
        f"{QUICK_ITERATIONS} iterations, batch sizes {_sizes_text(QUICK_BATCH_SIZES)}",
    )
    g.add_argument("--quiet", action="store_true", help="no progress bars or log lines")


def run(args) -> int:
    """``kfac-ref batch-sweep``."""
    # the batch size is each point's own: --quick leaves it alone
    cfg = config_from_shared_args(args, {"iterations": QUICK_ITERATIONS, "batch_size": CompareConfig.batch_size})
    sizes = args.batch_sizes or (QUICK_BATCH_SIZES if args.quick else DEFAULT_BATCH_SIZES)
    with arguments.blas_threads(args, cfg.model):
        run_batch_sweep(
            cfg,
            sizes,
            sweep_targets(args.target_loss, args.target_acc),
            args.out,
            args.command_line,
            arguments.progress_bars(args),
            arguments.logger(args),
        )
    if not args.quiet:
        print(f"wrote {args.out}/{JSON}, {FIGURE}, {TABLE}")
    return 0
