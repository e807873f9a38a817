"""K-FAC's recipe, one piece at a time: what each piece buys per iteration and costs per second.

The K-FAC that ``kfac-ref compare`` runs is more than the preconditioned step
Δ = −F̃⁻¹∇h of docs/math.md §4–5: momentum, KL-clipping (docs/math.md §6.7),
the exact quadratic model's rescaling ([MG15] §7, docs/math.md §6.5) and the
Levenberg–Marquardt adaptation of λ (docs/math.md §6.6) each change how far a
step goes.  This module holds the reusable parts of notebook 05's study of them:

- :func:`ablation` — the ladder of configurations, each one K-FAC keyword set
  that differs from its parent in the keys it names, from the plain step
  δ = −η F̃⁻¹∇h up to compare's K-FAC plus LM, and the §7 branch;
- :func:`run_logged` — :func:`kfac_ref.experiments.compare.run_one` that also
  keeps every step's ``info`` dict (KL-clip ν, λ, α, μ, ρ, phase times);
- :func:`phase_seconds` — the mean seconds per iteration of each phase;
- :func:`flop_model` — a FLOP count per layer and phase of one K-FAC iteration,
  to set next to the measured phase times.

``kfac-ref batch-sweep``'s document (where the recipe pays off) is read back by
:mod:`kfac_ref.experiments.batch_sweep` (``load_document``, ``ratios``, ``points_markdown``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .. import nn
from ..optim import OPTIMIZERS
from ..optim.base import PHASES
from ..params import set_flat_params
from ..train import Trainer
from .compare import DEFAULT_SETTINGS, build_model

#: the info keys :func:`run_logged` keeps per step (those a step did not report are None)
INFO_KEYS = ("loss", "step_norm", "damping", "kl_clip_nu", "alpha", "mu", "rho")


@dataclass(frozen=True)
class Config:
    """One rung of the ablation: a K-FAC keyword set and how it differs from its parent.

    name     : short label ("plain", "+ momentum", …)
    parent   : the rung it changes (None for the first)
    adds     : what the change is, in words
    settings : every keyword of :class:`kfac_ref.optim.KFAC` the run uses
    changed  : the keys whose values differ from the parent's (empty for the first)
    """

    name: str
    parent: str | None
    adds: str
    settings: dict = field(hash=False)
    changed: tuple = ()


def ablation(damping: float | None = None, plain_lr: float = 0.1) -> list[Config]:
    """The ladder from the plain preconditioned step to compare's K-FAC + LM, and the §7 branch.

    ``damping``: λ for every rung (default: compare's K-FAC, DEFAULT_SETTINGS["kfac"]).
    ``plain_lr``: η of the unclipped steps without §7 (the plain step at compare's η = 1 is the
    first rung, to show what happens without a safeguard).

    Returns [8] configurations in this order; each differs from its parent in ``changed`` only::

        plain, η = 1    δ = −η F̃⁻¹∇h, no momentum, no clipping            (docs/math.md §4–5)
        plain           the same with η = plain_lr
        + momentum      v ← μ v + F̃⁻¹∇h, δ = −η v (μ = compare's)         (docs/math.md §6.5)
        + KL-clip       F̃⁻¹∇h scaled by ν before momentum (κ = compare's)  (docs/math.md §6.7)
        compare's K-FAC η = compare's (1): exactly DEFAULT_SETTINGS["kfac"] (with ``damping``)
        + LM            adapt_damping=True: λ every T₁ steps              (docs/math.md §6.6)
        §7 rescale      from "plain, η = 1": δ = η (α Δ + μ δ₀) from the exact F  (docs/math.md §6.5)
        §7 rescale + LM adapt_damping=True on top of it

    Every rung keeps compare's amortisation (T_cov, T_inv, stats_fraction), Fisher kind and ε.
    """
    base = dict(DEFAULT_SETTINGS["kfac"])
    if damping is not None:
        base["damping"] = damping
    plain_big = {**base, "momentum": 0.0, "kl_clip": None, "rescale": False, "adapt_damping": False}
    steps = [  # (name, parent, adds, changes to the parent's settings)
        ("plain, η = 1", None, "δ = −η F̃⁻¹∇h at compare's η, no momentum, no safeguard", plain_big),
        ("plain", "plain, η = 1", f"η = {plain_lr:g}", {"lr": plain_lr}),
        ("+ momentum", "plain", f"heavy-ball momentum μ = {base['momentum']:g}", {"momentum": base["momentum"]}),
        ("+ KL-clip", "+ momentum", f"KL-clipping κ = {base['kl_clip']:g}", {"kl_clip": base["kl_clip"]}),
        ("compare's K-FAC", "+ KL-clip", f"η = {base['lr']:g} (compare's)", {"lr": base["lr"]}),
        ("+ LM", "compare's K-FAC", "Levenberg–Marquardt λ (T₁ = 5)", {"adapt_damping": True}),
        ("§7 rescale", "plain, η = 1", "(α, μ) from the exact quadratic model", {"rescale": True}),
        ("§7 rescale + LM", "§7 rescale", "Levenberg–Marquardt λ (T₁ = 5)", {"adapt_damping": True}),
    ]
    out: dict[str, Config] = {}
    for name, parent, adds, change in steps:
        before = out[parent].settings if parent else {}
        settings = {**before, **change}
        changed = tuple(k for k in settings if parent and settings[k] != before.get(k))
        out[name] = Config(name, parent, adds, settings, changed)
    return list(out.values())


def run_logged(cfg, name: str, settings: dict, data, theta0, iterations: int) -> dict:
    """:func:`compare.run_one` (same model, θ₀, batches and seed; no GPU warm-up) that keeps every step's info.

    cfg : CompareConfig (model, batch size, seed, eval_every); name : an OPTIMIZERS key;
    theta0 : (P,) the start.  Returns {"optimizer", "settings", "records", "stopped", "infos"} with
    infos [iterations done] dicts of :data:`INFO_KEYS` (None where the step did not report one)
    plus "times" {phase: seconds}; the run dict works with :mod:`.sweeps`' readers.
    """
    model = build_model(cfg, data)
    set_flat_params(model, theta0)
    opt = _Logged(OPTIMIZERS[name](model, nn.CrossEntropyLoss(), **settings))
    trainer = Trainer(opt, data, cfg.batch_size, np.random.default_rng(cfg.seed), cfg.eval_every)
    hist = trainer.run(iterations)
    return {
        "optimizer": name,
        "settings": settings,
        "records": hist.records,
        "stopped": hist.stopped,
        "infos": opt.infos,
    }


class _Logged:
    """An optimizer whose ``step`` also appends its info dict to ``infos`` (everything else forwarded)."""

    def __init__(self, opt):
        self.opt, self.infos = opt, []

    def __getattr__(self, attr):
        return getattr(self.opt, attr)

    def step(self, x, y, rng=None):
        info = self.opt.step(x, y, rng)
        self.infos.append({**{k: info.get(k) for k in INFO_KEYS}, "times": dict(info["times"])})
        return info


def phase_seconds(run) -> dict:
    """{phase: mean seconds per iteration} over a :func:`run_logged` run's steps (PHASES order)."""
    infos = run["infos"]
    if not infos:
        raise ValueError(f"{run['optimizer']}: the run has no steps to time")
    return {p: sum(i["times"][p] for i in infos) / len(infos) for p in PHASES}


def _locations(model, in_shape) -> list[int]:
    """T per parameter layer: output locations (H·W) of a Conv2d, 1 for a Linear."""
    shape, out = tuple(in_shape), []
    for layer in model.layers:
        nxt = layer.output_shape(shape)
        if isinstance(layer, nn.Conv2d):
            out.append(int(np.prod(nxt[1:])))
        elif isinstance(layer, nn.Linear):
            out.append(1)
        shape = nxt
    return out


def flop_model(model, in_shape, batch_size: int, T_cov: int = 1, T_inv: int = 1) -> list[dict]:
    """FLOPs per layer of one K-FAC iteration, by phase (orders of magnitude, constants as written).

    model : a Sequential of Linear/Conv2d (+ parameter-free) layers; in_shape : per-sample input shape.
    With d_in = a_dim (bias included), d_out = g_dim, T the layer's output locations, B the batch:

        forward_backward  3 · 2 B T d_in d_out      (forward, backward to inputs, weight gradient)
        seed_backward     2 B T d_in d_out / T_cov  (the Monte-Carlo seeds backpropagated, docs/math.md §3)
        statistics        B T (d_in² + d_out²) / T_cov   (A = E[ā āᵀ], G = E[g gᵀ], docs/math.md §4–5)
        inversion         (d_in³ + d_out³) / T_inv       (the damped inverses, docs/math.md §6.1)
        precondition      d_out d_in (d_in + d_out)      (G⁻¹ ∇_W̄ h A⁻¹, every step)

    Returns one dict per parameter layer: {"layer", "d_in", "d_out", "T", and the five counts}
    (floats: amortised counts need not be integers).
    """
    b = int(batch_size)
    rows = []
    for i, (layer, t) in enumerate(zip(model.param_layers(), _locations(model, in_shape))):
        din, dout = layer.a_dim, layer.g_dim
        rows.append(
            {
                "layer": f"{layer.kind}{i}",
                "d_in": din,
                "d_out": dout,
                "T": t,
                "forward_backward": 6.0 * b * t * din * dout,
                "seed_backward": 2.0 * b * t * din * dout / T_cov,
                "statistics": b * t * (din**2 + dout**2) / T_cov,
                "inversion": (din**3 + dout**3) / T_inv,
                "precondition": float(dout * din * (din + dout)),
            }
        )
    return rows


def mean_defined(values) -> float | None:
    """The mean of the finite, non-None values (None if there are none): e.g. a run's KL-clip ν."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None
