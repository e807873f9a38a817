"""A distributed run's sizes are checked before the first step, in the words of what is too small.

R ranks need a sample each of the batch (B) and of every subset a step splits: the first
m = stats_fraction · B samples of the statistics, and (rescaling or adapting λ) the
m = model_fraction · B of the exact quadratic model.  No MPI needed: a stand-in communicator
that says it is one of R ranks (the checks run no collective).
"""

from __future__ import annotations

import numpy as np
import pytest

from kfac_ref import models, nn
from kfac_ref.data import Dataset
from kfac_ref.data.synthetic import make_classification
from kfac_ref.mpi import Communicator
from kfac_ref.optim.distributed import DistributedKFAC, DistributedSGD
from kfac_ref.train import Trainer


class RankOf:
    """Rank 0 of ``size`` ranks; any collective is an error (none may run before the first step)."""

    def __init__(self, size):
        self.size = size

    def Get_rank(self):
        return 0

    def Get_size(self):
        return self.size

    def __getattr__(self, name):
        raise AssertionError(f"a collective ({name}) ran before the first step")


def _data():
    x, y = make_classification(60, 5, 3, np.random.default_rng(0))
    return Dataset("toy", x[:40], y[:40], x[40:], y[40:], num_classes=3)


def _kfac(ranks, **hyper):
    model = models.mlp(5, hidden=(4,), num_classes=3, seed=0)
    return DistributedKFAC(model, nn.CrossEntropyLoss(), comm=Communicator(RankOf(ranks), "sum"), lr=0.1, **hyper)


def test_fewer_statistics_samples_than_ranks_is_refused_before_the_first_step():
    opt = _kfac(4, damping=0.3, stats_fraction=0.25)  # B = 8: m = 2 < R = 4
    with pytest.raises(ValueError, match=r"4 ranks \(R\) exceed the 2 samples of the subset m = stats_fraction · B"):
        Trainer(opt, _data(), 8, np.random.default_rng(0))
    assert opt.steps == 0 and opt.curvature.updates == 0


def test_the_message_for_the_statistics_subset_does_not_call_it_the_batch():
    opt = _kfac(4, damping=0.3, stats_fraction=0.25)
    with pytest.raises(ValueError) as err:
        opt.check_batch_size(8)
    assert "the batch (B)" not in str(err.value)
    assert "raise stats_fraction or the batch size (B), or use fewer ranks" in str(err.value)


def test_the_exact_models_subset_is_checked_only_when_a_step_uses_it():
    _kfac(4, damping=0.3, model_fraction=0.25).check_batch_size(8)  # unused: no rescaling, no LM
    opt = _kfac(4, damping=0.3, model_fraction=0.25, rescale=True, kl_clip=None)
    with pytest.raises(ValueError, match=r"exceed the 2 samples of the subset m = model_fraction · B that the exact"):
        opt.check_batch_size(8)


def test_a_batch_smaller_than_the_ranks_is_refused_naming_the_batch():
    opt = DistributedSGD(
        models.mlp(5, hidden=(4,), num_classes=3, seed=0),
        nn.CrossEntropyLoss(),
        comm=Communicator(RankOf(3), "sum"),
        lr=0.1,
    )
    with pytest.raises(ValueError, match=r"3 ranks \(R\) exceed the 2 samples of the batch \(B\).*use R ≤ B"):
        Trainer(opt, _data(), 2, np.random.default_rng(0))


def test_enough_samples_everywhere_passes():
    opt = _kfac(4, damping=0.3, stats_fraction=0.5, rescale=True, kl_clip=None)
    Trainer(opt, _data(), 8, np.random.default_rng(0))  # m = 4 = R
