"""Writing files atomically: a reader sees the old file or the whole new one, never half of one.

Every output of the package (checkpoints, figures, tables, JSON, downloads) is
written the same way:

1. the bytes go to a temporary file in the *same folder* as the target
   (``.<name>.<random>.tmp<suffix>``: hidden, and ending in the target's suffix
   so that a writer that reads the format from the name, like matplotlib's
   ``savefig``, still sees it);
2. the temporary file is flushed to disk (``os.fsync``);
3. ``os.replace`` renames it onto the target — atomic within one folder (POSIX
   and Windows).

On any error (including ``KeyboardInterrupt``, and SIGTERM or SIGHUP: while a
write is under way they raise :class:`Terminated` instead of ending the process
on the spot, and are delivered again once the temporary files are gone) the
temporary files are removed, an existing target is left untouched, and folders
this call created are removed again if they are left empty.  :func:`write_together`
does the same for several files at once, all or none: nothing is renamed until
every file is written, and the renames themselves are not interrupted half-way.
It can also remove files a new set of outputs makes stale (``remove=``), once the
new files are in place.

:func:`check_output_dir` is the check every command runs on its output folder
before any work: not the empty path, not a dangling link, not a file, every
existing parent a folder, and the nearest existing one writable.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
import threading
from pathlib import Path

# Signals that end a process by default and can be caught: during a write they clean up first.
CAUGHT_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class Terminated(BaseException):
    """SIGTERM/SIGHUP arrived during a write; raised so that the temporary files are removed first."""

    def __init__(self, signum: int):
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


@contextlib.contextmanager
def _signals_raise():
    """While inside: SIGTERM/SIGHUP, where they would end the process on the spot, raise :class:`Terminated`.

    Only signals at their default action are taken over (main thread only): an
    ignored signal stays ignored, and a program's own Python handler keeps
    deciding (if it raises, the write cleans up as for any exception).  On the
    way out the previous handlers are restored; a signal that was turned into
    Terminated is then delivered again, so that the process ends as it would
    have (killed by that signal), only without the temporary files.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}

    def handler(signum, frame):
        raise Terminated(signum)

    for sig in CAUGHT_SIGNALS:
        old = signal.getsignal(sig)
        if old is not signal.SIG_DFL:  # ignored, handled by the program, or set outside Python: leave it
            continue
        previous[sig] = old
        signal.signal(sig, handler)
    try:
        yield
    except Terminated as exc:
        for sig, old in previous.items():
            signal.signal(sig, old)
        previous = {}
        signal.raise_signal(exc.signum)  # the default action ends the process here
        raise  # a Python handler that returned: let the caller see it
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def _signals_held():
    """Hold SIGTERM/SIGHUP/SIGINT back for a few statements that must not be split (delivered after)."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {*CAUGHT_SIGNALS, signal.SIGINT}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _fsync(path, directory: bool = False) -> None:
    """Flush a file (or, best effort, a folder's entries) to disk."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        if directory:  # some platforms cannot open a folder: the rename is still atomic
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def _umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_together(writers, *, make_parents: bool = True, remove=()) -> list[Path]:
    """Write every ``(path, write)`` pair, all or none; returns the paths written.

    ``write(tmp)`` is called with the :class:`~pathlib.Path` of a fresh temporary
    file beside ``path`` and must fill it (it may open, truncate or replace it).
    Only when every ``write`` has returned are the files flushed and renamed into
    place.  ``make_parents``: create missing folders (removed again on failure
    if left empty); without it a missing folder is a ``FileNotFoundError``.
    ``remove``: paths of files that the new ones make stale (e.g. a previous
    run's per-optimizer CSVs), deleted after the renames — only on success,
    never one of the paths written.
    """
    writers = [(Path(p), write) for p, write in writers]
    targets = {p.absolute() for p, _ in writers}
    remove = [Path(r) for r in remove if Path(r).absolute() not in targets]
    created: list[Path] = []
    tmps: list[Path] = []
    with _signals_raise():
        try:
            if make_parents:
                for folder in dict.fromkeys(p.parent for p, _ in writers):
                    with _signals_held():  # a folder is made and recorded together
                        missing = [d for d in (folder, *folder.parents) if not d.exists()]  # innermost first
                        folder.mkdir(parents=True, exist_ok=True)
                        created += missing
            for path, write in writers:
                with _signals_held():  # a temporary file is made and recorded together
                    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
                    tmps.append(Path(tmp))
                    os.close(fd)
                os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a written file gets open()'s mode
                write(Path(tmp))
                _fsync(tmp)
            with _signals_held():  # all renames, or none
                for tmp, (path, _) in zip(tmps, writers):
                    os.replace(tmp, path)
                tmps = []
            for stale in remove:
                stale.unlink(missing_ok=True)
            for folder in dict.fromkeys([*(p.parent for p, _ in writers), *(r.parent for r in remove)]):
                _fsync(folder, directory=True)
        except BaseException:
            for tmp in tmps:
                tmp.unlink(missing_ok=True)
            for d in created:
                try:
                    d.rmdir()
                except OSError:
                    pass
            raise
    return [p for p, _ in writers]


def check_output_dir(path, who: str = "--out") -> Path:
    """Check an output folder before any work is done; returns it as a Path.  Creates nothing.

    Refused (ValueError, the message starting with ``who`` and the path):

    - the empty path (``Path('')`` would silently be the current folder);
    - a dangling symbolic link, at the folder or at any parent (never followed);
    - something that exists and is not a folder ("is not a folder"), and a
      regular file where a parent folder should be ("… is not a folder");
    - a nearest existing folder that cannot be written ("is not writable").
    """
    if path is None or str(path) == "":
        raise ValueError(f"{who}: the output folder is the empty path; give a folder, e.g. results/run")
    out = Path(path)
    for p in (out, *out.parents):
        if p.is_symlink() and not p.exists():
            raise ValueError(
                f"{who} {out}: {p} is a dangling link (to {os.readlink(p)}); remove it or choose another folder"
            )
        if p.exists():
            if not p.is_dir():
                what = "exists and is not a folder" if p == out else f"{p} is not a folder"
                raise ValueError(f"{who} {out}: {what}")
            if not os.access(p, os.W_OK | os.X_OK):
                raise ValueError(f"{who} {out}: {p} is not writable")
            return out
    here = Path(".")
    if not os.access(here, os.W_OK | os.X_OK):
        raise ValueError(f"{who} {out}: the current folder is not writable")
    return out


def atomic_write(path, write, *, make_parents: bool = True) -> Path:
    """Write one file atomically: ``write(tmp)`` fills a temporary file, then it is renamed to ``path``."""
    return write_together([(path, write)], make_parents=make_parents)[0]


def write_bytes(path, data: bytes, **kw) -> Path:
    """``path`` ← ``data``, atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), **kw)


def write_text(path, text: str, encoding: str = "utf-8", **kw) -> Path:
    """``path`` ← ``text`` (UTF-8 by default), atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding=encoding), **kw)


def write_json(path, obj, *, make_parents: bool = True, **dumps_kw) -> Path:
    """``path`` ← ``json.dumps(obj, **dumps_kw)``, atomically; the object is encoded before any file is made."""
    return write_text(path, json.dumps(obj, **dumps_kw), make_parents=make_parents)


def figure_writer(fig, fmt: str | None = None, dpi=None):
    """A ``write(tmp)`` saving a matplotlib Figure (format ``fmt``, else from the target's suffix)."""

    def write(tmp):
        fig.savefig(tmp, format=fmt, dpi=dpi)

    return write


def write_figure(fig, path, *, fmt: str | None = None, dpi=None, **kw) -> Path:
    """Save a matplotlib Figure to ``path`` atomically (format from the suffix unless ``fmt``)."""
    return atomic_write(path, figure_writer(fig, fmt, dpi), **kw)
