"""One optimizer, one hyper-parameter, several values: the rest held fixed.

:func:`sweep` trains the same model from the same θ₀ on the same mini-batches once per value,
through :func:`~.compare.run_one`, so two runs differ in that value only; each run is run_one's
dict plus ``"param"`` and ``"value"``.  Readers of any run dict: :func:`final`, :func:`value_at`,
:func:`seconds_per_iteration`; :func:`draw_sweep` draws one curve per value on an ``ax``.

    runs = sweep(cfg, "kfac", "damping", [0.03, 0.3, 3.0], iterations=40)
"""

from __future__ import annotations

import math

from ..backend import to_numpy
from ..params import get_flat_params
from .compare import build_model, load_data, run_one, settings_for
from .summary import seconds_per_iteration as seconds_per_iteration  # (a reader of any run dict)


def sweep(cfg, name: str, param: str, values, iterations: int | None = None, data=None, theta0=None) -> list:
    """Train optimizer ``name`` once per value of hyper-parameter ``param``.

    cfg        : CompareConfig — model, data, batch size, seed, eval_every, device
    name       : an optimizer's short name ('sgd', 'ngd', 'block-ngd', 'kfac')
    param      : the keyword of that optimizer to vary (e.g. 'damping', 'T_inv', 'lr')
    values     : (V,) the values to try, in the order the runs are returned
    iterations : per run (default: cfg.iterations)
    data       : a loaded Dataset (default: load_data(cfg)); pass one to share it
    theta0     : (P,) starting parameters (default: those of build_model(cfg, data))
    Returns [V] run dicts, each with "param" and "value" added.  Every other
    hyper-parameter is the one :func:`settings_for` gives (defaults + cfg.settings).
    """
    values = list(values)
    if not values:
        raise ValueError(f"sweep over {param!r}: no values given")
    data = load_data(cfg) if data is None else data
    if theta0 is None:
        theta0 = to_numpy(get_flat_params(build_model(cfg, data)))
    iterations = cfg.iterations if iterations is None else iterations
    runs = []
    for value in values:
        settings = {**settings_for(cfg, name), param: value}
        run = run_one(cfg, name, settings, data, theta0, iterations)
        runs.append({**run, "param": param, "value": value})
    return runs


def final(run, key: str = "train_loss"):
    """The last measured value of record field ``key`` (None if never measured).

    A run that stopped early (NaN loss) reports what it last measured; a
    non-finite measurement is returned as is, so divergence stays visible.
    """
    measured = [r[key] for r in run["records"] if r.get(key) is not None]
    return measured[-1] if measured else None


def value_at(run, key: str = "train_loss", *, iteration=None, seconds=None):
    """The last value of ``key`` measured at or before an iteration or a training time.

    Give exactly one of ``iteration`` and ``seconds`` (cumulative training
    seconds, as recorded); None if nothing was measured by then.  This reads a
    curve "at the same budget": the loss two methods had after 40 iterations,
    or after 2 seconds of training.
    """
    if (iteration is None) == (seconds is None):
        raise ValueError("value_at: give exactly one of iteration= and seconds=")
    xkey, limit = ("iteration", iteration) if seconds is None else ("seconds", seconds)
    measured = [r[key] for r in run["records"] if r.get(key) is not None and r[xkey] <= limit]
    return measured[-1] if measured else None


def draw_sweep(ax, runs, key: str = "train_loss", xkey: str = "iteration", log: bool = True):
    """One line per run: ``key`` against ``xkey`` ('iteration' or 'seconds'), labelled by value."""
    for run in runs:
        pts = [(r[xkey], r[key]) for r in run["records"] if r.get(key) is not None and math.isfinite(r[key])]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker=".", lw=1.4, label=f"{run['param']} = {run['value']:g}")
    ax.set_xlabel("iterations" if xkey == "iteration" else "wall-clock seconds (training only)")
    ax.set_ylabel(key.replace("_", " "))
    if log:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return ax
