"""One command for a real GPU: tests, benchmarks and a short compare on CuPy, one report.

    make gpu-check                      # OUT=results/gpu-check by default
    python benchmarks/gpu_check.py --out results/gpu-check [--budget 470]

Needs a CUDA machine with ``pip install -e '.[gpu,test]'`` and nothing from the
network.  Runs, each part with its own timeout inside a total budget (8 minutes
by default), a failed or timed-out part recorded, never fatal:

1. the device-parametrised tests on real CuPy (``pytest -m gpu`` with
   KFAC_REF_REAL_GPU=1, so the test suite's CuPy stand-in is not used);
2. the three benchmarks in ``benchmarks/`` with short settings, on ``--device cpu``
   and ``--device gpu`` (float32 where the script has a dtype option), so that
   every timing gets its CuPy/NumPy ratio;
3. ``kfac-ref compare --device gpu --dtype float32 --iterations 30``.

Writes ``report.md`` and ``report.json`` (device name, versions, pass/fail
counts, CuPy/NumPy time ratios) plus every part's log to the output folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

# name -> (command without --device/--json, seconds it may take at most, has a float32 option)
BENCHMARKS = {
    "forward_backward": (["benchmarks/bench_forward_backward.py", "--quick", "--no-torch", "--dtypes", "float32"], 45),
    "fisher_solve": (["benchmarks/bench_fisher_solve.py", "--quick"], 45),  # float64 only: no dtype option
    "optimizers": (["benchmarks/bench_optimizers.py", "--quick", "--dtype", "float32"], 50),
}
TESTS_TIMEOUT = 150
COMPARE_TIMEOUT = 60


def run_part(name: str, cmd: list[str], timeout: float, out: Path, env=None) -> dict:
    """Run one part with a timeout; its output goes to <out>/<name>.log.  Never raises."""
    log = out / f"{name}.log"
    start = time.perf_counter()
    rec = {"name": name, "command": " ".join(cmd), "log": log.name}
    if timeout <= 5:
        rec.update(status="skipped", reason="no time left in the budget", seconds=0.0)
        return rec
    try:
        with open(log, "w") as fh:
            proc = subprocess.run(
                cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout, env={**os.environ, **(env or {})}
            )
        rec.update(status="ok" if proc.returncode == 0 else "failed", returncode=proc.returncode)
    except subprocess.TimeoutExpired:
        rec.update(status="timeout", reason=f"killed after {timeout:.0f} s")
    except OSError as exc:
        rec.update(status="failed", reason=f"{type(exc).__name__}: {exc}")
    rec["seconds"] = round(time.perf_counter() - start, 1)
    print(f"[gpu-check] {name}: {rec['status']} ({rec['seconds']} s)", flush=True)
    return rec


def junit_counts(path: Path) -> dict:
    """passed / failed / errors / skipped from pytest's JUnit XML."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return {}
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    total["passed"] = total["tests"] - total["failures"] - total["errors"] - total["skipped"]
    total["failed_tests"] = [
        f"{c.get('classname')}::{c.get('name')}"
        for s in suites
        for c in s.iter("testcase")
        if c.find("failure") is not None or c.find("error") is not None
    ][:30]
    return total


def timing_rows(obj, path=()):
    """Every dict in a benchmark's JSON results with timings: (key, {field: seconds-or-ms})."""
    if isinstance(obj, dict):
        times = {
            k: v
            for k, v in obj.items()
            if isinstance(v, (int, float))
            and not isinstance(v, bool)
            and (k.endswith("_ms") or k.endswith("_s"))
            and "ratio" not in k
        }
        if times:
            labels = tuple(f"{k}={v}" for k, v in sorted(obj.items()) if isinstance(v, str))
            yield path + labels, times
        for k, v in obj.items():
            if isinstance(v, (dict, list)):
                yield from timing_rows(v, path + (str(k),))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from timing_rows(v, path if isinstance(v, dict) else path + (str(i),))


def ratios(cpu_json: Path, gpu_json: Path) -> list[dict]:
    """CuPy/NumPy ratio of every timing present in both runs (< 1: the GPU is faster)."""
    try:
        cpu = dict(timing_rows(json.loads(cpu_json.read_text()).get("results")))
        gpu = dict(timing_rows(json.loads(gpu_json.read_text()).get("results")))
    except (OSError, ValueError, AttributeError):
        return []
    out = []
    for key, g in gpu.items():
        c = cpu.get(key, {})
        for field, gv in g.items():
            cv = c.get(field)
            if cv:
                out.append({"case": " ".join(key), "field": field, "cpu": cv, "gpu": gv, "gpu_over_cpu": gv / cv})
    return out


def versions() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform()}
    code = (
        "import json, numpy, kfac_ref; d = {'numpy': numpy.__version__, 'kfac_ref': kfac_ref.__version__}\n"
        "try:\n import cupy; d['cupy'] = cupy.__version__\n"
        " p = cupy.cuda.runtime.getDeviceProperties(0); n = p['name']\n"
        " d['device'] = n.decode() if isinstance(n, bytes) else n\n"
        " d['cuda_runtime'] = cupy.cuda.runtime.runtimeGetVersion()\n"
        " d['cuda_driver'] = cupy.cuda.runtime.driverGetVersion()\n"
        "except Exception as e:\n d['cupy_error'] = f'{type(e).__name__}: {e}'\n"
        "from kfac_ref.backend import gpu_unavailable_reason; d['gpu_unavailable'] = gpu_unavailable_reason()\n"
        "print(json.dumps(d))"
    )
    try:
        proc = subprocess.run([PY, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
        info.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    except (subprocess.TimeoutExpired, ValueError, IndexError, OSError) as exc:
        info["versions_error"] = f"{type(exc).__name__}: {exc}"
    return info


def markdown(report: dict) -> str:
    v = report["versions"]
    lines = [
        f"# GPU check — {report['date']}",
        "",
        f"device **{v.get('device', '?')}**, CuPy {v.get('cupy', '?')}, NumPy {v.get('numpy', '?')}, "
        f"kfac_ref {v.get('kfac_ref', '?')}, Python {v.get('python', '?')}; "
        f"total {report['seconds']:.0f} s of a {report['budget_s']:.0f} s budget",
        "",
    ]
    if v.get("gpu_unavailable"):
        lines += [f"**GPU unusable:** {v['gpu_unavailable']}", ""]
    t = report.get("tests", {})
    lines += ["## Parts", "", "| part | status | seconds |", "|---|---|---|"]
    lines += [
        f"| {p['name']} | {p['status']}{' — ' + p['reason'] if p.get('reason') else ''} | {p['seconds']} |"
        for p in report["parts"]
    ]
    lines += [
        "",
        "## Tests on real CuPy (`pytest -m gpu`)",
        "",
        f"passed {t.get('passed', '?')}, failed {t.get('failures', '?')}, errors {t.get('errors', '?')}, "
        f"skipped {t.get('skipped', '?')}",
    ]
    lines += [f"- {name}" for name in t.get("failed_tests", [])]
    lines += ["", "## CuPy / NumPy time ratios (< 1: the GPU is faster)", ""]
    for bench, rows in report["ratios"].items():
        lines += [f"### {bench}", ""]
        if not rows:
            lines += ["(no timings: see the part's log)", ""]
            continue
        lines += ["| case | timing | NumPy | CuPy | CuPy/NumPy |", "|---|---|---|---|---|"]
        lines += [
            f"| {r['case']} | {r['field']} | {r['cpu']:.4g} | {r['gpu']:.4g} | {r['gpu_over_cpu']:.2f} |" for r in rows
        ]
        lines += [""]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "results/gpu-check"), help="report folder")
    ap.add_argument("--budget", type=float, default=470.0, help="total seconds (default 470: under 8 minutes)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"gpu-check: --out {str(out)!r} is a file, expected a folder", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    def left(limit: float) -> float:
        return min(limit, args.budget - (time.perf_counter() - start))

    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "budget_s": args.budget,
        "versions": versions(),
        "parts": [],
        "ratios": {},
    }
    # 1. the device-parametrised tests on real CuPy
    xml = out / "tests.xml"
    report["parts"].append(
        run_part(
            "tests",
            [PY, "-m", "pytest", "-m", "gpu and not slow", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}"],
            left(TESTS_TIMEOUT),
            out,
            env={"KFAC_REF_REAL_GPU": "1"},
        )
    )
    report["tests"] = junit_counts(xml)
    # 2. the benchmarks on both devices
    for name, (cmd, timeout) in BENCHMARKS.items():
        for device in ("gpu", "cpu"):
            report["parts"].append(
                run_part(
                    f"bench_{name}_{device}",
                    [PY, *cmd, "--device", device, "--json", str(out / f"bench_{name}_{device}.json")],
                    left(timeout),
                    out,
                )
            )
        report["ratios"][name] = ratios(out / f"bench_{name}_cpu.json", out / f"bench_{name}_gpu.json")
    # 3. a short compare on the GPU
    report["parts"].append(
        run_part(
            "compare",
            [
                PY,
                "-m",
                "kfac_ref",
                "compare",
                "--device",
                "gpu",
                "--dtype",
                "float32",
                "--iterations",
                "30",
                "--quiet",
                "--out",
                str(out / "compare"),
            ],
            left(COMPARE_TIMEOUT),
            out,
        )
    )

    report["seconds"] = round(time.perf_counter() - start, 1)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(markdown(report))
    failed = [p["name"] for p in report["parts"] if p["status"] != "ok"]
    print(f"[gpu-check] report: {out / 'report.md'}; " + (f"not ok: {', '.join(failed)}" if failed else "all ok"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
