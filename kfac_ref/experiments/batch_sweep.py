"""When does K-FAC pay off?  Iterations and seconds to a target, against the batch size (docs/results.md).

For each batch size B and each method, every configuration of the method's grid
(:data:`~.compare.GRIDS`, what ``compare --grid`` tries) trains for the same iterations from
the same θ₀ on the same seeded mini-batches, and the one with the lowest last validation loss
is kept (:func:`~.compare.grid_score`): the same tuning budget at every B, nothing tuned on the
targets.  Of the kept run the table reports the first measured iteration and the training
seconds at which the training loss is ≤ ``train_loss`` and the validation accuracy ≥
``val_acc`` (:func:`~.summary.time_to_target`); a run that never does gets None, never an
extrapolated value.  Exact NGD runs with the Woodbury solver (docs/math.md §7), only where
C·B < P, its iterations capped (:data:`ITERATION_CAPS`).  This is Zhang et al. 2019's question
("Which algorithmic choices matter at which batch sizes?"): a larger batch has a less noisy
gradient, so curvature can be used more aggressively.

Outputs, all or none (:func:`kfac_ref.io.write_together`): ``batch_sweep.json`` (schema in
:func:`sweep_document`), ``summary.md`` (:func:`format_table`), ``batch-sweep.png``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..backend import to_numpy
from ..io import check_output_dir, write_together
from ..params import get_flat_params
from . import arguments
from .compare import (
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
    load_data,
    machine_info,
    writers,
)
from .curves import COLORS, LABELS
from .summary import cell, format_ratio, seconds_per_iteration, time_to_target

DEFAULT_BATCH_SIZES = (128, 256, 512, 1024, None)  # None: the whole training set
DEFAULT_OPTIMIZERS = ("sgd", "ngd", "kfac")
# Fixed across batch sizes, so that the points of one line are comparable; chosen from a pilot run of the
# default sweep so that every SGD and K-FAC line has a point: there both reach both targets at every B within
# 200 iterations (SGD after 130–180), well short of their last figures (training loss 0.013–0.018 for SGD,
# < 0.002 for K-FAC; best validation accuracy 0.961 for SGD, 0.969–0.981 for K-FAC), so a count is not
# decided by the last few measurements.  0.95 is 341 of the 359 validation images.
DEFAULT_TARGETS = {"train_loss": 0.05, "val_acc": 0.95}
# 200 iterations per run: SGD needs up to 180 for the default targets at batch 128.  The whole default
# sweep (5 batch sizes, SGD and K-FAC 3 configurations each, NGD 3 at B = 128 and 256) is 6,000 steps
# of SGD or K-FAC and 120 of NGD; docs/results.md gives its measured wall-clock time.
DEFAULT_ITERATIONS = 200
# NGD (Woodbury) solves a C·B × C·B system every step: seconds per step at B = 256 on 2 cores.
ITERATION_CAPS = {"ngd": 20, "block-ngd": 20}
FIGURE = "batch-sweep.png"
JSON = "batch_sweep.json"
TABLE = "summary.md"


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


def check_sweep(cfg: CompareConfig, targets: dict) -> None:
    """Optimizers and targets, checked before anything is loaded."""
    for name in cfg.optimizers:
        if name not in GRIDS:
            raise ValueError(f"unknown optimizer {name!r}: expected any of {sorted(GRIDS)}")
    if len(set(cfg.optimizers)) != len(cfg.optimizers) or not cfg.optimizers:
        raise ValueError(f"optimizers {list(cfg.optimizers)}: give each at least once and at most once")
    if set(targets) != {"train_loss", "val_acc"}:
        raise ValueError(f"targets {targets}: expected exactly the keys 'train_loss' and 'val_acc'")
    if not (isinstance(targets["train_loss"], (int, float)) and 0 < targets["train_loss"] < math.inf):
        raise ValueError(f"training-loss target {targets['train_loss']!r}: expected a positive number")
    if not (isinstance(targets["val_acc"], (int, float)) and 0 < targets["val_acc"] <= 1):
        raise ValueError(f"validation-accuracy target {targets['val_acc']!r}: expected an accuracy in (0, 1]")


def sweep_config(cfg: CompareConfig) -> CompareConfig:
    """cfg with NGD on its Woodbury solver (the only one affordable per step at these batch sizes)."""
    return replace(cfg, settings={**cfg.settings, "ngd": {**cfg.settings.get("ngd", {}), "solver": "woodbury"}})


def tune(cfg: CompareConfig, name: str, data, theta0, progress_factory=None) -> dict:
    """:func:`~.compare.grid_search` at cfg.batch_size, as one point of the sweep.

    Returns {"batch_size", "optimizer", "runs": [len(grid)] run dicts of :func:`~.compare.run_one`,
    "scores": [len(grid)] :func:`~.compare.grid_score` values, "pick": index of the lowest (first on ties)}.
    """
    bars = None if progress_factory is None else (lambda desc, n: progress_factory(f"B={cfg.batch_size} {desc}", n))
    _, trials = grid_search(cfg, name, data, theta0, bars)
    scores = [t["val_loss"] for t in trials]
    return {
        "batch_size": cfg.batch_size,
        "optimizer": name,
        "runs": [t["run"] for t in trials],
        "scores": scores,
        "pick": min(range(len(scores)), key=scores.__getitem__),
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
                keys = list(GRIDS[name][0])
                picked = point["runs"][point["pick"]]["settings"]
                log(
                    f"B={b} {name}: picked { ({k: picked[k] for k in keys}) } "
                    f"(last validation losses {', '.join(f'{s:.4g}' for s in point['scores'])})"
                )
    return points, skipped


def point_row(point: dict, targets: dict) -> dict:
    """One row of the table: the picked run's iterations and seconds to each target, and its summary."""
    run = point["runs"][point["pick"]]
    recs = run["records"]
    row = {
        "batch_size": point["batch_size"],
        "optimizer": point["optimizer"],
        "settings": run["settings"],
        "runs_tried": len(point["runs"]),
    }
    for key, value in targets.items():
        it, sec = time_to_target(recs, key, value)
        row[key] = {"iterations": it, "seconds": sec}
    losses = [r["train_loss"] for r in recs if r["train_loss"] is not None]
    accs = [r["val_acc"] for r in recs if r["val_acc"] is not None and math.isfinite(r["val_acc"])]
    row.update(
        seconds_per_iteration=seconds_per_iteration(run),
        final_train_loss=losses[-1] if losses else None,
        best_val_acc=max(accs) if accs else None,
    )
    if run["stopped"]:
        row["stopped"] = run["stopped"]
    return row


def sweep_document(
    cfg: CompareConfig, points, skipped, targets: dict, n_train: int, num_params: int, command: str = ""
) -> dict:
    """The JSON document (batch_sweep.json)::

        {"command", "date", "machine", "model", "iterations", "targets": {"train_loss", "val_acc"},
         "grids": {opt: {param: [values]}},   # the i-th configuration takes the i-th value of each
         "rows": [{"batch_size", "optimizer", "settings", "runs_tried",
                   "train_loss": {"iterations", "seconds"}, "val_acc": {"iterations", "seconds"},
                   "seconds_per_iteration", "final_train_loss", "best_val_acc"}],
         "n_train", "eval_every", "evaluation", "iteration_caps": {opt: iterations}, "skipped": [...]}

    "batch_size" is the actual size (n_train for the whole training set); None = not reached.
    """
    model = f"{cfg.dataset} {cfg.model}"
    if cfg.model == "convnet":
        model += f" (channels {','.join(map(str, cfg.channels))}, fc {cfg.hidden[0] if cfg.hidden else 0})"
    else:
        model += f" (hidden {','.join(map(str, cfg.hidden))})"
    model += f", P = {num_params:,}, {cfg.dtype}"
    return {
        "command": command,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(cfg),
        "model": model,
        "iterations": cfg.iterations,
        "targets": dict(targets),
        "grids": {n: {k: [p[k] for p in GRIDS[n]] for k in GRIDS[n][0]} for n in cfg.optimizers},
        "rows": [point_row(p, targets) for p in points],
        "n_train": n_train,
        "eval_every": cfg.eval_every,
        "evaluation": evaluation_note(cfg, n_train),
        "iteration_caps": {
            n: iterations_for(cfg, n) for n in cfg.optimizers if iterations_for(cfg, n) < cfg.iterations
        },
        "skipped": skipped,
    }


# ---- the table ----------------------------------------------------------------------------------


def _batch_label(b: int, n_train: int) -> str:
    return f"full ({n_train})" if b == n_train else str(b)


def format_table(doc: dict) -> str:
    """summary.md: the settings, the per-point table and each method's ratios to SGD."""
    t, n = doc["targets"], doc["n_train"]
    lt, at = f"train loss ≤ {t['train_loss']:g}", f"val acc ≥ {t['val_acc']:g}"
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
        f"Targets, the same at every batch size: **{lt}** and **{at}** (first measured iteration, "
        f"every {doc['eval_every']}; seconds of training only; — = not reached within the budget); "
        f"{doc.get('evaluation', 'training loss on all training samples')}.",
        "",
        f"Budget: {doc['iterations']} iterations per run"
        + (f" ({caps})" if caps else "")
        + f", every configuration of each method's grid at every batch size ({grids}; the i-th "
        "configuration takes the i-th value of each), the pick being the lowest last validation loss "
        "(compare --grid's rule).",
        "",
    ]
    for s in doc["skipped"]:
        lines.append(f"- {s['optimizer']} not run at batch {_batch_label(s['batch_size'], n)}: {s['reason']}")
    if doc["skipped"]:
        lines.append("")
    lines.append(points_markdown(doc).rstrip("\n"))
    methods = [o for o in dict.fromkeys(r["optimizer"] for r in doc["rows"]) if o != "sgd"]
    per_method = {m: ratios(doc, m) for m in methods}
    if any(per_method.values()):
        lines += [
            "",
            "Each method's cost against SGD's at the same batch size (\"5.0× fewer\": a fifth of SGD's "
            'iterations; "10× more time": ten times SGD\'s seconds):',
            "",
            f"| batch | optimizer | {lt}: iterations vs SGD | time vs SGD | {at}: iterations vs SGD | time vs SGD |",
            "|---|---|---:|---:|---:|---:|",
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
DOCUMENT_KEYS = ("command", "date", "machine", "model", "iterations", "targets", "grids", "rows")
ROW_KEYS = (
    "batch_size",
    "optimizer",
    "settings",
    "runs_tried",
    "train_loss",
    "val_acc",
    "seconds_per_iteration",
    "final_train_loss",
    "best_val_acc",
)


def load_document(path) -> dict | None:
    """The JSON :func:`write_outputs` writes, or None when the file does not exist (not measured yet).

    A file that exists but lacks a key of the schema (:data:`DOCUMENT_KEYS`, per row
    :data:`ROW_KEYS`) is refused with the file and the missing key named.
    """
    path = Path(path)
    if not path.exists():
        return None
    doc = json.loads(path.read_text())
    missing = [k for k in DOCUMENT_KEYS if k not in doc]
    if missing:
        raise ValueError(f"{path}: not a batch-sweep file, missing {missing} (expected keys {DOCUMENT_KEYS})")
    for i, row in enumerate(doc["rows"]):
        lacks = [k for k in ROW_KEYS if k not in row]
        if lacks:
            raise ValueError(f"{path}: rows[{i}] lacks {lacks} (expected keys {ROW_KEYS})")
    return doc


def ratios(doc, method: str = "kfac", base: str = "sgd") -> list[dict]:
    """Per batch size (ascending) and target: base's cost divided by method's (> 1: method is cheaper).

    Returns [{"batch_size", "target" ('train_loss' | 'val_acc'), "iterations_ratio", "seconds_ratio",
    "method_reached", "base_reached"}]; a ratio is None unless both reached the target (method after ≥ 1 step).
    """
    rows = {(r["batch_size"], r["optimizer"]): r for r in doc["rows"]}
    out = []
    for b in sorted({r["batch_size"] for r in doc["rows"]}):
        m, s = rows.get((b, method)), rows.get((b, base))
        if m is None or s is None:
            continue
        for target in ("train_loss", "val_acc"):
            mt, st = m[target], s[target]
            both = bool(mt["iterations"]) and st["iterations"] is not None  # (reached at iteration 0: no ratio)
            out.append(
                {
                    "batch_size": b,
                    "target": target,
                    "iterations_ratio": st["iterations"] / mt["iterations"] if both else None,
                    "seconds_ratio": st["seconds"] / mt["seconds"] if both else None,
                    "method_reached": mt["iterations"] is not None,
                    "base_reached": st["iterations"] is not None,
                }
            )
    return out


def points_markdown(doc, n_train: int | None = None) -> str:
    """A Markdown table of the sweep: one line per batch size and optimizer, with the grid's pick.

    n_train : the training set's size (default: the document's "n_train", if it has one): that
              batch size is shown as "full (N)".  A value the sweep could not measure shows "—".
    """
    n_train = doc.get("n_train") if n_train is None else n_train
    t = doc["targets"]
    lines = [
        f"| batch | optimizer | iterations to train loss ≤ {t['train_loss']:g} | seconds | "
        f"iterations to val acc ≥ {t['val_acc']:g} | seconds | ms / iteration | final train loss "
        f"| best val acc | runs tried | picked |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in sorted(doc["rows"], key=lambda r: (r["batch_size"], r["optimizer"])):
        b, miss = _batch_label(r["batch_size"], n_train), "not reached"
        ms = None if r["seconds_per_iteration"] is None else 1e3 * r["seconds_per_iteration"]
        picked = ", ".join(f"{k} {r['settings'][k]:g}" for k in doc["grids"].get(r["optimizer"], ())) or "—"
        lines.append(
            f"| {b} | {r['optimizer']} | {cell(r['train_loss']['iterations'], 'd', miss)} "
            f"| {cell(r['train_loss']['seconds'], '.2f', miss)} | {cell(r['val_acc']['iterations'], 'd', miss)} "
            f"| {cell(r['val_acc']['seconds'], '.2f', miss)} | {cell(ms, '.1f')} "
            f"| {cell(r['final_train_loss'], '.3f')} | {cell(r['best_val_acc'], '.3f')} "
            f"| {r['runs_tried']} | {picked} |"
        )
    return "\n".join(lines) + "\n"


# ---- the figure ---------------------------------------------------------------------------------

# (line style, marker, marker size, filled): an open square around a filled circle where both coincide
TARGET_STYLES = {"train_loss": ("-", "o", 6, True), "val_acc": ("--", "s", 10, False)}


def draw_batch_sweep(ax_iterations, ax_seconds, doc: dict, legend: bool = True) -> None:
    """Iterations (left) and seconds (right) to each target against the batch size, log–log.

    One colour per method; solid circles for the training-loss target, dashed squares for the
    validation-accuracy target, open squares (drawn around the circle where the two coincide); a batch size
    where a target was not reached has no point.
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

    t, n = doc["targets"], doc["n_train"]
    sizes = sorted({r["batch_size"] for r in doc["rows"]})
    what = {"train_loss": f"train loss ≤ {t['train_loss']:g}", "val_acc": f"val acc ≥ {t['val_acc']:g}"}
    for name in dict.fromkeys(r["optimizer"] for r in doc["rows"]):
        rows = {r["batch_size"]: r for r in doc["rows"] if r["optimizer"] == name}
        label = LABELS.get(name, name)
        if name == "ngd":
            label = "NGD (Woodbury)"
        if name in doc["iteration_caps"]:
            label += f", ≤ {doc['iteration_caps'][name]} it."
        color = COLORS.get(name)
        for key, (style, marker, size, filled) in TARGET_STYLES.items():
            for ax, field in ((ax_iterations, "iterations"), (ax_seconds, "seconds")):
                ys = [np.nan if b not in rows or rows[b][key][field] is None else rows[b][key][field] for b in sizes]
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
                    label=f"{label}: {what[key]}",
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
        f"{doc['iterations']} iterations per run{caps}; each method tuned on its own grid at every B; "
        "no point = not reached",
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
    its batch_size is ignored (each point sets its own).
    """
    targets = dict(DEFAULT_TARGETS if targets is None else targets)
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
        f"targets {targets}; {cfg.dtype}"
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
        default=DEFAULT_TARGETS["train_loss"],
        help="the training-loss target, the same at every batch size",
    )
    g.add_argument(
        "--target-acc",
        type=arguments.fraction,
        default=DEFAULT_TARGETS["val_acc"],
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
    with arguments.blas_threads(args):
        run_batch_sweep(
            cfg,
            sizes,
            {"train_loss": args.target_loss, "val_acc": args.target_acc},
            args.out,
            args.command_line,
            arguments.progress_bars(args),
            arguments.logger(args),
        )
    if not args.quiet:
        print(f"wrote {args.out}/{JSON}, {FIGURE}, {TABLE}")
    return 0
