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

On any error (including ``KeyboardInterrupt``) the temporary files are removed,
an existing target is left untouched, and folders this call created are
removed again if they are left empty.  :func:`write_together` does the same for
several files at once, all or none: nothing is renamed until every file is
written.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


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


def write_together(writers, *, make_parents: bool = True) -> list[Path]:
    """Write every ``(path, write)`` pair, all or none; returns the paths written.

    ``write(tmp)`` is called with the :class:`~pathlib.Path` of a fresh temporary
    file beside ``path`` and must fill it (it may open, truncate or replace it).
    Only when every ``write`` has returned are the files flushed and renamed into
    place.  ``make_parents``: create missing folders (removed again on failure
    if left empty); without it a missing folder is a ``FileNotFoundError``.
    """
    writers = [(Path(p), write) for p, write in writers]
    created: list[Path] = []
    tmps: list[Path] = []
    try:
        if make_parents:
            for folder in dict.fromkeys(p.parent for p, _ in writers):
                missing = [d for d in (folder, *folder.parents) if not d.exists()]  # innermost first
                folder.mkdir(parents=True, exist_ok=True)
                created += missing
        for path, write in writers:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
            os.close(fd)
            tmps.append(Path(tmp))
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a written file gets open()'s mode
            write(Path(tmp))
            _fsync(tmp)
        for tmp, (path, _) in zip(tmps, writers):
            os.replace(tmp, path)
        for folder in dict.fromkeys(p.parent for p, _ in writers):
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
