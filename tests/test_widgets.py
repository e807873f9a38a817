"""Notebook sliders degrade to one static figure wherever widgets cannot run (headless tests, docs)."""

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


def test_outside_a_kernel_no_widgets_are_used():
    assert not widgets.widgets_available()  # pytest is no Jupyter kernel


def test_every_slider_needs_a_static_value():
    with pytest.raises(ValueError, match="static"):
        widgets.explore(lambda lam: None, {"lam": [1]}, {})
