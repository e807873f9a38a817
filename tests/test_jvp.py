"""Forward mode against central differences, and the Fisher quadratic forms it gives."""

from __future__ import annotations

import numpy as np
import pytest

import kfac_ref as K
from kfac_ref import fisher, nn
from kfac_ref.backend import to_device, to_numpy
from kfac_ref.gradcheck import rel_error
from kfac_ref.jvp import fisher_gram_jvp, jvp
from tests.helpers import classification_batch, regression_batch, tiny_convnet, tiny_mlp

MODELS = [
    ("mlp-relu", lambda: tiny_mlp("relu", sizes=(4, 6, 5, 3)), (4,)),
    ("mlp-sigmoid-nobias", lambda: tiny_mlp("sigmoid", bias=False), (4,)),
    ("convnet-max", lambda: tiny_convnet(pool="max"), (2, 6, 6)),
    ("convnet-avg-stride2", lambda: tiny_convnet(pool="avg", stride=2, in_shape=(2, 9, 9)), (2, 9, 9)),
    ("flatten-first", lambda: nn.Sequential(nn.Flatten(), nn.Linear(8, 3), nn.Tanh(), nn.Linear(3, 2)), (2, 2, 2)),
]


@pytest.mark.parametrize("name,make,in_shape", MODELS, ids=[m[0] for m in MODELS])
def test_jvp_matches_central_differences_of_the_outputs(name, make, in_shape, device, rng):
    model = make().to(device)
    x, _ = classification_batch(rng, 4, in_shape, 2, device)
    theta = to_numpy(K.get_flat_params(model))
    v = rng.standard_normal((2, theta.size))
    got = to_numpy(jvp(model, K.forward(model, x), to_device(v, device)))
    eps = 1e-6
    for i in range(2):
        K.set_flat_params(model, to_device(theta + eps * v[i], device))
        up = to_numpy(model(x))
        K.set_flat_params(model, to_device(theta - eps * v[i], device))
        down = to_numpy(model(x))
        K.set_flat_params(model, to_device(theta, device))
        assert rel_error(got[i], (up - down) / (2 * eps)) <= 1e-7


@pytest.mark.parametrize("loss_name", ["ce", "se"])
def test_forward_mode_quadratic_forms_equal_the_dense_exact_fisher(loss_name, rng):
    model = tiny_convnet()
    if loss_name == "ce":
        x, y = classification_batch(rng, 5, (2, 6, 6), 3)
        loss = nn.CrossEntropyLoss()
    else:
        x, y = regression_batch(rng, 5, (2, 6, 6), 3)
        loss = nn.SquaredErrorLoss()
    f = fisher.dense(model, loss, x, y, "exact")
    v = rng.standard_normal((3, model.num_params))
    got = fisher_gram_jvp(model, loss, K.forward(model, x), v)
    assert rel_error(got, v @ f @ v.T) <= 1e-12


def test_jvp_shape_errors(rng):
    model = tiny_mlp()
    x, _ = classification_batch(rng, 2, (4,), 3)
    with pytest.raises(ValueError, match=r"expected \(k, 43\)"):
        jvp(model, K.forward(model, x), np.zeros((2, 5)))
