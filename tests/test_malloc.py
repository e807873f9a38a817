"""The command line's malloc setting (kfac_ref.malloc): what it sets, when it keeps out of the way, and
that a ``kfac-ref`` process records it.  Unit tests call a recording stand-in for glibc's mallopt."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from kfac_ref import malloc
from kfac_ref.cli import main


class Recorder:
    """mallopt(key, value) → 1, remembering every call; ``refuse`` = keys it returns 0 for."""

    def __init__(self, refuse=()):
        self.calls, self.refuse = [], set(refuse)

    def __call__(self, key, value):
        self.calls.append((key, value))
        return 0 if key in self.refuse else 1


@pytest.fixture
def recorder(monkeypatch):
    rec = Recorder()
    monkeypatch.setattr(malloc, "_mallopt", lambda: rec)
    monkeypatch.setattr(malloc, "_state", malloc.state())  # restored after the test
    return rec


def test_tuning_raises_both_thresholds_to_1_gib_and_uses_one_arena(recorder):
    assert malloc.for_command_line({}) == "tuned (mmap and trim thresholds 1 GiB, one arena)"
    assert sorted(recorder.calls) == sorted([(-3, 1 << 30), (-1, 1 << 30), (-8, 1)])  # <malloc.h>'s keys
    assert malloc.state().startswith("tuned")


@pytest.mark.parametrize("name", malloc.GLIBC_VARS)
def test_a_glibc_variable_the_user_set_leaves_malloc_alone(recorder, name):
    assert malloc.for_command_line({name: "65536"}) == f"system ({name} set)"
    assert recorder.calls == []


def test_kfac_ref_malloc_tuned_overrides_a_glibc_variable(recorder):
    assert malloc.for_command_line({"KFAC_REF_MALLOC": "tuned", "MALLOC_ARENA_MAX": "4"}).startswith("tuned")
    assert len(recorder.calls) == 3


def test_kfac_ref_malloc_system_leaves_malloc_alone(recorder):
    assert malloc.for_command_line({"KFAC_REF_MALLOC": "system"}) == "system (KFAC_REF_MALLOC=system)"
    assert recorder.calls == []


def test_a_bad_kfac_ref_malloc_is_refused_before_anything_is_set(recorder):
    with pytest.raises(ValueError, match=r"KFAC_REF_MALLOC='fast': expected one of tuned, system"):
        malloc.for_command_line({"KFAC_REF_MALLOC": "fast"})
    assert recorder.calls == []


def test_a_refused_setting_is_reported_and_the_others_still_tried(monkeypatch):
    rec = Recorder(refuse={-8})
    monkeypatch.setattr(malloc, "_mallopt", lambda: rec)
    monkeypatch.setattr(malloc, "_state", malloc.state())
    assert malloc.for_command_line({}) == "partly tuned (glibc refused a setting)"
    assert len(rec.calls) == 3


def test_another_c_library_is_left_alone(monkeypatch):
    monkeypatch.setattr(malloc, "_mallopt", lambda: None)
    monkeypatch.setattr(malloc, "_state", malloc.state())
    assert malloc.tune_malloc() is None
    assert malloc.for_command_line({}) == "system (not glibc)"


def test_the_command_line_refuses_a_bad_setting_with_one_line(monkeypatch, recorder, capsys, tmp_path):
    monkeypatch.setenv("KFAC_REF_MALLOC", "fast")
    out = tmp_path / "out"
    assert main(["compare", "--quiet", "--quick", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["kfac-ref compare: error: KFAC_REF_MALLOC='fast': expected one of tuned, system"]
    assert not out.exists() and recorder.calls == []


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's")
def test_a_kfac_ref_process_tunes_malloc_and_history_records_it(tmp_path):
    """A real process (the test process itself is never tuned: its own KFAC_REF_MALLOC, conftest.py)."""
    env = {k: v for k, v in os.environ.items() if k != malloc.ENV and k not in malloc.GLIBC_VARS}
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "kfac_ref", "compare", "--quick", "--quiet", "--optimizers", "sgd", "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr
    machine = json.loads((out / "history.json").read_text())["machine"]
    assert machine["malloc"] == "tuned (mmap and trim thresholds 1 GiB, one arena)"
