"""Notebook sliders degrade to one static figure wherever widgets cannot run (headless tests, docs)."""

import sys
import types

import pytest

from kfac_ref.experiments import widgets


def test_without_widgets_explore_draws_the_static_setting_once(monkeypatch):
    monkeypatch.setenv("KFAC_REF_WIDGETS", "0")
    calls = []
    assert (
        widgets.explore(lambda lam, n: calls.append((lam, n)) or "figure", {"lam": [0.1, 1.0]}, {"lam": 1.0, "n": 3})
        == "figure"
    )
    assert calls == [(1.0, 3)]
    assert not widgets.widgets_available()


@pytest.mark.parametrize(
    "shell,backend,expected",
    [
        (None, "module://ipympl.backend_nbagg", False),  # plain Python: no IPython shell
        (types.SimpleNamespace(), "module://ipympl.backend_nbagg", False),  # a terminal IPython: no kernel
        (types.SimpleNamespace(kernel=object()), "agg", False),  # a kernel, but a non-interactive backend
        (types.SimpleNamespace(kernel=object()), "module://ipympl.backend_nbagg", True),
    ],
)
def test_sliders_need_a_kernel_and_an_interactive_backend(monkeypatch, shell, backend, expected):
    """A stand-in IPython (its shell with or without a kernel) and a stand-in ipywidgets decide it."""
    import matplotlib

    monkeypatch.delenv("KFAC_REF_WIDGETS", raising=False)
    monkeypatch.setitem(sys.modules, "ipywidgets", types.ModuleType("ipywidgets"))
    fake_ipython = types.ModuleType("IPython")
    fake_ipython.get_ipython = lambda: shell
    monkeypatch.setitem(sys.modules, "IPython", fake_ipython)
    monkeypatch.setattr(matplotlib, "get_backend", lambda: backend)
    assert widgets.widgets_available() is expected
    monkeypatch.setenv("KFAC_REF_WIDGETS", "0")
    assert widgets.widgets_available() is False  # the switch wins over everything


def test_every_slider_needs_a_static_value():
    with pytest.raises(ValueError, match="static"):
        widgets.explore(lambda lam: None, {"lam": [1]}, {})
