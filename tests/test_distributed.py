"""Distributed K-FAC ([O19]): on 2 and 3 MPI ranks the same history as one process, to 1e-10 in float64.

The exactness tests launch ``mpiexec`` (the venv's, from the mpich wheel) on tests/distributed_run.py
and compare every recorded loss and accuracy and the final θ with the single-process run; they
skip only where mpi4py is missing.  The rest runs in this process on a one-rank stand-in communicator.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kfac_ref import models, nn
from kfac_ref.backend import get_xp, to_numpy
from kfac_ref.experiments.sizes import payload_entries
from kfac_ref.mpi import Communicator, shard, shard_mean, world
from kfac_ref.optim import KFAC, SGD
from kfac_ref.optim.distributed import DistributedKFAC, DistributedSGD, distributed_optimizer, owners
from kfac_ref.params import get_flat_params
from tests.helpers import classification_batch

HERE = Path(__file__).resolve().parent
RUN = HERE / "distributed_run.py"
BIN = Path(sys.executable).parent  # the venv's bin: mpiexec comes with the mpich wheel
MPIEXEC = BIN / "mpiexec"
HAS_MPI = importlib.util.find_spec("mpi4py") is not None
needs_mpi = pytest.mark.skipif(not HAS_MPI, reason="mpi4py is not installed (pip install -e '.[mpi]')")
TIMEOUT = 120  # seconds per launch (a run takes ~2 s)
RTOL = 1e-10


class SelfComm:
    """A one-rank stand-in for an mpi4py communicator (no MPI needed)."""

    def Get_rank(self):
        return 0

    def Get_size(self):
        return 1

    def Allreduce(self, send, recv, op):
        recv[...] = send

    def Allgatherv(self, send, spec):
        spec[0][...] = send

    def allgather(self, obj):
        return [obj]

    def Barrier(self):
        pass


def self_comm():
    return Communicator(SelfComm(), sum_op="sum")


def launch(out, opt, ranks=None, *extra):
    """Run the helper (under mpiexec -n ranks, or alone); returns the CompletedProcess."""
    cmd = [sys.executable, str(RUN), str(out), opt, *extra]
    if ranks is not None:
        cmd = [str(MPIEXEC), "-n", str(ranks), *cmd, "--distributed"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env["PYTHONPATH"] = str(HERE.parent)  # this checkout's kfac_ref, not another installed one
    for var in ("PMI_RANK", "PMI_SIZE", "PMI_FD", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK"):
        env.pop(var, None)  # a test run under mpiexec must not leak its launcher into the child
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=env, cwd=HERE.parent)


def assert_same_history(single, dist):
    a, b = np.load(single), np.load(dist)
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
        np.testing.assert_array_equal(np.isnan(a[k]), np.isnan(b[k]), err_msg=k)
        m = ~np.isnan(a[k])
        scale = np.abs(a[k][m]).max() if k == "theta" else np.abs(a[k][m])  # θ: relative to its largest entry
        np.testing.assert_array_less(np.abs(a[k][m] - b[k][m]), RTOL * scale + 1e-300, err_msg=k)


_single_cache: dict = {}


def single_run(tmp_path_factory, opt, model):
    if (opt, model) not in _single_cache:
        out = tmp_path_factory.mktemp("single") / f"{opt}-{model}.npz"
        proc = launch(out, opt, None, "--model", model)
        assert proc.returncode == 0, proc.stderr
        _single_cache[opt, model] = out
    return _single_cache[opt, model]


# ---- the test that matters: any R gives the single-process run --------------------------
CASES = [
    ("sgd", "mlp"),
    ("kfac", "mlp"),
    ("kfac-rescale", "mlp"),
    ("kfac-exact", "mlp"),
    ("kfac", "convnet"),
    ("kfac-tridiag", "mlp"),  # data-parallel statistics of a structure with cross-layer factors
]


@needs_mpi
@pytest.mark.parametrize("ranks", [2, 3])
@pytest.mark.parametrize("opt,model", CASES)
def test_history_on_R_ranks_equals_single_process_run(tmp_path, tmp_path_factory, opt, model, ranks):
    single = single_run(tmp_path_factory, opt, model)
    out = tmp_path / "dist.npz"
    proc = launch(out, opt, ranks, "--model", model)
    assert proc.returncode == 0, proc.stderr  # rc 4: the ranks disagree on θ
    assert_same_history(single, out)


@needs_mpi
def test_more_ranks_than_samples_is_refused_naming_R_and_B(tmp_path):
    proc = launch(tmp_path / "x.npz", "sgd", 3, "--batch-size", "2")
    assert proc.returncode != 0
    assert "3 ranks (R) exceed the 2 samples of the batch (B)" in proc.stderr
    assert not (tmp_path / "x.npz").exists()


@needs_mpi
def test_compare_cli_distributed_gives_the_single_process_records(tmp_path):
    common = ["-m", "kfac_ref", "compare", "--optimizers", "sgd,kfac", "--quick", "--quiet", "--threads", "1"]
    common += ["--dtype", "float64"]  # the exact comparison (the command line trains in float32 by default)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_"))}
    one = subprocess.run(
        [sys.executable, *common, "--out", str(tmp_path / "one")],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
    )
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [str(MPIEXEC), "-n", "2", sys.executable, *common, "--distributed", "--out", str(tmp_path / "two")],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
    )
    assert two.returncode == 0, two.stderr
    import json

    a, b = (json.loads((tmp_path / d / "history.json").read_text()) for d in ("one", "two"))
    assert [r["optimizer"] for r in a["runs"]] == [r["optimizer"] for r in b["runs"]] == ["sgd", "kfac"]
    for ra, rb in zip(a["runs"], b["runs"]):
        assert len(ra["records"]) == len(rb["records"])
        for x, y in zip(ra["records"], rb["records"]):
            for k in x:
                if k != "seconds" and x[k] is not None:
                    assert abs(x[k] - y[k]) <= RTOL * abs(x[k]), (ra["optimizer"], x["iteration"], k)


# ---- the parts, in this process ---------------------------------------------------------
def test_shards_cover_the_batch_in_order_with_sizes_differing_by_at_most_one():
    for n, size in [(64, 3), (10, 4), (5, 5), (7, 1)]:
        parts = [shard(n, size, r) for r in range(size)]
        assert [p.start for p in parts] == [0] + [p.stop for p in parts[:-1]] and parts[-1].stop == n
        lens = [p.stop - p.start for p in parts]
        assert max(lens) - min(lens) <= 1 and min(lens) >= 1


def test_owners_balance_the_cubic_inversion_costs_largest_first():
    assert owners([8, 1, 1, 1, 1], 2) == [0, 1, 1, 1, 1]
    assert owners([1, 1, 1], 3) == [0, 1, 2]  # equal costs: round-robin
    assert owners([5, 5], 1) == [0, 0]


def test_weighted_shard_means_sum_to_the_batch_mean():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 3))
    parts = [x[shard(10, 3, r)] for r in range(3)]
    total = sum((len(p) / 10) * p.mean(axis=0) for p in parts)  # what the all-reduce adds up
    np.testing.assert_allclose(total, x.mean(axis=0), rtol=1e-14)


@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_symmetric_packing_round_trips_and_keeps_the_device(device):
    """Only upper triangles travel; the matrix comes back whole, on the device it came from (host staging)."""
    from kfac_ref.backend import to_device

    rng = np.random.default_rng(1)
    m = rng.standard_normal((5, 5))
    a = to_device(m @ m.T, device)
    comm = self_comm()
    out = shard_mean(comm, [a], 4, 4, "statistics all-reduce", symmetric=True)[0]
    assert get_xp(out) is get_xp(a)
    np.testing.assert_array_equal(to_numpy(out), m @ m.T)
    assert comm.bytes["statistics all-reduce"] == 15 * 8  # 5·6/2 entries of float64


def test_one_rank_runs_are_the_plain_optimizers_bit_for_bit():
    rng = np.random.default_rng(0)
    x, y = classification_batch(rng, 12, (6,), 3)
    for plain_cls, dist_cls, hyper in [
        (SGD, DistributedSGD, {"lr": 0.1}),
        (KFAC, DistributedKFAC, {"lr": 0.1, "kind": "mc", "T_inv": 2}),
    ]:
        thetas = []
        for cls in (plain_cls, dist_cls):
            model = models.mlp(6, hidden=(5,), num_classes=3, seed=0)
            kw = {"comm": self_comm()} if cls is dist_cls else {}
            opt, gen = cls(model, nn.CrossEntropyLoss(), **hyper, **kw), np.random.default_rng(3)
            for _ in range(3):
                opt.step(x, y, gen)
            thetas.append(get_flat_params(model))
        np.testing.assert_allclose(thetas[1], thetas[0], rtol=1e-13, atol=1e-15)


def test_measured_payload_per_step_equals_the_analytic_count():
    rng = np.random.default_rng(0)
    x, y = classification_batch(rng, 16, (1, 8, 8), 10)
    model = models.convnet(channels=(4, 8), hidden=16, seed=0)
    comm = self_comm()
    opt = DistributedKFAC(model, nn.CrossEntropyLoss(), comm=comm, kind="mc")
    opt.step(x, y, np.random.default_rng(0))
    expected = payload_entries(model, 16, "mc")
    for label, entries in expected.items():
        assert comm.bytes[label] == 8 * entries, label


def test_errors_name_the_missing_piece(monkeypatch):
    for var in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK"):
        monkeypatch.delenv(var, raising=False)
    if HAS_MPI:
        with pytest.raises(RuntimeError, match="not started by an MPI launcher.*mpiexec -n R"):
            world()
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(RuntimeError, match=r"needs mpi4py.*kfac_ref\[mpi\]"):
        world()
    with pytest.raises(ValueError, match="'ngd' has no distributed version"):
        distributed_optimizer("ngd", None, None, self_comm())
