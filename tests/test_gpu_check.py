"""benchmarks/gpu_check.py: its report logic (the parts themselves need a GPU and run nothing here)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_ratios_pair_every_timing_of_the_two_runs(gpu_check, tmp_path):
    cpu = {
        "results": [
            {"model": "mlp", "dtype": "float32", "kfac_ref_ms": 4.0, "ratio": 9.0},
            {"model": "cifar", "dtype": "float32", "kfac_ref_ms": 100.0},
        ]
    }
    gpu = {
        "results": [
            {"model": "mlp", "dtype": "float32", "kfac_ref_ms": 2.0, "ratio": 1.0},
            {"model": "cifar", "dtype": "float32", "kfac_ref_ms": 10.0},
        ]
    }
    (tmp_path / "c.json").write_text(json.dumps(cpu))
    (tmp_path / "g.json").write_text(json.dumps(gpu))
    rows = gpu_check.ratios(tmp_path / "c.json", tmp_path / "g.json")
    assert sorted((r["case"], r["field"], r["gpu_over_cpu"]) for r in rows) == [
        ("dtype=float32 model=cifar", "kfac_ref_ms", 0.1),
        ("dtype=float32 model=mlp", "kfac_ref_ms", 0.5),
    ]
    assert gpu_check.ratios(tmp_path / "missing.json", tmp_path / "g.json") == []


def test_ratios_of_nested_results(gpu_check, tmp_path):
    cpu = {"results": {"mlp": {"sgd": {"label": "sgd", "mean_ms": 3.0, "step_ms": [3.0]}}}}
    gpu = {"results": {"mlp": {"sgd": {"label": "sgd", "mean_ms": 6.0, "step_ms": [6.0]}}}}
    (tmp_path / "c.json").write_text(json.dumps(cpu))
    (tmp_path / "g.json").write_text(json.dumps(gpu))
    [row] = gpu_check.ratios(tmp_path / "c.json", tmp_path / "g.json")
    assert row["case"] == "mlp sgd label=sgd" and row["gpu_over_cpu"] == 2.0


def test_junit_counts(gpu_check, tmp_path):
    xml = tmp_path / "t.xml"
    xml.write_text(
        '<testsuites><testsuite tests="4" failures="1" errors="0" skipped="1">'
        '<testcase classname="a" name="x"><failure/></testcase><testcase classname="a" name="y"/>'
        "</testsuite></testsuites>"
    )
    counts = gpu_check.junit_counts(xml)
    assert (counts["passed"], counts["failures"], counts["skipped"]) == (2, 1, 1)
    assert counts["failed_tests"] == ["a::x"]


def test_with_no_time_left_every_part_is_recorded_as_skipped(gpu_check, tmp_path):
    assert gpu_check.main(["--out", str(tmp_path / "r"), "--budget", "0"]) == 1
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert {p["status"] for p in report["parts"]} == {"skipped"}
    assert len(report["parts"]) == 1 + 2 * len(gpu_check.BENCHMARKS) + 1
    assert "# GPU check" in (tmp_path / "r" / "report.md").read_text()


def test_an_out_path_that_is_a_file_is_refused_first(gpu_check, tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("")
    assert gpu_check.main(["--out", str(f)]) == 2
    assert "is a file, expected a folder" in capsys.readouterr().err
