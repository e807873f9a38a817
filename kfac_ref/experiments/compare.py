"""The article's experiment: one model, one dataset, SGD vs NGD vs K-FAC (docs/results.md).

Every optimizer starts from the same θ₀ and sees the same mini-batches (one seed); the only
difference between two runs is the method.  ``--grid`` gives every optimizer the same budget
(three configurations, the same iterations each) and keeps the lowest validation loss.
``--diagnostics K`` measures every K-th step against the exact damped natural gradient
(:func:`diagnostics_hook`, docs/diagnostics.md).  Outputs, all or none
(:func:`kfac_ref.io.write_together`): ``history.json``, ``history_<opt>.csv``,
``curves.png``/``curves.svg`` and ``summary.md``.

This module also holds what the other training experiments share: the one runner
(:func:`run_one`), the one grid search (:func:`grid_search`), the model and data arguments and
``--quick``'s budget (:data:`QUICK`); ``kfac-ref compare`` and ``demo`` are :func:`add_arguments`
and :func:`run`.
"""

from __future__ import annotations

import csv
import json
import os
import platform
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from .. import models, nn
from ..backend import gpu_name, to_numpy
from ..data import DATASETS, load_dataset
from ..fisher.seeds import KINDS
from ..io import check_output_dir, write_together
from ..malloc import state as malloc_state
from ..mpi import shard, world
from ..optim import OPTIMIZERS, SGD
from ..optim.distributed import DISTRIBUTED, distributed_optimizer
from ..params import get_flat_params, set_flat_params
from ..settings import read_settings_file
from ..train import EVAL_TRAIN_SAMPLES, RECORD_FIELDS, Trainer, describe_eval
from ..validate import check_number
from . import arguments
from .arguments import unknown_optimizer
from .curves import curves_figure, gamma_text, save_figure
from .diagnostics import diagnostics
from .summary import format_summary, summarize, target_list

# The settings every optimizer runs with in a comparison.  Each is named in full — a comparison
# never picks up a class default.  SGD's and Adam's learning rates and K-FAC's initial damping λ₀ were
# the race's single-configuration picks on digits-convnet when they were set (`kfac-ref race
# digits-convnet`: four trials per method, the one configuration that reaches the most targets in the
# fewest iterations, docs/race.md); a later race picks SGD lr 0.1 per training-loss target but lr 0.03
# as its single configuration, and ties λ₀ 0.01, 0.03 and 0.1.  NGD's are the pick of
# `kfac-ref compare --grid` on the same ConvNet.  Any of them can be overridden (`--set kfac.T_inv=1`).
DEFAULT_SETTINGS = {
    "sgd": {"lr": 0.1, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0},
    # PyTorch's defaults but the learning rate, the one tuned hyper-parameter (kfac-ref race)
    "adam": {"lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0},
    "ngd": {"lr": 0.5, "momentum": 0.0, "damping": 0.1, "kind": "exact", "solver": "dense", "kl_clip": 0.1},
    "block-ngd": {"lr": 0.5, "momentum": 0.0, "damping": 0.1, "kind": "exact", "kl_clip": 0.1},
    "diag-ngd": {"lr": 0.5, "momentum": 0.0, "damping": 0.1, "kind": "exact", "kl_clip": 0.1},
    # K-FAC as [MG15] §6–7 define it, the textbook method: Monte-Carlo factors from the whole batch
    # every T_cov = 10 steps, inverses every T_inv = 10 steps; the step δ = α Δ + μ δ₀ with (α, μ)
    # minimising the exact quadratic model on the batch (two forward-mode passes a step; "rescale"),
    # and λ adapted by the Levenberg–Marquardt rule every T_adapt = 5 steps from λ₀ = "damping"
    # ("adapt_damping").  λ₀ was the digits race's single-configuration pick.  The amortised variant
    # without the exact model, a step that costs about one SGD step, is AMORTISED_KFAC below.
    "kfac": {
        "lr": 1.0,
        "momentum": 0.0,  # unused with rescale: μ comes from the quadratic model
        "damping": 0.03,
        "kind": "mc",
        "mc_samples": 1,
        "T_cov": 10,
        "T_inv": 10,
        "ema_decay": 0.95,
        "stats_fraction": 1.0,
        "damping_mode": "factored",
        "kl_clip": None,
        "rescale": True,
        "adapt_damping": True,
        "T_adapt": 5,
    },
    # block-tridiagonal K-FAC and EKFAC (docs/math.md §11–§12): K-FAC's schedule, with the amortised
    # variant's KL-clipping and momentum
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
#: K-FAC's amortised variant: KL-clipping (κ = 10⁻³, [BGM17]) and heavy-ball momentum in place of the
#: exact quadratic model and LM damping (kfac-pytorch's choice); compare's K-FAC with these is
#: `--set kfac.momentum=0.9 --set kfac.kl_clip=0.001 --set kfac.rescale=false --set kfac.adapt_damping=false`
AMORTISED_KFAC = {"momentum": 0.9, "kl_clip": 1e-3, "rescale": False, "adapt_damping": False}
# The grid: three configurations per optimizer, so every method gets the same budget.
GRIDS = {
    "sgd": [{"lr": lr} for lr in (0.03, 0.1, 0.3)],
    "adam": [{"lr": lr} for lr in (1e-3, 3e-3, 1e-2)],
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
    eval_train: int | None = EVAL_TRAIN_SAMPLES  # training figures on this many samples, a fixed subset; None: all
    iteration_caps: dict = field(default_factory=lambda: dict(ITERATION_CAPS))  # {opt: max iterations}
    settings: dict = field(default_factory=dict)  # {opt: {hyper: value}} overrides
    grid: bool = False
    grid_iterations: int | None = None  # iterations per grid configuration (default: iterations)
    device: str = "cpu"
    dtype: str = "float64"
    seed: int = 0
    workers: int = 1  # the batch as this many blocks of samples on threads (model.workers; --threads on a ConvNet)
    max_train: int | None = None  # use only the first n training samples (quick runs)
    target_loss: tuple = ()  # summary targets; empty: round values and the hardest every run reaches
    target_acc: tuple = ()
    diagnostics_every: int = 0  # K > 0: angle to the damped NGD every K iterations (not timed); 0: off


#: the info keys ``run_one(..., infos=True)`` keeps per step (those a step did not report are None)
INFO_KEYS = ("loss", "step_norm", "damping", "kl_clip_nu", "alpha", "mu", "rho")

# What `diagnostics_every` adds to the records of the iterations it measures.
DIAGNOSTIC_FIELDS = ("angle_deg", "curvature_error", "natural_damping")


#: the last line of summary.md: which regime the numbers belong to, and where the dependence is measured
REGIME_NOTE = (
    "Batch size {batch}.  How these ratios depend on the batch size is measured by `kfac-ref batch-sweep` "
    "(on digits, K-FAC's advantage over SGD in iterations was largest with the whole training set: "
    "docs/results.md).\n"
)


def evaluation_note(cfg: CompareConfig, n_train: int) -> str:
    """What the recorded "train" and "val" figures are measured on, in words."""
    return (
        f"training loss and accuracy on {describe_eval(n_train, cfg.eval_train)}, validation on all "
        "validation samples; forward passes only, outside the training clock"
    )


MODELS = ("mlp", "convnet", "autoencoder")


def load_data(cfg: CompareConfig):
    """The dataset, flattened for an MLP, cast and moved as configured.

    For the autoencoder: the pixels in [0, 1] (not standardised) as inputs and as the
    reconstruction targets (:meth:`~kfac_ref.data.Dataset.reconstruction`).
    """
    if cfg.model == "autoencoder":
        data = load_dataset(cfg.dataset, cfg.data_dir, dtype=np.dtype(cfg.dtype), standardise_pixels=False)
        data = data.reconstruction()
    else:
        data = load_dataset(cfg.dataset, cfg.data_dir, dtype=np.dtype(cfg.dtype))
    if cfg.model == "mlp":
        data = data.flat()
    if cfg.max_train:
        data = data.subset(n_train=min(cfg.max_train, data.n_train))
    return data.to(cfg.device)


def build_model(cfg: CompareConfig, data):
    """The model for the data's input shape (seeded by cfg.seed), running cfg.workers blocks of samples."""
    kw = {"seed": cfg.seed, "dtype": np.dtype(cfg.dtype), "device": cfg.device}
    if cfg.model == "mlp":
        model = models.mlp(data.input_shape[0], hidden=tuple(cfg.hidden), num_classes=data.num_classes, **kw)
    elif cfg.model == "autoencoder":
        model = models.autoencoder(data.input_shape[0], widths=tuple(cfg.hidden), **kw)
    elif cfg.model == "convnet":
        if len(data.input_shape) != 3:
            raise ValueError(f"model 'convnet' needs image inputs (C, H, W), got {data.input_shape}")
        model = models.convnet(
            in_shape=data.input_shape,
            channels=tuple(cfg.channels),
            hidden=cfg.hidden[0] if cfg.hidden else 0,
            num_classes=data.num_classes,
            **kw,
        )
    else:
        raise ValueError(f"unknown model {cfg.model!r}: expected one of {', '.join(MODELS)}")
    model.workers = cfg.workers  # blocks of samples on threads: the same numbers to rounding (kfac_ref.backprop)
    return model


def loss_for(data):
    """The loss of the data's task: softmax cross-entropy for classes, Bernoulli (sigmoid)
    cross-entropy for reconstructions ([MG15] §13's autoencoders)."""
    return nn.SigmoidCrossEntropyLoss() if data.task == "reconstruction" else nn.CrossEntropyLoss()


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
                opt = OPTIMIZERS[name](model, loss_for(data), **settings_for(cfg, name, point))
            except TypeError as exc:
                raise ValueError(f"{name}: {exc}") from None
            if cfg.diagnostics_every and not hasattr(opt, "curvature"):
                raise ValueError(
                    f"--diagnostics: {name}'s step is not a preconditioned gradient (C + γI)⁻¹∇h; "
                    "it measures SGD and the Fisher methods"
                )


def sgd_natural_damping(cfg: CompareConfig) -> float:
    """λ of the natural gradient SGD is measured against: K-FAC's damping in this comparison."""
    return float(settings_for(cfg, "kfac")["damping"])


def diagnostics_hook(cfg: CompareConfig):
    """The Trainer's ``after_step`` for ``cfg.diagnostics_every = K`` (None when K = 0; docs/diagnostics.md).

    After every K-th step it returns the angle (degrees) of the step's direction to the exact damped
    natural gradient (F + γI)⁻¹∇h on the step's batch at θ before the step, the curvature error and γ
    (:func:`~.diagnostics.diagnostics`): each Fisher method's own damping, K-FAC's λ for SGD
    (:func:`sgd_natural_damping`).
    """
    every = check_number("diagnostics_every", cfg.diagnostics_every, low=0, integer=True)
    if every == 0:
        return None
    sgd_damping = sgd_natural_damping(cfg)

    def after_step(opt, x, y, theta, info):
        if opt.steps % every:
            return None
        # rng: only a Woodbury NGD with a Monte-Carlo Fisher uses one (it redraws its Fisher on the
        # batch); a generator of its own leaves the training's untouched
        damping = sgd_damping if isinstance(opt, SGD) else None
        out = diagnostics(opt, x, y, theta=theta, damping=damping, rng=np.random.default_rng(opt.steps))
        return dict(zip(DIAGNOSTIC_FIELDS, (out["angle_deg"], out["curvature_error"], out["damping"])))

    return after_step


def make_optimizer(name: str, model, settings: dict, comm=None, loss_fn=None):
    """Optimizer ``name`` on ``model`` with ``settings`` and ``loss_fn`` (default: softmax cross-entropy);
    with an MPI ``comm``, its data-parallel version."""
    loss_fn = nn.CrossEntropyLoss() if loss_fn is None else loss_fn
    if comm is not None:
        return distributed_optimizer(name, model, loss_fn, comm, **settings)
    return OPTIMIZERS[name](model, loss_fn, **settings)


def run_one(cfg, name, settings, data, theta0, iterations, progress_factory=None, diagnose=True, infos=False,
            comm=None, desc=None) -> dict:  # fmt: skip
    """Train one optimizer from θ₀: the one runner of compare, its grid, batch-sweep, sweeps and the recipe.

    cfg : CompareConfig (model, batch size, seed, eval_every, device); name : an OPTIMIZERS key;
    theta0 : (P,) the start; ``progress_factory(desc or name, iterations)``: the run's progress bar.
    ``diagnose``: measure the steps as ``cfg.diagnostics_every`` says (the grid's trials do not);
    ``infos``: also keep every step's info dict (:data:`INFO_KEYS` plus "times" {phase: seconds});
    ``comm``: train the data-parallel version on this MPI communicator.
    Returns {"optimizer", "settings", "records", "stopped"} (and "infos" [iterations done]).
    """
    model = build_model(cfg, data)
    set_flat_params(model, theta0)
    opt = make_optimizer(name, model, settings, comm, loss_for(data))
    if cfg.device == "gpu":  # compile this optimizer's kernels before its clock starts
        warm_opt = make_optimizer(name, build_model(cfg, data), settings, comm, loss_for(data))
        Trainer(warm_opt, data, cfg.batch_size, np.random.default_rng(cfg.seed), cfg.eval_every).run(2)
    diag = diagnostics_hook(cfg) if diagnose else None
    kept = []

    def after_step(opt, x, y, theta, info):
        if infos:
            kept.append({**{k: info.get(k) for k in INFO_KEYS}, "times": dict(info["times"])})
        return None if diag is None else diag(opt, x, y, theta, info)

    hook = after_step if diag is not None or infos else None
    rng = np.random.default_rng(cfg.seed)
    trainer = Trainer(opt, data, cfg.batch_size, rng, cfg.eval_every, after_step=hook, eval_train=cfg.eval_train)
    bar = progress_factory(desc or name, iterations) if progress_factory else None
    hist = trainer.run(iterations, bar)
    if bar is not None:
        bar.close()
    run = {"optimizer": name, "settings": settings, "records": hist.records, "stopped": hist.stopped}
    if infos:
        run["infos"] = kept
    return run


def grid_score(run) -> float:
    """The grid's rule, lower is better: the last measured validation loss; ∞ if the run stopped or diverged."""
    last = [r for r in run["records"] if r["val_loss"] is not None][-1]
    return last["val_loss"] if run["stopped"] is None and np.isfinite(last["val_loss"]) else np.inf


def grid_search(cfg, name, data, theta0, progress_factory=None):
    """Every configuration of GRIDS[name] with the same budget; the lowest validation loss wins.

    Each configuration trains ``cfg.grid_iterations`` (default cfg.iterations, capped as
    :func:`iterations_for` says) from θ₀ at cfg.batch_size.  Returns (the picked settings,
    trials): trials [len(grid)] dicts {"settings", "val_loss" (:func:`grid_score`), "stopped",
    "run" (:func:`run_one`'s dict)}, the pick being the first of the lowest.
    """
    iters = iterations_for(cfg, name, cfg.grid_iterations or cfg.iterations)
    trials = []
    for point in GRIDS[name]:
        s = settings_for(cfg, name, point)
        run = run_one(cfg, name, s, data, theta0, iters, progress_factory, diagnose=False, desc=f"{name} grid {point}")
        trials.append({"settings": s, "val_loss": grid_score(run), "stopped": run["stopped"], "run": run})
    best = min(trials, key=lambda t: t["val_loss"])
    return best["settings"], trials


def blas_thread_count():
    """The threads NumPy's BLAS runs with now (inside the CLI's limit), or None if unknown."""
    from threadpoolctl import threadpool_info

    counts = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]
    return max(counts) if counts else None


def machine_info(cfg: CompareConfig) -> dict:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "device": cfg.device,
        "blas_threads": blas_thread_count(),
        "workers": cfg.workers,
        "malloc": malloc_state(),  # what the command set (kfac_ref.malloc)
    }
    if cfg.device == "gpu":
        info["gpu"] = gpu_name()
    return info


def write_outputs(
    out: Path, cfg: CompareConfig, runs: list, grid: dict | None, n_train: int | None = None, appendix: str = ""
) -> dict:
    """history.json, CSVs, curves.png/svg, summary.md — all or nothing (:func:`kfac_ref.io.write_together`)."""
    summary = summarize(runs, target_list(runs, cfg.target_loss, cfg.target_acc))
    doc = {
        "config": jsonable(asdict(cfg)),
        "machine": machine_info(cfg),
        "runs": [{"optimizer": r["optimizer"], "settings": r["settings"], "records": r["records"]} for r in runs],
    }
    for r, d in zip(runs, doc["runs"]):
        if r["stopped"]:
            d["stopped"] = r["stopped"]
    if grid:
        doc["grid"] = grid
    files = {"history.json": doc}
    diagnosed = any("angle_deg" in rec for r in runs for rec in r["records"])
    fields = RECORD_FIELDS + (DIAGNOSTIC_FIELDS if diagnosed else ())

    def write_csv(tmp, records):
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(records)

    for r in runs:
        files[f"history_{r['optimizer']}.csv"] = lambda tmp, rec=r["records"]: write_csv(tmp, rec)
    title = f"{cfg.dataset} {cfg.model}, batch {cfg.batch_size}, {cfg.device}, {cfg.dtype}"
    title += " — solid: train, dashed: validation"
    capped = [
        f"{r['optimizer']} {r['records'][-1]['iteration']}"
        for r in runs
        if r["records"][-1]["iteration"] < cfg.iterations and not r["stopped"]
    ]
    if capped:
        title += f"\niterations: {cfg.iterations} each, except " + ", ".join(capped) + " (capped)"
    files["curves.png"] = files["curves.svg"] = curves_figure(runs, title)
    text = format_summary(summary)
    stopped = "".join(f"- **{r['optimizer']} stopped early**: {r['stopped']}\n" for r in runs if r["stopped"])
    if stopped:
        text = f"{stopped}\n{text}"
    if diagnosed:
        text += "\n" + format_diagnostics(runs, cfg)
    if n_train is not None:
        text += f"\nEvery {cfg.eval_every} iterations: {evaluation_note(cfg, n_train)}; arithmetic in {cfg.dtype}.\n"
    text += "\n" + REGIME_NOTE.format(batch=cfg.batch_size)
    files["summary.md"] = f"# {title}\n\n{text}" + (f"\n{appendix}" if appendix else "")
    stale = [out / f"history_{name}.csv" for name in OPTIMIZERS if name not in {r["optimizer"] for r in runs}]
    write_together(writers(out, files), remove=stale)  # an earlier run's other optimizer's CSV would read as this run's
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
        line = (
            f"- {r['optimizer']}: angle {np.median(ang):.1f}° ({ang.min():.1f}–{ang.max():.1f}°) "
            f"over {len(ang)} steps, {gamma_text(rec['natural_damping'] for rec in meas)}"
        )
        errs = [rec["curvature_error"] for rec in meas if rec["curvature_error"] is not None]
        if errs:
            line += f"; curvature error {np.median(errs):.3f} ({min(errs):.3f}–{max(errs):.3f})"
        lines.append(line)
    return "\n".join(lines) + "\n"


def jsonable(obj):
    """Tuples → lists, NaN/Inf → None, NumPy scalars → Python, paths → str (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def writers(out, files: dict) -> list:
    """(path, write) pairs of ``files`` {name: content} in folder ``out``, for :func:`kfac_ref.io.write_together`:
    a callable(tmp) writes itself, a str is UTF-8 text, a matplotlib Figure is saved in its suffix's
    format (:func:`~.curves.save_figure`), anything else is strict JSON (:func:`jsonable`, indent 1)."""

    def writer(content):
        if callable(content):
            return content
        if hasattr(content, "savefig"):
            return lambda tmp: save_figure(content, tmp)
        text = content if isinstance(content, str) else json.dumps(jsonable(content), indent=1, allow_nan=False)
        return lambda tmp: tmp.write_text(text, encoding="utf-8")

    return [(Path(out) / name, writer(content)) for name, content in files.items()]


def run_compare(
    cfg: CompareConfig, out, progress_factory=None, log=print, comm=None, appendix: str = ""
) -> dict | None:
    """Run the comparison and write its outputs; returns the summary.  ``appendix``: Markdown that
    summary.md ends with (the demo's: the race's measured table).

    ``comm``: an MPI communicator (:func:`kfac_ref.mpi.world`): every rank trains every
    optimizer's data-parallel version on its slices of each batch, the records being the
    single-process run's; rank 0 alone logs, shows progress and writes, the other ranks return None.
    """
    for name in cfg.optimizers:
        if name not in OPTIMIZERS:
            raise ValueError(unknown_optimizer(name))
    if len(set(cfg.optimizers)) != len(cfg.optimizers):
        raise ValueError(f"optimizers {list(cfg.optimizers)}: each may appear once (their outputs share names)")
    every = check_number("diagnostics_every", cfg.diagnostics_every, low=0, integer=True)
    longest = max(iterations_for(cfg, n) for n in cfg.optimizers)
    if every > longest:
        raise ValueError(
            f"--diagnostics {every}: no iteration would be measured (the longest run has {longest} iterations)"
        )
    lead = comm is None or comm.rank == 0
    if comm is not None:
        if cfg.grid:
            raise ValueError(
                "--grid is not supported with --distributed: pick the settings with a "
                "single-process grid search, then pass them"
            )
        if cfg.diagnostics_every:
            raise ValueError("--diagnostics is not available with --distributed (run it on one process)")
        for name in cfg.optimizers:
            if name not in DISTRIBUTED:
                distributed_optimizer(name, None, None, comm)  # raises, naming it
        shard(cfg.batch_size, comm.size, 0)  # R ≤ B, before any work
        if not lead:
            log, progress_factory = (lambda *a, **k: None), None
    check_output_dir(out)
    data = load_data(cfg)
    check_settings(cfg, data)
    model = build_model(cfg, data)
    if comm is not None:  # fewer statistics samples than ranks, found before any optimizer trains
        for name in cfg.optimizers:
            make_optimizer(name, model, settings_for(cfg, name), comm, loss_for(data)).check_batch_size(cfg.batch_size)
    theta0 = to_numpy(get_flat_params(model))
    caps = {n: iterations_for(cfg, n) for n in cfg.optimizers if iterations_for(cfg, n) < cfg.iterations}
    log(
        f"{cfg.dataset}: {data.n_train} training / {data.n_val} validation samples, input {data.input_shape}; "
        f"{cfg.model} with P = {model.num_params:,} parameters; {cfg.iterations} iterations of batch "
        f"{cfg.batch_size} on {cfg.device} ({cfg.dtype})"
        + (f"; capped: {', '.join(f'{n} {i}' for n, i in caps.items())}" if caps else "")
    )
    log(f"every {cfg.eval_every} iterations: {evaluation_note(cfg, data.n_train)}")
    if comm is not None:
        log(
            f"on {comm.size} MPI rank(s): global batch {cfg.batch_size} "
            f"({cfg.batch_size // comm.size}–{-(-cfg.batch_size // comm.size)} samples per rank)"
        )
    grid, runs = {}, []
    for name in cfg.optimizers:
        settings = settings_for(cfg, name)
        if cfg.grid:
            best, trials = grid_search(cfg, name, data, theta0, progress_factory)
            grid[name] = [{k: v for k, v in t.items() if k != "run"} for t in trials]
            settings = settings_for(cfg, name, {k: best[k] for k in GRIDS[name][0]})
            log(f"{name}: grid search picked { ({k: settings[k] for k in GRIDS[name][0]}) }")
        run = run_one(cfg, name, settings, data, theta0, iterations_for(cfg, name), progress_factory, comm=comm)
        if run["stopped"]:
            log(f"{name}: {run['stopped']}")
        runs.append(run)
    summary = write_outputs(Path(out), cfg, runs, grid or None, data.n_train, appendix) if lead else None
    if comm is not None:
        comm.barrier()  # no rank exits before rank 0 has written
    if lead:
        log(format_summary(summary))
    if cfg.diagnostics_every:
        log(format_diagnostics(runs, cfg))
    return summary


# ---- the command line: kfac-ref compare and kfac-ref demo --------------------------------------
#: --quick: a tiny budget for smoke tests, the same for compare and batch-sweep (what the user gives
#: explicitly is kept; each value here is an upper bound)
QUICK = {"hidden": (16,), "channels": (4, 8), "iterations": 12, "eval_every": 4, "batch_size": 32, "max_train": 256}
#: what the comparison's own command line adds to its config under --quick
QUICK_GRID_ITERATIONS = 4
#: the command line trains in float32: on the digits ConvNet (batch 1024, one thread, 2-core machine under
#: load) an iteration took 0.046–0.050 s against 0.075–0.104 s in float64 for SGD and 0.077–0.087 s against
#: 0.103–0.110 s for K-FAC, and 60 iterations of K-FAC's training loss agreed with float64's to 7.3e-4
#: relative (SGD's to 4e-7).  --dtype float64 reproduces the float64 records; the library's own
#: default (CompareConfig, the oracles and the tests) stays float64.
CLI_DTYPE = "float32"
HYPER_OPTIONS = ("lr", "momentum", "damping", "T_inv", "T_cov", "weight_decay")
# make demo: compare at its defaults, with the dense exact-Fisher NGD capped at fewer iterations
# (≈ 6.5 s a step at batch 1024 on 2 cores; the figure says so), so that the demo stays under 5 minutes
DEMO_NGD_ITERATIONS = 25


def add_model_arguments(g) -> None:
    """--dataset, --data-dir, --model, --hidden, --channels, --max-train (compare and batch-sweep)."""
    g.add_argument(
        "--dataset",
        choices=DATASETS,
        default="digits",
        help="digits is bundled; fashion-mnist and mnist read a folder of IDX files, cifar10 the official "
        "binary or python version (kfac-ref download fetches them; data/README.md)",
    )
    g.add_argument("--data-dir", help="folder with the fashion-mnist/mnist/cifar10 files (see data/README.md)")
    g.add_argument(
        "--model",
        choices=MODELS,
        default="convnet",
        help="convnet: conv-ReLU-pool blocks (--channels), then a fully-connected layer (--hidden); "
        "mlp: fully-connected layers of --hidden widths on the flattened input; autoencoder: "
        "encoder widths --hidden to a linear code, mirrored decoder, Bernoulli cross-entropy on the pixels",
    )
    g.add_argument(
        "--hidden",
        type=arguments.int_list,
        help="MLP hidden widths, or the ConvNet's fully-connected width, comma-separated "
        f"(default: {CompareConfig.hidden[0]}; with --quick: {QUICK['hidden'][0]})",
    )
    g.add_argument(
        "--channels",
        type=arguments.int_list,
        help="ConvNet channels per conv block (default: "
        f"{','.join(map(str, CompareConfig.channels))}; with --quick: {','.join(map(str, QUICK['channels']))})",
    )
    g.add_argument("--max-train", type=arguments.positive_int, help="use only the first N training samples")


def add_eval_arguments(g) -> None:
    """--eval-every and --eval-train (compare and batch-sweep)."""
    g.add_argument(
        "--eval-every",
        type=arguments.positive_int,
        default=CompareConfig.eval_every,
        help="measure the training and validation loss and accuracy every k iterations",
    )
    g.add_argument(
        "--eval-train",
        type=arguments.count_or_all,
        default=CompareConfig.eval_train,
        metavar="N|all",
        help="measure the training figures on a fixed subset of N training samples (the same in every run), "
        "or on all of them ('all') (default: %(default)s, all when there are fewer)",
    )


def quick(cfg: CompareConfig, **override) -> CompareConfig:
    """cfg within :data:`QUICK`'s budget (``override`` replaces a bound); the widths only where not given."""
    bounds = {**QUICK, **override}
    return replace(
        cfg,
        hidden=cfg.hidden or bounds["hidden"],
        channels=cfg.channels or (bounds["channels"] if cfg.model == "convnet" else CompareConfig.channels),
        iterations=min(cfg.iterations, bounds["iterations"]),
        eval_every=min(cfg.eval_every, bounds["eval_every"]),
        batch_size=min(cfg.batch_size, bounds["batch_size"]),
        max_train=cfg.max_train or bounds["max_train"],
    )


def add_arguments(p, name: str = "compare") -> None:
    """The arguments of ``kfac-ref compare`` (and ``demo``, whose ``--out`` defaults to results/demo)."""
    add_model_arguments(p.add_argument_group("data and model"))
    g = p.add_argument_group("optimizers")
    g.add_argument(
        "--optimizers",
        type=arguments.optimizer_list,
        default=",".join(CompareConfig.optimizers),
        help=f"comma-separated, any of {','.join(OPTIMIZERS)}",
    )
    g.add_argument(
        "--kind", choices=KINDS, help="Fisher kind for every Fisher method (default: exact for NGD, mc for K-FAC)"
    )
    for hp in HYPER_OPTIONS:
        g.add_argument(
            f"--{hp.replace('_', '-')}",
            type=arguments.hyper(hp),
            action="append",
            default=[],
            metavar="[OPT=]VALUE",
            help=f"{hp} for one optimizer (OPT=VALUE) or every one that has it (VALUE); repeatable",
        )
    arguments.add_set_argument(
        g,
        "any hyper-parameter of any optimizer, e.g. kfac.rescale=true, kfac.kl_clip=none, "
        "kfac.stats_fraction=0.25 (applied last); repeatable",
    )
    g.add_argument(
        "--settings",
        metavar="FILE",
        help="a JSON or TOML file {optimizer: {hyper-parameter: value}}, applied first: the "
        "hyper-parameter flags and --set override it",
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
    g.add_argument("--grid-iterations", type=arguments.positive_int, help="iterations per grid configuration")
    g = p.add_argument_group("budget and run")
    g.add_argument("--iterations", type=arguments.positive_int, default=CompareConfig.iterations, help="per optimizer")
    g.add_argument("--epochs", type=arguments.positive_int, help="train for this many epochs instead of --iterations")
    g.add_argument(
        "--batch-size", type=arguments.positive_int, default=CompareConfig.batch_size, help="mini-batch size N"
    )
    g.add_argument(
        "--ngd-iterations",
        type=arguments.positive_int,
        default=ITERATION_CAPS["ngd"],
        help="at most this many iterations for the dense exact-Fisher NGD and BlockNGD "
        "(seconds per step); the figure says so",
    )
    add_eval_arguments(g)
    arguments.add_machine_arguments(g, CLI_DTYPE)
    g.add_argument(
        "--target-loss",
        type=arguments.positive_float,
        action="append",
        default=[],
        help="a training-loss target of the summary; repeatable (default: 0.1, 0.01 and the hardest every run reaches)",
    )
    g.add_argument(
        "--target-acc",
        type=arguments.fraction,
        action="append",
        default=[],
        help="a validation-accuracy target of the summary; repeatable (default: 0.9, 0.95 and "
        "the hardest every run reaches)",
    )
    g.add_argument(
        "--diagnostics",
        type=arguments.every_or_off,
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
        "'mpiexec -n R kfac-ref compare --distributed ...'; the same records as one process; "
        "rank 0 writes (docs/distributed.md)",
    )


def add_demo_arguments(p) -> None:
    """``kfac-ref demo``: compare at its defaults, NGD capped at 25 iterations, output in results/demo (make demo)."""
    add_arguments(p, "demo")
    p.set_defaults(ngd_iterations=DEMO_NGD_ITERATIONS)


def config_from_args(args) -> CompareConfig:
    """The CompareConfig the command line describes (--quick applied)."""
    settings: dict = {}
    if args.settings:  # first: the flags and --set below override the file
        for opt, table in read_settings_file(args.settings, arguments.parse_value).items():
            settings.setdefault(opt, {}).update(table)
    named = []  # (flag, optimizer) given by name: that optimizer must run
    for hp in HYPER_OPTIONS:  # --lr 0.3 (every optimizer that has lr) or --lr kfac=0.3
        for opt, value in getattr(args, hp):
            named += [(f"--{hp.replace('_', '-')} {opt}=…", opt)] if opt else []
            for t in [opt] if opt else [o for o in args.optimizers if hp in arguments.hyper_types(o)]:
                settings.setdefault(t, {})[hp] = arguments.parse_value(t, hp, value)
    if args.solver:
        settings.setdefault("ngd", {})["solver"] = args.solver
    for opt, key, value in args.set:
        named.append((f"--set {opt}.{key}", opt))
        settings.setdefault(opt, {})[key] = value
    for flag, opt in named:
        if opt not in args.optimizers:
            raise ValueError(
                f"{flag}: {opt} is not among --optimizers ({','.join(args.optimizers)}); add it or drop the setting"
            )
    cfg = config_from_shared_args(
        args,
        kind=args.kind,
        batch_size=args.batch_size,
        settings=settings,
        grid=args.grid,
        grid_iterations=args.grid_iterations,
        target_loss=tuple(args.target_loss),
        target_acc=tuple(args.target_acc),
        diagnostics_every=args.diagnostics,
    )
    return replace(cfg, grid_iterations=QUICK_GRID_ITERATIONS) if args.quick else cfg


def config_from_shared_args(args, quick_bounds: dict | None = None, **fields) -> CompareConfig:
    """A CompareConfig from the arguments compare and batch-sweep share (the model and data, the
    optimizers and their caps, the evaluation, the machine) and ``fields``; --quick applies
    :data:`QUICK` (``quick_bounds`` replaces some of its bounds), else the default widths."""
    cfg = CompareConfig(
        dataset=args.dataset,
        data_dir=args.data_dir,
        model=args.model,
        hidden=args.hidden or (),
        channels=args.channels or (),
        optimizers=args.optimizers,
        iterations=args.iterations,
        eval_every=args.eval_every,
        eval_train=args.eval_train,
        iteration_caps={"ngd": args.ngd_iterations, "block-ngd": args.ngd_iterations},
        device=args.device,
        dtype=args.dtype,
        seed=args.seed,
        workers=arguments.thread_plan(args, args.model)[1],
        max_train=args.max_train,
        **fields,
    )
    if args.dataset != "digits" and not args.data_dir:
        raise ValueError(f"--dataset {args.dataset} needs --data-dir (see data/README.md)")
    if args.quick:
        return quick(cfg, **(quick_bounds or {}))
    return replace(cfg, hidden=cfg.hidden or CompareConfig.hidden, channels=cfg.channels or CompareConfig.channels)


def run(args, appendix: str = "") -> int:
    """``kfac-ref compare`` (and ``kfac-ref demo``, whose summary.md ends with ``appendix``)."""
    cfg = config_from_args(args)
    if args.epochs:  # count the samples on the host: nothing is moved to a device for it
        n = load_data(replace(cfg, device="cpu")).n_train
        cfg = replace(cfg, iterations=args.epochs * max(1, n // cfg.batch_size))
    if args.distributed and cfg.diagnostics_every:
        raise ValueError("--diagnostics is not available with --distributed (run it on one process)")
    comm = world() if args.distributed else None  # clear errors without mpi4py or without mpiexec
    with arguments.blas_threads(args, cfg.model):
        run_compare(cfg, args.out, arguments.progress_bars(args), arguments.logger(args), comm, appendix)
    if not args.quiet and (comm is None or comm.rank == 0):
        ranks = f" ({comm.size} MPI ranks)" if comm is not None else ""
        print(f"wrote {args.out}/history.json, curves.png, curves.svg, summary.md{ranks}")
    return 0
