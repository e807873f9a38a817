"""Experiments: the article's tables and figures and the studies of the notebooks.

A sub-command of ``kfac-ref`` is a module here with ``add_arguments(parser)`` and
``run(args)`` (compare, batch_sweep, sizes, fisher_plot); the others are libraries
for the notebooks.  Each module is imported on its own (``from kfac_ref.experiments
import sizes``); this package file deliberately imports nothing.
"""
