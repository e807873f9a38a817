"""The race: iterations and seconds to fixed targets, the same tuning budget for every method.

The protocol (targets fixed in advance, K trials per method, per-target picks re-run on further
seeds, one configuration for all targets) and the outputs are docs/race.md's; evaluation is
outside the training clock (:class:`~kfac_ref.train.Trainer`).
"""

from __future__ import annotations

import datetime
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..io import check_output_dir, write_together
from ..params import get_flat_params
from . import arguments
from .compare import (
    CLI_DTYPE,
    CompareConfig,
    build_model,
    jsonable,
    load_data,
    machine_info,
    quick,
    run_one,
    settings_for,
    writers,
)

OPS = {"<=": lambda v, t: v <= t, ">=": lambda v, t: v >= t}


@dataclass(frozen=True)
class Target:
    """A level a run must reach: ``metric op value``, e.g. train_loss <= 0.01."""

    name: str
    metric: str  # a record field: "train_loss", "val_loss", "train_acc", "val_acc"
    op: str  # "<=" or ">="
    value: float

    def met(self, record: dict) -> bool:
        v = record.get(self.metric)
        return v is not None and math.isfinite(v) and OPS[self.op](v, self.value)


@dataclass(frozen=True)
class Workload:
    """A data set, a network, a batch size, an iteration budget and targets fixed in advance."""

    dataset: str
    model: str
    hidden: tuple
    channels: tuple
    batch_size: int
    iterations: int
    eval_every: int
    targets: tuple
    chosen: str  # how the targets were chosen (printed in summary.md)
    needs_data_dir: bool = False
    spaces: dict = field(default_factory=dict)  # {method: search space} where SPACES' does not suit the loss's scale
    spaces_chosen: str = ""  # why, when ``spaces`` is given

    def space(self, method: str) -> list:
        """The search space of ``method`` on this workload, in the order its trials run."""
        return self.spaces.get(method, SPACES[method])


def _loss_targets(*levels):
    return tuple(Target(f"train loss ≤ {v:g}", "train_loss", "<=", v) for v in levels)


WORKLOADS = {
    "digits-convnet": Workload(
        "digits",
        "convnet",
        (32,),
        (8, 16),
        batch_size=1024,
        iterations=300,
        eval_every=5,
        targets=_loss_targets(0.1, 0.03, 0.01) + (Target("val acc ≥ 0.95", "val_acc", ">=", 0.95),),
        chosen="round levels fixed before any race ran: the demo's training loss falls from 2.3 through "
        "0.1 and 0.01 within its 300 iterations for every method, and 0.95 is a validation accuracy the "
        "demo's methods reach (docs/results.md); none is a value of a race run",
    ),
    "fashion-convnet": Workload(
        "fashion-mnist",
        "convnet",
        (32,),
        (8, 16),
        batch_size=1024,
        iterations=175,  # three epochs of 58 batches
        eval_every=5,
        targets=_loss_targets(0.6, 0.45) + (Target("val acc ≥ 0.85", "val_acc", ">=", 0.85),),
        chosen="round levels fixed before any race ran, reached within three epochs by small ConvNets on "
        "Fashion-MNIST (about 0.3–0.4 training loss and 88–90% accuracy are typical there)",
        needs_data_dir=True,
    ),
    "fashion-autoencoder": Workload(
        "fashion-mnist",
        "autoencoder",
        (256, 128, 64, 16),  # [MG15] §13's depth (8 layers), narrower than its 1000-500-250-30
        (),
        batch_size=1024,
        iterations=250,
        eval_every=10,
        targets=(
            Target("train loss ≤ 320", "train_loss", "<=", 320.0),
            Target("train loss ≤ 280", "train_loss", "<=", 280.0),
            Target("train loss ≤ 260", "train_loss", "<=", 260.0),
            Target("val loss ≤ 280", "val_loss", "<=", 280.0),
        ),
        chosen="Bernoulli cross-entropy summed over the 784 pixels; round levels fixed before any race ran, "
        "between the loss of the mean image (384, the plateau deep autoencoders start on) and the pixels' "
        "entropy (188, the floor), below the plateau where pilot runs of K-FAC and Adam (seed 99, 300 "
        "iterations, not a race seed) had gone",
        needs_data_dir=True,
        spaces={"sgd": [{"lr": lr} for lr in (0.003, 0.01, 0.03, 0.001, 0.1, 0.0003)]},
        spaces_chosen="SGD's learning rates ten times smaller than the race's (the loss sums 784 pixels; "
        "in the pilot, lr 0.001–0.01 had not left the plateau in 300 iterations); Adam's and K-FAC's "
        "spaces are the race's",
    ),
    "cifar-convnet": Workload(
        "cifar10",
        "convnet",
        (64,),
        (16, 32),
        batch_size=1024,
        iterations=245,  # five epochs of 48 batches
        eval_every=5,
        targets=_loss_targets(1.6, 1.3) + (Target("val acc ≥ 0.5", "val_acc", ">=", 0.5),),
        chosen="round levels fixed before any race ran: a small ConvNet on CIFAR-10 passes 1.6 and 1.3 "
        "training loss and 50% accuracy within a few epochs",
        needs_data_dir=True,
    ),
}

#: each method's search space, in the order its trials run (the first K are used); every other
#: hyper-parameter is compare's setting for it (compare.DEFAULT_SETTINGS)
SPACES = {
    "sgd": [{"lr": lr} for lr in (0.03, 0.1, 0.3, 0.01, 1.0, 0.003)],
    "adam": [{"lr": lr} for lr in (1e-3, 3e-3, 1e-2, 3e-4, 3e-2, 1e-4)],
    "kfac": [{"damping": d} for d in (0.1, 0.03, 0.3, 0.01, 1.0, 0.003)],
}
DEFAULT_METHODS = ("sgd", "adam", "kfac")
#: methods whose comparison defaults (compare.DEFAULT_SETTINGS) are also run on the further seeds
DEFAULTS_MEASURED = ("kfac",)
DEFAULT_TRIALS = 4
DEFAULT_SEEDS = 3
#: --quick: a small budget for tests.  Its batches are 128 samples, not compare's quick 32: K-FAC's
#: exact-model step ([MG15] §7) fits the batch's own Fisher (rank ≤ 32·9 for 32 digits), and at λ₀ = 0.03
#: such a step diverged within five iterations on a random stand-in, where 120-sample batches did not.
QUICK_BOUNDS = {"iterations": 12, "eval_every": 2, "batch_size": 128}


# --- the rules, as pure functions of recorded runs -----------------------------------------
def reach(records, target: Target):
    """(iteration, seconds) of the first record that meets ``target``; None if none does."""
    for r in records:
        if target.met(r):
            return r["iteration"], r["seconds"]
    return None


def pick(trials, target: Target):
    """Index of the trial reaching ``target`` in the fewest iterations (ties: fewer seconds, then the
    earlier trial); None when no trial reaches it."""
    hits = [(hit, i) for i, t in enumerate(trials) if (hit := reach(t["records"], target)) is not None]
    return min(hits)[1] if hits else None


def single_pick(trials, targets) -> int:
    """The one configuration for all targets: most targets reached, then fewest iterations summed
    over them, then fewer seconds, then the earlier trial."""

    def score(i):
        hits = [h for h in (reach(trials[i]["records"], t) for t in targets) if h is not None]
        return -len(hits), sum(h[0] for h in hits), sum(h[1] for h in hits), i

    return min(range(len(trials)), key=score)


def spread(values) -> dict:
    """Median, min and max of per-seed values (None: not reached); a miss counts as +∞, so the
    median is None when half the seeds or more missed, and max is None when any seed missed."""
    got = sorted(v for v in values if v is not None)
    med = statistics.median(got + [math.inf] * (len(values) - len(got))) if values else math.inf
    return {
        "median": None if math.isinf(med) else med,
        "min": got[0] if got else None,
        "max": got[-1] if got and len(got) == len(values) else None,
        "reached": len(got),
        "of": len(values),
    }


def fastest_rival(picks: dict, target: str, method: str = "kfac"):
    """(name, median iterations, median seconds) of the non-``method`` pick with the fewest median
    iterations to ``target``; None when no other method reached it on most seeds."""
    rivals = []
    for name, p in picks.items():
        if name == method or target not in p:
            continue
        it, sec = spread(p[target]["iterations"])["median"], spread(p[target]["seconds"])["median"]
        if it is not None:
            rivals.append((it, sec, name))
    if not rivals:
        return None
    it, sec, name = min(rivals)
    return name, it, sec


# --- running it ----------------------------------------------------------------------------
def workload_config(name: str, data_dir=None, dtype: str = CLI_DTYPE, seed: int = 0, is_quick: bool = False):
    """The CompareConfig of workload ``name`` (its data, network, batch size and budget)."""
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}: expected one of {', '.join(WORKLOADS)}")
    w = WORKLOADS[name]
    if w.needs_data_dir and not data_dir:
        raise ValueError(f"workload {name} needs --data-dir: the {w.dataset} files (data/README.md)")
    cfg = CompareConfig(
        dataset=w.dataset,
        data_dir=data_dir,
        model=w.model,
        hidden=w.hidden,
        channels=w.channels,
        iterations=w.iterations,
        batch_size=w.batch_size,
        eval_every=w.eval_every,
        dtype=dtype,
        seed=seed,
    )
    return quick(replace(cfg, hidden=(), channels=()), **QUICK_BOUNDS) if is_quick else cfg


def train(cfg, method: str, settings: dict, data, seed: int, progress_factory=None) -> dict:
    """One run of ``method`` with ``settings`` on ``seed`` (its initial θ, batch order and draws)."""
    cfg = replace(cfg, seed=seed)
    theta0 = get_flat_params(build_model(cfg, data))  # θ₀ of this seed
    desc = f"{method} {settings} seed {seed}"
    run = run_one(cfg, method, settings, data, theta0, cfg.iterations, progress_factory, diagnose=False, desc=desc)
    return {"settings": settings, "seed": seed, "records": run["records"], "stopped": run["stopped"]}


def race_method(cfg, method, targets, data, space, seeds, progress_factory=None, default: bool = False) -> dict:
    """Tune ``method`` on the points of ``space``, pick per target and for all, re-run the picks on ``seeds``.

    ``default``: also run ``method`` at compare's settings (DEFAULT_SETTINGS, untuned) on ``seeds``,
    to measure how far the comparison's defaults are from the per-workload picks.
    """
    runs = [train(cfg, method, settings_for(cfg, method, point), data, cfg.seed, progress_factory) for point in space]
    tuned = len(runs)
    picks, reruns = {}, {}  # reruns: trial index → [runs on seeds]

    def on_seeds(i):
        if i not in reruns:
            reruns[i] = [train(cfg, method, runs[i]["settings"], data, s, progress_factory) for s in seeds]
            runs.extend(reruns[i])
        return reruns[i]

    def per_seed(seed_runs, t):
        """{"iterations": [...], "seconds": [...]}: each seed's first hit of ``t`` (None: missed)."""
        hits = [reach(r["records"], t) for r in seed_runs]
        return {"iterations": [h and h[0] for h in hits], "seconds": [h and h[1] for h in hits]}

    missed = {"iterations": [None] * len(seeds), "seconds": [None] * len(seeds)}
    for t in targets:
        i = pick(runs[:tuned], t)  # None: no trial reached it, nothing to re-run
        picks[t.name] = {
            "trial": i,
            "settings": None if i is None else runs[i]["settings"],
            "seeds": list(seeds),
            **(missed if i is None else per_seed(on_seeds(i), t)),
        }
    single = single_pick(runs[:tuned], targets)
    single_hits = {t.name: per_seed(on_seeds(single), t) for t in targets}
    out = {
        "trials": runs,
        "tuned": tuned,
        "picks": picks,
        "single": {"trial": single, "rule": SINGLE_RULE, "settings": runs[single]["settings"], **single_hits},
    }
    if default:
        settings = settings_for(cfg, method)
        same = [i for i in range(tuned) if runs[i]["settings"] == settings]
        if same:
            seed_runs = on_seeds(same[0])
        else:
            seed_runs = [train(cfg, method, settings, data, s, progress_factory) for s in seeds]
            runs.extend(seed_runs)
        hits = {t.name: per_seed(seed_runs, t) for t in targets}
        out["default"] = {"settings": settings, "seeds": list(seeds), **hits}
    return out


SINGLE_RULE = "most targets reached on the tuning seed, then fewest iterations summed over them"


def run_race(workload: str, out, *, data_dir=None, methods=DEFAULT_METHODS, trials=DEFAULT_TRIALS, seeds=DEFAULT_SEEDS,
             seed=0, dtype=CLI_DTYPE, device="cpu", workers=1, is_quick=False, settings=None,
             progress_factory=None, log=print):  # fmt: skip
    """The whole race of ``workload``; writes race.json, summary.md and race.png/.svg into ``out``.

    ``settings``: {method: {key: value}} every trial of that method runs with in place of compare's
    (never a searched key), e.g. {"kfac": compare.AMORTISED_KFAC} races the amortised K-FAC.
    ``workers``: blocks of samples on threads (model.workers; the CLI's --threads on a ConvNet).
    """
    check_output_dir(out)
    for m in methods:
        if m not in SPACES:
            raise ValueError(f"no search space for {m!r} in the race: expected any of {', '.join(SPACES)}")
    cfg = workload_config(workload, data_dir, dtype, seed, is_quick)
    cfg = replace(cfg, device=device, workers=workers, settings=settings or {})
    w = WORKLOADS[workload]
    spaces = {m: w.space(m) for m in methods}
    if not 1 <= trials <= min(len(sp) for sp in spaces.values()):
        raise ValueError(f"--trials must be 1 … {min(len(sp) for sp in spaces.values())}, got {trials}")
    for m, table in cfg.settings.items():
        if m not in methods:
            raise ValueError(f"--set {m}.…: {m} is not among the race's methods ({', '.join(methods)})")
        searched = set(table) & set(spaces[m][0])
        if searched:
            raise ValueError(f"--set {m}.{sorted(searched)[0]}: the race searches it ({spaces[m][:trials]})")
    targets = w.targets
    data = load_data(cfg)
    further = [seed + 1 + k for k in range(seeds)]
    doc = {
        "workload": workload,
        "tuning_seed": seed,
        "seeds": further,
        "targets": [asdict(t) for t in targets],
        "targets_chosen": WORKLOADS[workload].chosen,
        "config": asdict(cfg),
        "trials_per_method": trials,
        "search_spaces": {m: spaces[m][:trials] for m in methods},
        "search_spaces_chosen": w.spaces_chosen or "the race's search spaces (docs/race.md)",
        "machine": machine_info(cfg),
        "methods": {},
    }
    start = time.perf_counter()
    for m in methods:
        log(f"race {workload}: {m}, {trials} trials on seed {seed}, picks on seeds {further}")
        doc["methods"][m] = race_method(
            cfg, m, targets, data, spaces[m][:trials], further, progress_factory, default=m in DEFAULTS_MEASURED
        )
    doc["wall_seconds"] = time.perf_counter() - start  # the whole race, evaluation included
    doc["date"] = datetime.date.today().isoformat()
    doc = jsonable(doc)
    summary = format_race(doc)
    fig = race_figure(doc)
    files = {"race.json": doc, "race-tables.json": without_trials(doc), "summary.md": summary}
    write_together(writers(out, {**files, "race.png": fig, "race.svg": fig}))
    log(summary)
    return doc


# --- what it writes ------------------------------------------------------------------------
def _fmt(s: dict, unit: str) -> str:
    """'45 [40–50]' (median [min–max]); 'not reached' / 'k of n seeds' when seeds missed."""
    f = (lambda v: f"{v:.3g}") if unit == "s" else (lambda v: f"{v:g}")
    if s["median"] is None:
        return "not reached" if s["reached"] == 0 else f"not reached on {s['of'] - s['reached']} of {s['of']} seeds"
    worst = f(s["max"]) if s["max"] is not None else "not reached"
    return f"{f(s['median'])} [{f(s['min'])}–{worst}]"


def _ratio(rival, ours, more: str) -> str:
    """'3.2×' when K-FAC needs less (rival / ours), '1.5× more <unit>' when it needs more."""
    if rival is None or ours is None:
        return "—"
    if ours == 0:
        return "∞"
    r = rival / ours
    return f"{r:.1f}×" if r >= 1 else f"{1 / r:.1f}× {more}"


def format_race(doc: dict) -> str:
    """summary.md: the targets and how they were chosen, per target each method's pick with the median
    [min–max] of iterations and seconds over the seeds, K-FAC against the fastest other method, and
    the single configuration per method."""
    methods, names = doc["methods"], [t["name"] for t in doc["targets"]]
    spaces = ", ".join(f"{m}: {doc['search_spaces'][m]}" for m in methods)
    lines = [
        f"# Race: {doc['workload']}",
        "",
        f"Targets, fixed in advance: {'; '.join(names)} — {doc['targets_chosen']}.",
        f"Tuning: {doc['trials_per_method']} trials per method on seed {doc['tuning_seed']} "
        f"({spaces}); per target the trial that "
        f"reaches it in the fewest iterations, re-run on seeds {doc['seeds']}: median [min–max].  "
        f"{doc['config']['dtype']}, batch {doc['config']['batch_size']}, budget "
        f"{doc['config']['iterations']} iterations; seconds are training time on a "
        f"{doc['machine'].get('processor', 'CPU')} and noisy on a busy machine."
        + "".join(f"  {m} runs with {table} in place of compare's." for m, table in doc["config"]["settings"].items()),
        "",
        "| target | method | pick | iterations | seconds |",
        "|---|---|---|---:|---:|",
    ]
    for name in names:
        for m, res in methods.items():
            p = res["picks"][name]
            if p["trial"] is None:
                lines.append(f"| {name} | {m} | none of its trials reached it | — | — |")
                continue
            lines.append(
                f"| {name} | {m} | {_settings_text(p['settings'], doc, m)} | {_fmt(spread(p['iterations']), 'it')} "
                f"| {_fmt(spread(p['seconds']), 's')} |"
            )
    if "kfac" in methods and len(methods) > 1:
        lines += ["", "K-FAC against the fastest other method per target (ratio of medians):", ""]
        lines += ["| target | fastest other | fewer iterations | less time |", "|---|---|---:|---:|"]
        for name in names:
            k = methods["kfac"]["picks"][name]
            ours_it, ours_s = (spread(k[f])["median"] for f in ("iterations", "seconds"))  # None: not reached
            rival = fastest_rival({m: r["picks"] for m, r in methods.items()}, name)
            if rival is None:
                lines.append(f"| {name} | no other method reached it | — | — |")
            else:
                its, secs = _ratio(rival[1], ours_it, "more iterations"), _ratio(rival[2], ours_s, "more time")
                lines.append(f"| {name} | {rival[0]} | {its} | {secs} |")
    lines += [
        "",
        f"Iterations (median [min–max] over the seeds) with one configuration per method for every "
        f"target ({SINGLE_RULE}):",
        "",
    ]
    lines += ["| method | configuration | " + " | ".join(names) + " |", "|---|---|" + "---:|" * len(names)]
    for m, res in methods.items():
        cells = [_fmt(spread(res["single"][n]["iterations"]), "it") for n in names]
        lines.append(f"| {m} | {_settings_text(res['single']['settings'], doc, m)} | " + " | ".join(cells) + " |")
    for m, res in methods.items():
        if "default" in res:
            lines += ["", *default_lines(m, res, names)]
    return "\n".join(lines) + "\n"


def default_ratio(res, name: str):
    """Median iterations to target ``name`` of the method at compare's defaults over its per-target
    pick's (≥ 1: the defaults are slower); None when either missed on most seeds."""
    ours = spread(res["default"][name]["iterations"])["median"]
    best = spread(res["picks"][name]["iterations"])["median"]
    return None if ours is None or best is None else ours / best


def default_lines(method: str, res: dict, names) -> list:
    """summary.md's table: the method at compare's untuned defaults against its per-target picks."""
    d = res["default"]
    shown = ", ".join(f"{k} {v:g}" for k, v in d["settings"].items() if k in ("lr", "damping"))
    lines = [
        f"{method} at compare's defaults ({shown}; untuned) "
        "against its per-target pick, iterations median [min–max] over the same seeds:",
        "",
        "| target | defaults | per-target pick | defaults / pick |",
        "|---|---:|---:|---:|",
    ]
    for name in names:
        r = default_ratio(res, name)
        lines.append(
            f"| {name} | {_fmt(spread(d[name]['iterations']), 'it')} "
            f"| {_fmt(spread(res['picks'][name]['iterations']), 'it')} | {'—' if r is None else f'{r:.2f}'} |"
        )
    return lines


def single_runs(res) -> list:
    """The re-runs on the further seeds of a method's single configuration (race.json's "trials")."""
    settings = res["trials"][res["single"]["trial"]]["settings"]
    return [r for r in res["trials"][res["tuned"] :] if r["settings"] == settings]


#: race-tables.json of the races measured for the documentation, one per workload (docs/race.md)
MEASURED = Path(__file__).with_name("measured")


def measured_note(workload: str) -> str:
    """Markdown: the measured race of ``workload`` (MEASURED/race-<workload>.json) as summary.md's
    tables under a heading naming the command, the date and the machine; one line if none is stored."""
    path = MEASURED / f"race-{workload}.json"
    if not path.is_file():
        return f"No measured race of {workload} is stored: run `kfac-ref race {workload}` (docs/race.md).\n"
    doc = json.loads(path.read_text(encoding="utf-8"))
    mach = doc["machine"]
    when = f"{doc['date']}, {mach['cpu_count']}-core {mach['processor']}, {doc['wall_seconds'] / 60:.1f} minutes in all"
    return (
        f"## How much faster, measured fairly: `kfac-ref race {workload}` ({when})\n\n"
        "The numbers above are one configuration per method on one seed.  The race tunes every method with "
        "the same budget and repeats each pick on further seeds (docs/race.md):\n\n"
        + format_race(doc).split("\n", 2)[2]  # without its title line
    )


def without_trials(doc: dict) -> dict:
    """race.json without the trials' records: everything summary.md's tables need (race-tables.json)."""
    methods = {m: {k: v for k, v in res.items() if k != "trials"} for m, res in doc["methods"].items()}
    return {**doc, "methods": methods}


def _settings_text(settings: dict, doc: dict, method: str) -> str:
    """The searched hyper-parameters of a pick (the others are compare's)."""
    keys = doc["search_spaces"][method][0].keys()
    return ", ".join(f"{k} {settings[k]:g}" for k in keys)


def race_figure(doc: dict):
    """The article's layout: loss and accuracy against iterations and seconds, training solid and
    validation dashed; per method the median curve of its single configuration over the seeds, with
    a min–max band.  Without accuracies (a reconstruction) only the loss row."""
    from matplotlib.figure import Figure

    from .curves import COLORS, LABELS

    pairs = [("train_loss", "val_loss"), ("train_acc", "val_acc")]
    if not any(
        r.get("val_acc") is not None for res in doc["methods"].values() for t in res["trials"] for r in t["records"]
    ):
        pairs = pairs[:1]
    fig = Figure(figsize=(11, 3.9 * len(pairs)), layout="constrained")
    axes = fig.subplots(len(pairs), 2, squeeze=False)
    for m, res in doc["methods"].items():
        runs = single_runs(res)
        for row, pair in enumerate(pairs):
            for metric in pair:
                pts = [
                    [(r["iteration"], r["seconds"], r[metric]) for r in run["records"] if r.get(metric) is not None]
                    for run in runs
                ]
                n = min(len(p) for p in pts)
                if n == 0:
                    continue
                vals = np.array([[v for _, _, v in p[:n]] for p in pts])  # (seeds, n)
                its = [p[0] for p in pts[0][:n]]
                secs = np.median(np.array([[s for _, s, _ in p[:n]] for p in pts]), axis=0)
                style = "--" if metric.startswith("val") else "-"
                label = f"{LABELS.get(m, m)} {'validation' if style == '--' else 'training'}"
                for col, xs in enumerate((its, secs)):
                    ax = axes[row, col]
                    ax.plot(xs, np.median(vals, axis=0), style, color=COLORS.get(m), lw=1.4, label=label)
                    ax.fill_between(xs, vals.min(axis=0), vals.max(axis=0), color=COLORS.get(m), alpha=0.15, lw=0)
    for row, ylabel in enumerate(("loss", "accuracy")[: len(pairs)]):
        for col, xlabel in enumerate(("iterations", "seconds (training)")):
            ax = axes[row, col]
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.grid(True, alpha=0.3)
            if row == 0:
                ax.set_yscale("log")
    for t in doc["targets"]:
        row = 0 if "loss" in t["metric"] else 1
        for col in (0, 1) if row < len(pairs) else ():
            axes[row, col].axhline(t["value"], color="0.5", lw=0.6, ls=":")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(
        f"race {doc['workload']}: single configuration per method, median and min–max over seeds {doc['seeds']}",
        fontsize=10,
    )
    return fig


# --- the sub-command -----------------------------------------------------------------------
def add_arguments(p) -> None:
    """``kfac-ref race WORKLOAD``."""
    p.add_argument("workload", choices=tuple(WORKLOADS), help="data set, network, budget and targets")
    p.add_argument("--data-dir", help="folder with the workload's data files (all but digits-convnet)")
    p.add_argument(
        "--methods",
        type=arguments.optimizer_list,
        default=",".join(DEFAULT_METHODS),
        help=f"comma-separated, any of {','.join(SPACES)} (those with a search space)",
    )
    p.add_argument(
        "--trials",
        type=arguments.positive_int,
        default=DEFAULT_TRIALS,
        help="tuning trials per method (the same K for all)",
    )
    p.add_argument(
        "--seeds", type=arguments.positive_int, default=DEFAULT_SEEDS, help="further seeds each pick is re-run on"
    )
    arguments.add_set_argument(
        p,
        "a hyper-parameter every trial of a method runs with in place of compare's (not a searched one), "
        "e.g. kfac.rescale=false; repeatable",
    )
    arguments.add_machine_arguments(p, CLI_DTYPE)  # --seed: the tuning seed; the further seeds are seed + 1, …
    p.add_argument("--out", default="results/race", help="output folder")
    p.add_argument("--quick", action="store_true", help=f"a small budget for tests: {QUICK_BOUNDS}, small widths")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args) -> int:
    model = WORKLOADS[args.workload].model if args.workload in WORKLOADS else ""  # run_race names a wrong one
    with arguments.blas_threads(args, model):
        run_race(
            args.workload,
            args.out,
            **{k: getattr(args, k) for k in ("data_dir", "methods", "trials", "seeds", "seed", "dtype", "device")},
            workers=arguments.thread_plan(args, model)[1],
            is_quick=args.quick,
            settings=arguments.set_settings(args.set),
            progress_factory=arguments.progress_bars(args),
            log=arguments.logger(args),
        )
    return 0
