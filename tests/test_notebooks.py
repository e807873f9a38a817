"""Every notebook in notebooks/ runs top to bottom, without error, in well under a minute.

Notebooks are stored without outputs (notebooks/README.md); this test is what
executes them.  Each one gets a fresh kernel started with *this* interpreter
(``sys.executable``, the project venv under ``make test``), whatever kernelspecs
are installed on the machine: a kernelspec naming ``sys.executable`` is written
to a temporary directory that is put first on ``JUPYTER_PATH``.  The kernel runs
with ``MPLBACKEND=Agg`` (no windows) and the repository root on ``PYTHONPATH``
(so it imports this checkout of kfac_ref), in ``notebooks/`` as working
directory.  Run times are printed, recorded as the ``seconds`` property
(``--junitxml``) and summarised at the end of the session.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
KERNEL_NAME = "kfac-ref-tests"
TIME_LIMIT_S = 60.0  # each notebook must run in under a minute on 2 cores; aim for < 15 s


@pytest.fixture(scope="session")
def kernel_name(tmp_path_factory):
    """A kernelspec that launches ipykernel with sys.executable, first on JUPYTER_PATH."""
    spec_dir = tmp_path_factory.mktemp("jupyter") / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"kfac_ref tests ({sys.executable})",
        "language": "python",
        "env": {"MPLBACKEND": "Agg", "PYTHONPATH": pythonpath},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    jupyter_path = os.pathsep.join(p for p in (str(spec_dir.parents[1]), os.environ.get("JUPYTER_PATH", "")) if p)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", jupyter_path)
        yield KERNEL_NAME


@pytest.fixture(scope="session")
def run_times(request):
    """Collects {notebook: seconds}; prints a summary when the session ends."""
    times: dict[str, float] = {}
    yield times
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if not times or reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():  # write past pytest's output capture
        reporter.write_line("")
        reporter.write_line(f"notebook run times (limit {TIME_LIMIT_S:.0f} s):")
        for name, seconds in sorted(times.items()):
            reporter.write_line(f"  {name}: {seconds:.1f} s")


def test_notebooks_are_found():
    assert NOTEBOOKS, f"no notebooks in {NOTEBOOK_DIR}"


def test_kernel_runs_this_interpreter_headless_on_this_checkout(kernel_name):
    probe = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(
                "import sys, matplotlib, kfac_ref\n"
                "print(sys.executable); print(matplotlib.get_backend().lower()); print(kfac_ref.__file__)"
            )
        ]
    )
    nbclient.NotebookClient(probe, timeout=60, kernel_name=kernel_name).execute()
    executable, backend, package = probe.cells[0].outputs[0]["text"].split()
    assert Path(executable).resolve() == Path(sys.executable).resolve()
    assert backend == "agg"
    assert Path(package).resolve().parent == ROOT / "kfac_ref"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_without_error_within_the_time_limit(path, kernel_name, run_times, record_property):
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name=kernel_name, resources={"metadata": {"path": str(NOTEBOOK_DIR)}}
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError, with the cell's traceback, on any error
    seconds = time.perf_counter() - start
    run_times[path.name] = seconds
    record_property("seconds", round(seconds, 2))
    print(f"{path.name}: {seconds:.1f} s")
    assert seconds < TIME_LIMIT_S, f"{path.name} took {seconds:.1f} s (limit {TIME_LIMIT_S:.0f} s)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    dirty = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, (
        f"{path.name}: cells {dirty} hold outputs; clear them before committing "
        f"(jupyter nbconvert --clear-output --inplace {path.relative_to(ROOT)})"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_opens_with_its_equations(path):
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and "$" in first.source, (
        f"{path.name}: the first cell should be markdown giving the equations it shows (LaTeX)"
    )


# A notebook reads a clock when its code does one of these; its times are then only meaningful
# under the library's thread rule (one BLAS thread, as `kfac-ref --threads 1`), printed beside them.
CLOCK_READS = ("perf_counter", "['seconds']", '["seconds"]', "phase_seconds", "seconds_per_iteration")


def _code(nb) -> str:
    return "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_a_notebook_that_times_limits_blas_threads_and_prints_the_count(path):
    code = _code(nbformat.read(path, as_version=4))
    if not any(marker in code for marker in CLOCK_READS):
        return  # reads no clock
    assert "threadpool_limits(" in code, f"{path.name} times code without limiting BLAS threads (threadpoolctl)"
    assert "threadpool_info(" in code, (
        f"{path.name} times code but never reads the BLAS thread count (threadpool_info) to print beside the times"
    )


def test_the_clock_check_sees_the_timing_notebooks():
    timed = {p.stem[:2] for p in NOTEBOOKS if any(m in _code(nbformat.read(p, as_version=4)) for m in CLOCK_READS)}
    assert {"05", "06", "07"} <= timed, timed  # the check above must not pass by seeing no clock at all
