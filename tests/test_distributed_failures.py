"""No rank waits for ever: an error, an interrupt or a bad ``--out`` on one rank ends every rank.

Each test launches ``mpiexec -n R`` (R = 2 and 3) on tests/distributed_failure.py, where one
rank fails on purpose while the others are in — or about to enter — a collective, and asserts
that the whole job ends within :data:`PROMPT` seconds of the failure, with a non-zero status
and one line naming the failing rank.  Skipped where mpi4py is missing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_distributed import MPIEXEC, needs_mpi

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "distributed_failure.py"
PROMPT = 10.0  # seconds from the failure to the end of every rank (measured: < 0.1 s after the failure)
TIMEOUT = 120  # a hung job is killed here, and the test fails


def _env():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    for var in ("PMI_RANK", "PMI_SIZE", "PMI_FD", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK"):
        env.pop(var, None)
    return env


def _cmd(ranks, *args):
    return [str(MPIEXEC), "-n", str(ranks), sys.executable, str(SCRIPT), *map(str, args)]


@needs_mpi
@pytest.mark.parametrize("ranks, bad", [(2, 1), (3, 0), (3, 2)])
@pytest.mark.parametrize("mode", ["raise", "uncaught"])
def test_an_error_on_one_rank_ends_every_rank(ranks, bad, mode):
    start = time.perf_counter()
    proc = subprocess.run(_cmd(ranks, mode, bad), capture_output=True, text=True, timeout=TIMEOUT, env=_env())
    took = time.perf_counter() - start
    assert proc.returncode != 0, proc.stderr
    assert f"kfac-ref: rank {bad} of {ranks}: " in proc.stderr and "injected failure" in proc.stderr
    assert f"ending all {ranks} ranks" in proc.stderr
    assert took < 30 + PROMPT, f"the job took {took:.1f} s"  # start-up and one step, then at once


@needs_mpi
@pytest.mark.parametrize("ranks, target, sleeper", [(2, 0, 0), (2, 1, 0), (3, 2, 0), (3, 0, 1)])
def test_sigint_to_one_rank_ends_every_rank(tmp_path, ranks, target, sleeper):
    """SIGINT to the rank that sleeps, or to one that waits for it inside a collective."""
    proc = subprocess.Popen(
        _cmd(ranks, "sigint", sleeper, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()
    )
    try:
        deadline = time.perf_counter() + TIMEOUT
        while len(list(tmp_path.glob("ready.*"))) < ranks:
            assert proc.poll() is None, f"the job ended before every rank was ready: {proc.stderr.read()}"
            assert time.perf_counter() < deadline, "the ranks never became ready"
            time.sleep(0.05)
        time.sleep(0.5)  # the ranks other than the sleeper are now inside a collective
        sent = time.perf_counter()
        os.kill(int((tmp_path / f"ready.{target}").read_text()), signal.SIGINT)
        proc.wait(timeout=TIMEOUT)
        took = time.perf_counter() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read()
    assert proc.returncode != 0, err
    assert f"kfac-ref: rank {target} of {ranks}: interrupted (SIGINT); ending all {ranks} ranks" in err
    assert took < PROMPT, f"the job ended {took:.1f} s after the interrupt"


@needs_mpi
@pytest.mark.parametrize("ranks, bad", [(2, 0), (3, 0), (3, 1)])
def test_an_out_folder_one_rank_cannot_write_ends_every_rank_before_training(tmp_path, ranks, bad):
    """``kfac-ref compare --distributed``: the --out check runs on every rank before any data is loaded."""
    start = time.perf_counter()
    proc = subprocess.run(
        _cmd(ranks, "out", bad, tmp_path), capture_output=True, text=True, timeout=TIMEOUT, env=_env()
    )
    took = time.perf_counter() - start
    assert proc.returncode != 0, proc.stderr
    assert f"kfac-ref compare (rank {bad} of {ranks}): error: --out {tmp_path / 'file' / 'run'}: " in proc.stderr
    assert "is not a folder" in proc.stderr and f"ending all {ranks} ranks" in proc.stderr
    assert not (tmp_path / "good").exists()  # no other rank wrote anything
    assert took < PROMPT + 20, f"the job took {took:.1f} s"
