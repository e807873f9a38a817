"""The one error that means "the run diverged": an array that must be finite is not.

Raised for NaN/Inf logits (the losses), a θ that overflowed (the update) and a
NaN/Inf loss; the training loop stops such a run and keeps what it recorded,
anything else is a bug or bad input and propagates.  A ValueError too, so that
callers checking inputs with ``except ValueError`` still see it.
"""

from __future__ import annotations


class NonFiniteError(FloatingPointError, ValueError):
    """NaN/Inf where a finite number is needed; the message names the array and where."""
