"""Atomic file writing (kfac_ref.io) and the package's writers that use it.

What is proved: a write that fails half-way leaves neither the target nor a
temporary file, an existing target keeps its old bytes, several files are
written all or none, and every writer of the package (checkpoint, curves,
sizes, fisher_plot, compare's files, downloads) goes through the one helper —
shown by making its rename fail and finding the folder as it was.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest

from kfac_ref import io as kio

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def _half_then_fail(tmp):
    with open(tmp, "wb") as f:
        f.write(b"half of it")
    raise OSError("disk full")


def test_each_writer_writes_exactly_its_content_and_leaves_no_temporary_file(tmp_path):
    kio.write_bytes(tmp_path / "a.bin", b"\x00\x01\x02")
    kio.write_text(tmp_path / "b.md", "λ = 0.1\n")
    kio.write_json(tmp_path / "c.json", {"x": [1, 2.5]}, indent=1)
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01\x02"
    assert (tmp_path / "b.md").read_bytes() == "λ = 0.1\n".encode()
    assert json.loads((tmp_path / "c.json").read_text()) == {"x": [1, 2.5]}
    assert _listing(tmp_path) == ["a.bin", "b.md", "c.json"]


def test_a_failure_mid_write_leaves_no_file_no_temporary_file_and_no_new_folder(tmp_path):
    target = tmp_path / "new" / "out.bin"
    with pytest.raises(OSError, match="disk full"):
        kio.atomic_write(target, _half_then_fail)
    assert _listing(tmp_path) == []


def test_an_existing_file_is_untouched_when_the_new_write_fails(tmp_path):
    target = tmp_path / "out.md"
    target.write_text("old")
    for fail in (_half_then_fail, lambda tmp: (_ for _ in ()).throw(KeyboardInterrupt())):
        with pytest.raises((OSError, KeyboardInterrupt)):
            kio.atomic_write(target, fail)
        assert target.read_text() == "old"
        assert _listing(tmp_path) == ["out.md"]


def test_an_existing_file_is_replaced_whole(tmp_path):
    target = tmp_path / "out.md"
    target.write_text("a much longer old content")
    kio.write_text(target, "new")
    assert target.read_text() == "new"


def test_write_together_is_all_or_none(tmp_path):
    (tmp_path / "a.md").write_text("old a")
    with pytest.raises(OSError, match="disk full"):
        kio.write_together(
            [(tmp_path / "a.md", lambda tmp: tmp.write_text("new a")), (tmp_path / "b.md", _half_then_fail)]
        )
    assert _listing(tmp_path) == ["a.md"] and (tmp_path / "a.md").read_text() == "old a"
    kio.write_together(
        [(tmp_path / "a.md", lambda tmp: tmp.write_text("new a")), (tmp_path / "b.md", lambda tmp: tmp.write_text("b"))]
    )
    assert [(tmp_path / n).read_text() for n in ("a.md", "b.md")] == ["new a", "b"]


def test_the_temporary_file_is_beside_the_target_and_keeps_its_suffix(tmp_path):
    seen = []
    kio.atomic_write(tmp_path / "fig.svg", lambda tmp: seen.append(tmp) or tmp.write_text("<svg/>"))
    (tmp,) = seen
    assert tmp.parent == tmp_path and tmp.name.startswith(".fig.svg.") and tmp.suffix == ".svg"


def test_without_make_parents_a_missing_folder_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        kio.write_text(tmp_path / "missing" / "a.md", "a", make_parents=False)
    assert _listing(tmp_path) == []


def test_write_figure_takes_the_format_from_the_suffix(tmp_path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    fig.add_subplot().plot([0, 1], [1, 0])
    kio.write_figure(fig, tmp_path / "f.png")
    kio.write_figure(fig, tmp_path / "f.svg")
    assert (tmp_path / "f.png").read_bytes()[:8] == PNG_SIGNATURE
    assert b"<svg" in (tmp_path / "f.svg").read_bytes()[:1000]
    assert _listing(tmp_path) == ["f.png", "f.svg"]


# ---- every writer of the package goes through the helper ------------------------------------
@pytest.fixture
def failing_rename(monkeypatch):
    def refuse(src, dst):
        raise OSError(f"rename refused: {os.fspath(dst)}")

    monkeypatch.setattr(kio.os, "replace", refuse)


def _writers(tmp_path):
    """name → a call that writes one kind of output of the package into tmp_path/out."""
    from matplotlib.figure import Figure

    from kfac_ref import checkpoint
    from kfac_ref.data import download
    from kfac_ref.experiments import curves, fisher_plot, sizes

    from .test_fisher_plot import _case

    out = tmp_path / "out"

    def ckpt():
        from kfac_ref import nn, optim
        from kfac_ref.data.dataset import Dataset
        from kfac_ref.data.synthetic import make_classification
        from kfac_ref.train import Trainer

        from .helpers import tiny_mlp

        x, y = make_classification(20, 4, 3, 0)
        data = Dataset("toy", x, y, x, y, num_classes=3)
        trainer = Trainer(optim.SGD(tiny_mlp(), nn.CrossEntropyLoss()), data, 5, np.random.default_rng(0))
        checkpoint.save(out / "ckpt.npz", trainer)

    def curve():
        out.mkdir(exist_ok=True)
        fig = Figure()
        fig.add_subplot().plot([0, 1])
        curves.save_figure(fig, out / "curves.png")

    def download_file():
        src = tmp_path / "payload.bin"
        src.write_bytes(b"payload")
        download(src.as_uri(), out / "payload.bin", hashlib.md5(b"payload").hexdigest())

    def compare_outputs():
        from kfac_ref.experiments.compare import CompareConfig, write_outputs
        from kfac_ref.train import RECORD_FIELDS

        def rec(i, loss):
            return {
                **dict.fromkeys(RECORD_FIELDS),
                "iteration": i,
                "seconds": 0.1 * i,
                "batch_loss": loss,
                "train_loss": loss,
                "train_acc": 0.5,
                "val_loss": loss,
                "val_acc": 0.5,
            }

        runs = [
            {"optimizer": o, "settings": {}, "records": [rec(0, 2.0), rec(1, 1.0)], "stopped": None}
            for o in ("sgd", "kfac")
        ]
        write_outputs(out, CompareConfig(iterations=1), runs, None)

    return {
        "compare": compare_outputs,
        "checkpoint": ckpt,
        "curves": curve,
        "sizes": lambda: sizes.plot_sizes(sizes.layer_sizes("digits-mlp"), out / "sizes.png"),
        "fisher_plot": lambda: fisher_plot.plot_fisher(_case()[-1], out / "f.png", svg=True),
        "download": download_file,
    }


@pytest.mark.parametrize("name", ["compare", "checkpoint", "curves", "sizes", "fisher_plot", "download"])
def test_every_writer_of_the_package_uses_the_atomic_helper(tmp_path, failing_rename, name):
    with pytest.raises(OSError, match="rename refused"):
        _writers(tmp_path)[name]()
    out = tmp_path / "out"
    assert not out.exists() or _listing(out) == []  # no target, no temporary file


def test_written_files_get_the_mode_a_plain_open_gives_not_mkstemps_0600(tmp_path):
    import os

    from kfac_ref.io import write_text

    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    written = write_text(tmp_path / "atomic.txt", "x")
    assert os.stat(written).st_mode & 0o777 == os.stat(plain).st_mode & 0o777


# ---- signals, stale files, output folders -----------------------------------------------------
_SIGNAL_SCRIPT = r"""
import sys, time
from pathlib import Path
from kfac_ref import io as kio

out, ready = Path(sys.argv[1]), Path(sys.argv[2])

def slow(tmp):
    tmp.write_text("half of the new results")
    ready.write_text("writing")
    time.sleep(60)  # SIGTERM arrives here

kio.write_together([(out / "history.json", lambda tmp: tmp.write_text("new")), (out / "summary.md", slow)])
"""


@pytest.mark.parametrize("existing", [True, False])
def test_sigterm_during_the_final_write_leaves_no_temporary_file_and_no_new_folder(tmp_path, existing):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "results" / "run"
    if existing:
        out.mkdir(parents=True)
        (out / "history.json").write_text("old")
        (out / "summary.md").write_text("old summary")
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", _SIGNAL_SCRIPT, str(out), str(ready)])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert ready.exists(), "the writer never started"
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == -signal.SIGTERM  # it still ends as SIGTERM ends a process
    if existing:
        assert _listing(out) == ["history.json", "summary.md"]  # no hidden .tmp files beside them
        assert (out / "history.json").read_text() == "old" and (out / "summary.md").read_text() == "old summary"
    else:
        assert _listing(tmp_path) == ["ready"]  # results/ and results/run, made for this write, are gone


def test_stale_files_are_removed_only_when_the_new_ones_are_in_place(tmp_path):
    for name in ("history_sgd.csv", "history_ngd.csv", "history_kfac.csv"):
        (tmp_path / name).write_text("old")
    stale = [tmp_path / "history_ngd.csv", tmp_path / "history_kfac.csv"]
    with pytest.raises(OSError, match="disk full"):
        kio.write_together([(tmp_path / "history_sgd.csv", _half_then_fail)], remove=stale)
    assert _listing(tmp_path) == ["history_kfac.csv", "history_ngd.csv", "history_sgd.csv"]
    kio.write_together(
        [(tmp_path / "history_sgd.csv", lambda tmp: tmp.write_text("new"))],
        remove=[*stale, tmp_path / "history_sgd.csv", tmp_path / "never-there.csv"],  # a target is never removed
    )
    assert _listing(tmp_path) == ["history_sgd.csv"] and (tmp_path / "history_sgd.csv").read_text() == "new"


def test_check_output_dir_refuses_the_empty_path():
    for empty in ("", None):
        with pytest.raises(ValueError, match=r"--out: the output folder is the empty path"):
            kio.check_output_dir(empty)


def test_check_output_dir_does_not_follow_a_dangling_link(tmp_path):
    (tmp_path / "out").symlink_to(tmp_path / "gone")
    with pytest.raises(ValueError, match=r"out is a dangling link \(to .*gone\)"):
        kio.check_output_dir(tmp_path / "out")
    with pytest.raises(ValueError, match=r"out is a dangling link"):
        kio.check_output_dir(tmp_path / "out" / "sub")
    assert _listing(tmp_path) == ["out"] and not (tmp_path / "gone").exists()


def test_check_output_dir_says_a_file_is_not_a_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match=r"f: exists and is not a folder"):
        kio.check_output_dir(tmp_path / "f")
    with pytest.raises(ValueError, match=rf"--out {tmp_path}/f/sub/run: {tmp_path}/f is not a folder$"):
        kio.check_output_dir(tmp_path / "f" / "sub" / "run")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_check_output_dir_says_a_read_only_folder_is_not_writable(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    with pytest.raises(ValueError, match=r"ro is not writable"):
        kio.check_output_dir(ro / "run")


def test_check_output_dir_accepts_a_new_or_existing_folder_and_creates_nothing(tmp_path):
    assert kio.check_output_dir(tmp_path / "a" / "b", who="--out-dir") == tmp_path / "a" / "b"
    assert kio.check_output_dir(tmp_path) == tmp_path
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert kio.check_output_dir(tmp_path / "link") == tmp_path / "link"
    assert _listing(tmp_path) == ["link", "real"]


def test_a_programs_own_sigterm_handler_still_decides_during_a_write(tmp_path):
    import signal

    calls = []
    old = signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(signum))
    try:

        def write(tmp):
            signal.raise_signal(signal.SIGTERM)  # the handler records it and returns: the write goes on
            tmp.write_text("done")

        kio.atomic_write(tmp_path / "a.md", write)
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # restored, not replaced
    finally:
        signal.signal(signal.SIGTERM, old)
    assert calls == [signal.SIGTERM] and (tmp_path / "a.md").read_text() == "done"
    assert _listing(tmp_path) == ["a.md"]
