"""KL-clipping bounds the step whatever η is: η² ν² ∇hᵀF̃⁻¹∇h = κ once clipping is active."""

from __future__ import annotations

import math

import numpy as np
import pytest

import kfac_ref as K
from kfac_ref import nn, optim
from kfac_ref.errors import NonFiniteError
from kfac_ref.gradcheck import rel_error
from kfac_ref.optim.quadratic import kl_clip_factor
from tests.helpers import classification_batch, tiny_mlp

MAKERS = {
    "kfac": lambda m, l, lr: optim.KFAC(m, l, lr=lr, momentum=0.0, kind="exact", kl_clip=1e-3),
    "ngd": lambda m, l, lr: optim.NGD(m, l, lr=lr, kind="exact", kl_clip=1e-3),
}


def test_kl_clip_factor_keeps_the_quadratic_form_at_kappa_for_huge_learning_rates():
    for lr in (10.0, 1e100, 1.3e154, 1e200, 1e300):
        nu = kl_clip_factor(lr, 1e-3, 4.0)
        # (η ν)² q = κ, checked in logarithms so that nothing overflows
        assert math.isclose(2 * (math.log(lr) + math.log(nu)) + math.log(4.0), math.log(1e-3), rel_tol=1e-12)
    assert kl_clip_factor(1e-3, 1e-3, 4.0) == 1.0  # a short step is left as it is
    assert kl_clip_factor(1e200, 1e-3, 0.0) == 1.0  # a zero gradient: nothing to clip


def test_kl_clip_factor_refuses_what_it_cannot_represent():
    with pytest.raises(NonFiniteError, match="not finite"):
        kl_clip_factor(1.0, 1e-3, math.inf)
    with pytest.raises(ValueError, match="too large"):
        kl_clip_factor(1e300, 1e-300, 1e300)


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_a_learning_rate_of_1e200_takes_the_same_clipped_step_as_1e3(name, rng):
    """Once clipped, the step is −√κ/√q F̃⁻¹∇h whatever η is: θ must move, and by the same amount."""
    loss = nn.CrossEntropyLoss()
    x, y = classification_batch(rng, 8, (4,), 3)
    moved = {}
    for lr in (1e3, 1e200):
        model = tiny_mlp("tanh", sizes=(4, 5, 3))
        theta0 = K.get_flat_params(model).copy()
        MAKERS[name](model, loss, lr).step(x, y)
        moved[lr] = K.get_flat_params(model) - theta0
    assert np.linalg.norm(moved[1e3]) > 1e-3  # the step is not frozen
    assert rel_error(moved[1e200], moved[1e3]) <= 1e-12
