"""The article's experiment: one model, one dataset, SGD vs NGD vs K-FAC.

Every optimizer starts from the same initial parameters and sees the same
mini-batches (one seed); the only difference between two runs is the method.
Optionally a small grid search gives every optimizer the *same* budget (the
same number of configurations, each trained for the same iterations) and
keeps, per optimizer, the configuration with the lowest validation loss.

Outputs (written to a temporary folder, then moved into ``out`` at the end, so
a failed run leaves no partial results): ``history.json``, ``history_<opt>.csv``,
``curves.png``/``curves.svg`` and ``summary.md``.

With ``diagnostics_every = K > 0`` (`kfac-ref compare --diagnostics K`), every K
iterations each method's step is measured against the exact damped natural gradient
on that iteration's batch, at θ before the step (:func:`diagnostics_hook`).  This
runs outside the training clock, like evaluation, and adds ``angle_deg``,
``curvature_error`` and ``natural_damping`` to the records of the iterations
measured, a panel to the figure and a line per method to summary.md.
"""

from __future__ import annotations

import csv
import json
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import models, nn
from ..backend import gpu_name, to_numpy
from ..data import load_dataset
from ..io import write_together
from ..optim import OPTIMIZERS, SGD
from ..params import get_flat_params, set_flat_params
from ..train import RECORD_FIELDS, Trainer
from ..validate import check_number
from .curves import curves_figure, save_figure
from .diagnostics import diagnostics
from .summary import format_summary, summarize, target_list

# The settings every optimizer runs with in a comparison.  Each is named in full — a comparison
# never picks up a class default — and each tuned value is the pick of `kfac-ref compare --grid`
# (the same budget for every method: three configurations each, docs/results.md) on the digits
# ConvNet at the default batch size.  Any of them can be overridden (`--set kfac.T_inv=1`).
DEFAULT_SETTINGS = {
    "sgd": {"lr": 0.03, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0},
    "ngd": {"lr": 0.5, "momentum": 0.0, "damping": 0.1, "kind": "exact", "solver": "dense", "kl_clip": 0.1},
    "block-ngd": {"lr": 0.5, "momentum": 0.0, "damping": 0.1, "kind": "exact", "kl_clip": 0.1},
    "diag-ngd": {"lr": 0.5, "momentum": 0.0, "damping": 0.1, "kind": "exact", "kl_clip": 0.1},
    # K-FAC with its amortisations named: Monte-Carlo factors from the whole batch every T_cov = 10
    # steps, inverses every T_inv = 10 steps (kfac-pytorch's factor/inverse periods); in between a
    # step costs what an SGD step costs plus two small products per layer.  The step length is
    # bounded by KL-clipping (κ = 10⁻³, [BGM17]) with heavy-ball momentum.
    "kfac": {
        "lr": 1.0,
        "momentum": 0.9,
        "damping": 0.1,
        "kind": "mc",
        "mc_samples": 1,
        "T_cov": 10,
        "T_inv": 10,
        "ema_decay": 0.95,
        "stats_fraction": 1.0,
        "damping_mode": "factored",
        "kl_clip": 1e-3,
        "rescale": False,
        "adapt_damping": False,
    },
    # block-tridiagonal K-FAC and EKFAC (docs/math.md §11–§12): K-FAC's schedule and safeguard
    "kfac-tridiag": {
        "lr": 1.0,
        "momentum": 0.9,
        "damping": 0.03,
        "kind": "mc",
        "T_cov": 10,
        "T_inv": 10,
        "stats_fraction": 1.0,
        "kl_clip": 1e-3,
        "rescale": False,
        "adapt_damping": False,
    },
    "ekfac": {
        "lr": 1.0,
        "momentum": 0.9,
        "damping": 0.03,
        "kind": "mc",
        "T_cov": 10,
        "T_inv": 10,
        "T_scale": 10,
        "stats_fraction": 1.0,
        "kl_clip": 1e-3,
        "rescale": False,
        "adapt_damping": False,
    },
}
# The grid: three configurations per optimizer, so every method gets the same budget.
GRIDS = {
    "sgd": [{"lr": lr} for lr in (0.03, 0.1, 0.3)],
    "ngd": [{"lr": lr, "damping": d} for lr, d in ((0.3, 0.1), (0.5, 0.1), (1.0, 0.3))],
    "block-ngd": [{"lr": lr, "damping": d} for lr, d in ((0.3, 0.1), (0.5, 0.1), (1.0, 0.3))],
    "kfac": [{"damping": d} for d in (0.01, 0.03, 0.1)],
    "kfac-tridiag": [{"damping": d} for d in (0.01, 0.03, 0.1)],
    "ekfac": [{"damping": d} for d in (0.01, 0.03, 0.1)],
}
# Dense exact NGD builds a P×P Fisher from C·N backpropagated vectors every step (seconds at the
# default batch): it runs this many iterations unless told otherwise (the figure says so).
ITERATION_CAPS = {"ngd": 40, "block-ngd": 40}


@dataclass
class CompareConfig:
    """Everything that defines a comparison (saved in history.json)."""

    dataset: str = "digits"
    data_dir: str | None = None
    model: str = "convnet"
    hidden: tuple = (32,)  # MLP hidden widths, or the ConvNet's single FC width (first entry)
    channels: tuple = (8, 16)  # ConvNet channels per conv block
    optimizers: tuple = ("sgd", "ngd", "kfac")
    kind: str | None = None  # Fisher kind for every Fisher method (None: each method's default)
    iterations: int = 300
    batch_size: int = 1024  # K-FAC's regime: large batches (see `kfac-ref batch-sweep`)
    eval_every: int = 5
    iteration_caps: dict = field(default_factory=lambda: dict(ITERATION_CAPS))  # {opt: max iterations}
    settings: dict = field(default_factory=dict)  # {opt: {hyper: value}} overrides
    grid: bool = False
    grid_iterations: int | None = None  # iterations per grid configuration (default: iterations)
    device: str = "cpu"
    dtype: str = "float64"
    seed: int = 0
    max_train: int | None = None  # use only the first n training samples (quick runs)
    target_loss: tuple = ()  # summary targets; empty: round values and the hardest every run reaches
    target_acc: tuple = ()
    diagnostics_every: int = 0  # K > 0: angle to the damped NGD every K iterations (not timed); 0: off


# What `diagnostics_every` adds to the records of the iterations it measures.
DIAGNOSTIC_FIELDS = ("angle_deg", "curvature_error", "natural_damping")


#: the last line of summary.md: which regime the numbers belong to, and where the dependence is measured
REGIME_NOTE = (
    "Batch size {batch}.  How these ratios depend on the batch size is measured by `kfac-ref batch-sweep` "
    "(on digits, K-FAC's advantage over SGD in iterations grew with it: docs/results.md).\n"
)


def load_data(cfg: CompareConfig):
    """The dataset, flattened for an MLP, cast and moved as configured."""
    kwargs = {"dtype": np.dtype(cfg.dtype)}
    data = load_dataset(cfg.dataset, cfg.data_dir, **kwargs)
    if cfg.model == "mlp":
        data = data.flat()
    if cfg.max_train:
        data = data.subset(n_train=min(cfg.max_train, data.n_train))
    return data.to(cfg.device)


def build_model(cfg: CompareConfig, data):
    """The model for the data's input shape (seeded by cfg.seed)."""
    kw = {"seed": cfg.seed, "dtype": np.dtype(cfg.dtype), "device": cfg.device}
    if cfg.model == "mlp":
        return models.mlp(data.input_shape[0], hidden=tuple(cfg.hidden), num_classes=data.num_classes, **kw)
    if cfg.model == "convnet":
        if len(data.input_shape) != 3:
            raise ValueError(f"model 'convnet' needs image inputs (C, H, W), got {data.input_shape}")
        return models.convnet(
            in_shape=data.input_shape,
            channels=tuple(cfg.channels),
            hidden=cfg.hidden[0] if cfg.hidden else 0,
            num_classes=data.num_classes,
            **kw,
        )
    raise ValueError(f"unknown model {cfg.model!r}: expected 'mlp' or 'convnet'")


def settings_for(cfg: CompareConfig, name: str, base: dict | None = None) -> dict:
    """Hyper-parameters for one optimizer: defaults, then the grid pick, then overrides."""
    s = dict(DEFAULT_SETTINGS[name])
    s.update(base or {})
    if cfg.kind is not None and name != "sgd":
        s["kind"] = cfg.kind
    s.update(cfg.settings.get(name, {}))
    return s


def iterations_for(cfg: CompareConfig, name: str, iterations: int | None = None) -> int:
    """The iterations optimizer ``name`` trains for: cfg's budget, capped by cfg.iteration_caps."""
    iterations = cfg.iterations if iterations is None else iterations
    cap = cfg.iteration_caps.get(name)
    return iterations if cap is None else min(iterations, cap)


def check_settings(cfg: CompareConfig, data=None) -> None:
    """Build every optimizer of the comparison once: bad settings fail here, before any training."""
    data = load_data(cfg) if data is None else data
    model = build_model(cfg, data)
    for name in cfg.optimizers:
        for point in GRIDS[name] if cfg.grid else [{}]:
            try:
                OPTIMIZERS[name](model, nn.CrossEntropyLoss(), **settings_for(cfg, name, point))
            except TypeError as exc:
                raise ValueError(f"{name}: {exc}") from None


def sgd_natural_damping(cfg: CompareConfig) -> float:
    """λ of the natural gradient SGD is measured against: K-FAC's damping in this comparison."""
    return float(settings_for(cfg, "kfac")["damping"])


def diagnostics_hook(cfg: CompareConfig):
    """The Trainer's ``after_step`` for ``cfg.diagnostics_every = K``: None when K = 0.

    After every K-th step (iterations K, 2K, …) it returns, for the step's batch and θ
    before the step, the angle (degrees) between the method's direction and the exact
    damped natural gradient (F + γI)⁻¹∇h, the relative Frobenius error of its curvature
    to the exact Fisher F (None for SGD, or when P × P matrices would not fit) and γ
    (:func:`~.diagnostics.diagnostics`).  γ is each Fisher method's own damping — the one
    its direction used (λ + η_wd for the K-FAC family) — so the angle measures the
    curvature approximation alone, not a difference of damping; SGD, which has none, is
    measured against K-FAC's λ of the comparison (:func:`sgd_natural_damping`).
    """
    every = check_number("diagnostics_every", cfg.diagnostics_every, low=0, integer=True)
    if every == 0:
        return None
    sgd_damping = sgd_natural_damping(cfg)

    def after_step(opt, x, y, theta):
        if opt.steps % every:
            return None
        # rng: only a Woodbury NGD with a Monte-Carlo Fisher uses one (it redraws its Fisher on the
        # batch); a generator of its own leaves the training's untouched
        out = diagnostics(
            opt,
            x,
            y,
            theta=theta,
            damping=sgd_damping if isinstance(opt, SGD) else None,
            rng=np.random.default_rng(opt.steps),
        )
        return {
            "angle_deg": out["angle_deg"],
            "curvature_error": out["curvature_error"],
            "natural_damping": out["damping"],
        }

    return after_step


def run_one(cfg, name, settings, data, theta0, iterations, progress=None, diagnose: bool = True):
    """Train one optimizer from θ₀; returns {"optimizer", "settings", "records", "stopped"}.

    ``diagnose``: measure the steps as ``cfg.diagnostics_every`` says (the grid's trials do not).
    """
    model = build_model(cfg, data)
    set_flat_params(model, theta0)
    opt = OPTIMIZERS[name](model, nn.CrossEntropyLoss(), **settings)
    if cfg.device == "gpu":  # compile this optimizer's kernels before its clock starts
        warm = build_model(cfg, data)
        warm_opt = OPTIMIZERS[name](warm, nn.CrossEntropyLoss(), **settings)
        Trainer(warm_opt, data, cfg.batch_size, np.random.default_rng(cfg.seed), cfg.eval_every).run(2)
    trainer = Trainer(
        opt,
        data,
        cfg.batch_size,
        np.random.default_rng(cfg.seed),
        cfg.eval_every,
        after_step=diagnostics_hook(cfg) if diagnose else None,
    )
    hist = trainer.run(iterations, progress)
    return {"optimizer": name, "settings": settings, "records": hist.records, "stopped": hist.stopped}


def grid_score(run) -> float:
    """The grid's rule, lower is better: the last measured validation loss; ∞ if the run stopped or diverged."""
    last = [r for r in run["records"] if r["val_loss"] is not None][-1]
    return last["val_loss"] if run["stopped"] is None and np.isfinite(last["val_loss"]) else np.inf


def grid_search(cfg, name, data, theta0, progress_factory=None):
    """Every configuration of GRIDS[name] with the same budget; the lowest validation loss wins."""
    iters = iterations_for(cfg, name, cfg.grid_iterations or cfg.iterations)
    trials = []
    for point in GRIDS[name]:
        s = settings_for(cfg, name, point)
        bar = progress_factory(f"{name} grid {point}", iters) if progress_factory else None
        run = run_one(cfg, name, s, data, theta0, iters, bar, diagnose=False)
        if bar is not None:
            bar.close()
        trials.append({"settings": s, "val_loss": grid_score(run), "stopped": run["stopped"]})
    best = min(trials, key=lambda t: t["val_loss"])
    return best["settings"], trials


def machine_info(cfg: CompareConfig) -> dict:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "device": cfg.device,
    }
    if cfg.device == "gpu":
        info["gpu"] = gpu_name()
    return info


def write_outputs(out: Path, cfg: CompareConfig, runs: list, grid: dict | None) -> dict:
    """history.json, CSVs, curves.png/svg, summary.md — all or nothing (:func:`kfac_ref.io.write_together`)."""
    summary = summarize(runs, target_list(runs, cfg.target_loss, cfg.target_acc))
    doc = {
        "config": _jsonable(asdict(cfg)),
        "machine": machine_info(cfg),
        "runs": [{"optimizer": r["optimizer"], "settings": r["settings"], "records": r["records"]} for r in runs],
    }
    for r, d in zip(runs, doc["runs"]):
        if r["stopped"]:
            d["stopped"] = r["stopped"]
    if grid:
        doc["grid"] = grid
    history = json.dumps(_jsonable(doc), indent=1, allow_nan=False)
    writers = [(out / "history.json", lambda tmp: tmp.write_text(history))]
    diagnosed = any("angle_deg" in rec for r in runs for rec in r["records"])
    fields = RECORD_FIELDS + (DIAGNOSTIC_FIELDS if diagnosed else ())

    def write_csv(tmp, records):
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(records)

    for r in runs:
        writers.append((out / f"history_{r['optimizer']}.csv", lambda tmp, rec=r["records"]: write_csv(tmp, rec)))
    title = f"{cfg.dataset} {cfg.model}, batch {cfg.batch_size}, {cfg.device} — solid: train, dashed: validation"
    capped = [
        f"{r['optimizer']} {r['records'][-1]['iteration']}"
        for r in runs
        if r["records"][-1]["iteration"] < cfg.iterations and not r["stopped"]
    ]
    if capped:
        title += f"\niterations: {cfg.iterations} each, except " + ", ".join(capped) + " (capped)"
    fig = curves_figure(runs, title)
    writers += [
        (out / "curves.png", lambda tmp: save_figure(fig, tmp)),
        (out / "curves.svg", lambda tmp: save_figure(fig, tmp)),
    ]
    text = format_summary(summary)
    stopped = "".join(f"- **{r['optimizer']} stopped early**: {r['stopped']}\n" for r in runs if r["stopped"])
    if stopped:
        text = f"{stopped}\n{text}"
    if diagnosed:
        text += "\n" + format_diagnostics(runs, cfg)
    text += "\n" + REGIME_NOTE.format(batch=cfg.batch_size)
    writers.append((out / "summary.md", lambda tmp: tmp.write_text(f"# {title}\n\n{text}")))
    write_together(writers)
    return summary


def format_diagnostics(runs, cfg: CompareConfig) -> str:
    """summary.md's lines for `--diagnostics K`: per method, the median (min–max) angle and curvature error."""
    lines = [
        f"Angle between each method's step and the exact damped natural gradient (F + γI)⁻¹∇h, "
        f"every {cfg.diagnostics_every} iterations on that iteration's batch at θ before the step "
        f"(not in the seconds above); γ is each method's own damping, SGD's is K-FAC's λ = "
        f"{sgd_natural_damping(cfg):g}. Median (min–max) over the measured steps; curvature error "
        "‖C − F‖_F / ‖F‖_F:",
        "",
    ]
    for r in runs:
        meas = [rec for rec in r["records"] if rec.get("angle_deg") is not None]
        if not meas:
            lines.append(f"- {r['optimizer']}: no step measured")
            continue
        ang = np.array([rec["angle_deg"] for rec in meas])
        gammas = sorted({rec["natural_damping"] for rec in meas})
        gamma = f"γ = {gammas[0]:g}" if len(gammas) == 1 else f"γ {gammas[0]:g}–{gammas[-1]:g}"
        line = (
            f"- {r['optimizer']}: angle {np.median(ang):.1f}° ({ang.min():.1f}–{ang.max():.1f}°) "
            f"over {len(ang)} steps, {gamma}"
        )
        errs = [rec["curvature_error"] for rec in meas if rec["curvature_error"] is not None]
        if errs:
            line += f"; curvature error {np.median(errs):.3f} ({min(errs):.3f}–{max(errs):.3f})"
        lines.append(line)
    return "\n".join(lines) + "\n"


def check_out(out) -> None:
    """The output folder must be a folder we can write (checked before any work is done)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    parent = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: {parent} is not writable")


def _jsonable(obj):
    """Tuples → lists, NaN/Inf → None, NumPy scalars → Python (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def run_compare(cfg: CompareConfig, out, progress_factory=None, log=print) -> dict:
    """Run the comparison and write its outputs; returns the summary."""
    for name in cfg.optimizers:
        if name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {name!r}: expected any of {sorted(OPTIMIZERS)}")
    if len(set(cfg.optimizers)) != len(cfg.optimizers):
        raise ValueError(f"optimizers {list(cfg.optimizers)}: each may appear once (their outputs share names)")
    check_number("diagnostics_every", cfg.diagnostics_every, low=0, integer=True)
    check_out(out)
    data = load_data(cfg)
    check_settings(cfg, data)
    model = build_model(cfg, data)
    theta0 = to_numpy(get_flat_params(model))
    caps = {n: iterations_for(cfg, n) for n in cfg.optimizers if iterations_for(cfg, n) < cfg.iterations}
    log(
        f"{cfg.dataset}: {data.n_train} training / {data.n_val} validation samples, input {data.input_shape}; "
        f"{cfg.model} with P = {model.num_params:,} parameters; {cfg.iterations} iterations of batch "
        f"{cfg.batch_size} on {cfg.device} ({cfg.dtype})"
        + (f"; capped: {', '.join(f'{n} {i}' for n, i in caps.items())}" if caps else "")
    )
    grid, runs = {}, []
    for name in cfg.optimizers:
        settings = settings_for(cfg, name)
        if cfg.grid:
            best, trials = grid_search(cfg, name, data, theta0, progress_factory)
            grid[name] = trials
            settings = settings_for(cfg, name, {k: best[k] for k in GRIDS[name][0]})
            log(f"{name}: grid search picked { ({k: settings[k] for k in GRIDS[name][0]}) }")
        iters = iterations_for(cfg, name)
        bar = progress_factory(name, iters) if progress_factory else None
        run = run_one(cfg, name, settings, data, theta0, iters, bar)
        if bar is not None:
            bar.close()
        if run["stopped"]:
            log(f"{name}: {run['stopped']}")
        runs.append(run)
    summary = write_outputs(Path(out), cfg, runs, grid or None)
    log(format_summary(summary))
    if cfg.diagnostics_every:
        log(format_diagnostics(runs, cfg))
    return summary
