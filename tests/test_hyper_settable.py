"""Every hyper-parameter of every optimizer can be set from the command line (``--set OPT.KEY=VALUE``).

Its type is read from the optimizer's signature: a parameter whose default is None
(``max_bytes``, ``kl_clip``, ``omega``) carries an annotation that says what else it may be.
"""

from __future__ import annotations

import inspect

import pytest

from kfac_ref import models, nn, optim
from kfac_ref.experiments.arguments import hyper_types, setting
from kfac_ref.optim import OPTIMIZERS


def test_ngd_max_bytes_is_settable_as_bytes_or_none():
    assert hyper_types("ngd")["max_bytes"] == (int, True)
    assert setting("ngd.max_bytes=8000000000") == ("ngd", "max_bytes", 8_000_000_000)
    assert setting("ngd.max_bytes=none") == ("ngd", "max_bytes", None)
    with pytest.raises(Exception, match=r"ngd.max_bytes: expected an integer or none, got 'lots'"):
        setting("ngd.max_bytes=lots")


def test_the_dense_fisher_memory_error_names_the_setting_that_raises_the_limit():
    model = models.mlp(5, hidden=(4,), num_classes=3, seed=0)  # P = 39: a (39, 39) float64 Fisher, 12,168 bytes
    _, key, small = setting("ngd.max_bytes=1000")
    with pytest.raises(
        MemoryError, match=r"pass a larger max_bytes= \(on the command line: --set ngd.max_bytes=BYTES\)"
    ):
        optim.NGD(model, nn.CrossEntropyLoss(), **{key: small})
    _, key, enough = setting("ngd.max_bytes=20000")
    assert optim.NGD(model, nn.CrossEntropyLoss(), **{key: enough}).curvature.fisher is None  # accepted


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_hyper_parameter_defaulting_to_none_says_its_type(name):
    """A None default alone would leave the command line to guess (a string): the annotation says int/float."""
    for p in list(inspect.signature(OPTIMIZERS[name]).parameters.values())[2:]:  # after model, loss_fn
        if p.default is None:
            assert "None" in str(p.annotation) and ("int" in str(p.annotation) or "float" in str(p.annotation)), p
            assert hyper_types(name)[p.name][0] in (int, float)
