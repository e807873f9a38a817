"""K-FAC's recipe, one piece at a time: what each piece buys per iteration and costs per second.

The K-FAC that ``kfac-ref compare`` runs is more than the step Δ = −F̃⁻¹∇h of docs/math.md §4–5:
momentum, KL-clipping (§6.7), the §7 rescaling (§6.5) and Levenberg–Marquardt λ (§6.6) each
change how far a step goes.  The reusable parts of notebook 05's study of them: :func:`ablation`
(the ladder of configurations, each differing from its parent in the keys it names) and
:func:`phase_seconds` (mean seconds per phase of a ``compare.run_one(..., infos=True)`` run, to set
next to :func:`kfac_ref.experiments.sizes.flop_model`'s FLOPs per layer and phase).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..optim.base import PHASES
from .compare import AMORTISED_KFAC, DEFAULT_SETTINGS


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
    """The ladder from the plain preconditioned step to the amortised K-FAC + LM, and [MG15]'s §7
    branch, which ends at compare's K-FAC.

    ``damping``: λ for every rung (default: compare's K-FAC, DEFAULT_SETTINGS["kfac"]).
    ``plain_lr``: η of the unclipped steps without §7 (the plain step at compare's η = 1 is the
    first rung, to show what happens without a safeguard).

    Returns [8] configurations in this order; each differs from its parent in ``changed`` only::

        plain, η = 1     δ = −η F̃⁻¹∇h, no momentum, no clipping            (docs/math.md §4–5)
        plain            the same with η = plain_lr
        + momentum       v ← μ v + F̃⁻¹∇h, δ = −η v (μ = AMORTISED_KFAC's) (docs/math.md §6.5)
        + KL-clip        F̃⁻¹∇h scaled by ν before momentum (κ = AMORTISED_KFAC's)  (docs/math.md §6.7)
        amortised K-FAC  η = compare's (1): compare's K-FAC with AMORTISED_KFAC
        + LM             adapt_damping=True: λ every T₁ steps              (docs/math.md §6.6)
        §7 rescale       from "plain, η = 1": δ = η (α Δ + μ δ₀) from the exact F  (docs/math.md §6.5)
        §7 rescale + LM  adapt_damping=True on top of it: exactly DEFAULT_SETTINGS["kfac"] (with ``damping``)

    Every rung keeps compare's amortisation (T_cov, T_inv, stats_fraction), Fisher kind and ε.
    """
    base = {**DEFAULT_SETTINGS["kfac"], **AMORTISED_KFAC}
    if damping is not None:
        base["damping"] = damping
    plain_big = {**base, "momentum": 0.0, "kl_clip": None, "rescale": False, "adapt_damping": False}
    steps = [  # (name, parent, adds, changes to the parent's settings)
        ("plain, η = 1", None, "δ = −η F̃⁻¹∇h at compare's η, no momentum, no safeguard", plain_big),
        ("plain", "plain, η = 1", f"η = {plain_lr:g}", {"lr": plain_lr}),
        ("+ momentum", "plain", f"heavy-ball momentum μ = {base['momentum']:g}", {"momentum": base["momentum"]}),
        ("+ KL-clip", "+ momentum", f"KL-clipping κ = {base['kl_clip']:g}", {"kl_clip": base["kl_clip"]}),
        ("amortised K-FAC", "+ KL-clip", f"η = {base['lr']:g} (compare's)", {"lr": base["lr"]}),
        ("+ LM", "amortised K-FAC", "Levenberg–Marquardt λ (T₁ = 5)", {"adapt_damping": True}),
        ("§7 rescale", "plain, η = 1", "(α, μ) from the exact quadratic model", {"rescale": True}),
        ("§7 rescale + LM", "§7 rescale", "Levenberg–Marquardt λ (T₁ = 5): compare's K-FAC", {"adapt_damping": True}),
    ]
    out: dict[str, Config] = {}
    for name, parent, adds, change in steps:
        before = out[parent].settings if parent else {}
        settings = {**before, **change}
        changed = tuple(k for k in settings if parent and settings[k] != before.get(k))
        out[name] = Config(name, parent, adds, settings, changed)
    return list(out.values())


def phase_seconds(run) -> dict:
    """{phase: mean seconds per iteration} over the steps of a ``run_one(..., infos=True)`` run (PHASES order)."""
    infos = run["infos"]
    if not infos:
        raise ValueError(f"{run['optimizer']}: the run has no steps to time")
    return {p: sum(i["times"][p] for i in infos) / len(infos) for p in PHASES}


def mean_defined(values) -> float | None:
    """The mean of the finite, non-None values (None if there are none): e.g. a run's KL-clip ν."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None
