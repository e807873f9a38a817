"""Sliders where they teach, a static figure where they cannot run (the headless test run, the docs).

    explore(draw, choices, static)

``draw(**values)`` draws one figure for one setting.  In a live Jupyter kernel with
``ipywidgets`` installed (``pip install -e '.[notebooks]'``) :func:`explore` puts one
slider per entry of ``choices`` over ``draw``; otherwise it calls ``draw(**static)``
once, so the notebook shows the figure of the static setting.  ipywidgets is never
required: without it, or with ``KFAC_REF_WIDGETS=0`` in the environment (the docs
build sets it), or under a non-interactive matplotlib backend (``MPLBACKEND=Agg``, as in
``tests/test_notebooks.py``), the static figure is drawn.
"""

from __future__ import annotations

import os


def widgets_available() -> bool:
    """True when sliders can work here: ipywidgets imports, a kernel runs, the backend is interactive."""
    if os.environ.get("KFAC_REF_WIDGETS", "1") == "0":
        return False
    try:
        import ipywidgets  # noqa: F401
        import matplotlib
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None or not hasattr(shell, "kernel"):
        return False  # plain Python or a terminal IPython: no widget front end
    return "agg" != matplotlib.get_backend().lower()


def explore(draw, choices: dict, static: dict):
    """Sliders over ``draw`` where widgets work, else ``draw(**static)`` once.

    choices : {name: [value, …]}   the values each slider offers (in order)
    static  : {name: value}        the setting drawn without widgets (and the sliders' start)
    Returns the ipywidgets ``interactive`` object, or ``draw``'s return value.
    """
    missing = set(choices) - set(static)
    if missing:
        raise ValueError(f"explore: no static value for {sorted(missing)}")
    if not widgets_available():
        return draw(**static)
    import ipywidgets

    sliders = {
        name: ipywidgets.SelectionSlider(
            options=list(values), value=static[name], description=name, continuous_update=False
        )
        for name, values in choices.items()
    }
    fixed = {k: ipywidgets.fixed(v) for k, v in static.items() if k not in choices}
    return ipywidgets.interact(draw, **sliders, **fixed)
