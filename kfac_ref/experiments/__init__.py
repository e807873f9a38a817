"""Experiments: the article's tables and figures, each one a small module with a ``main``.

Each module is imported on its own (``from kfac_ref.experiments import sizes``);
this package file deliberately imports nothing.
"""
