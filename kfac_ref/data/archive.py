"""Fetching and unpacking dataset archives without trusting them.

Three rules, each a function:

* :func:`download` writes to a temporary file beside the destination, checks the
  MD5 against the published one, and only then renames it into place, so a
  failed or tampered download leaves nothing behind.
* :func:`check_tar_members` refuses any member that could write outside the
  target folder (absolute paths, '..', links that point outside, files placed
  beneath a link) or that is not a plain file, folder or link (devices, fifos).
  It looks at ALL members before anything is extracted.
* :func:`safe_extract` extracts into a temporary folder inside the target and
  renames the result into place; where Python's tarfile has extraction filters
  it also passes filter="data" as a second line of defence.

Only CIFAR-10 is downloaded here; MNIST files are fetched by hand (data/README.md).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import tarfile
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath

from ..io import atomic_write

# The official archives of https://www.cs.toronto.edu/~kriz/cifar.html and their MD5s.
CIFAR10_URLS = {
    "python": {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "md5": "c58f30108f718f92721af3b95e74349a",
        "folder": "cifar-10-batches-py",
    },
    "binary": {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
        "md5": "c32a1d4ab5d03f1284b67883e8d87530",
        "folder": "cifar-10-batches-bin",
    },
}

URL_SCHEMES = ("https", "http", "file")
# Python >= 3.12 (and 3.8.17+, 3.9.17+, 3.10.12+, 3.11.4+) has tarfile extraction filters.
TAR_FILTER_SUPPORTED = hasattr(tarfile, "data_filter")


# ---- checksums and download -------------------------------------------------------------
def file_md5(path, chunk_size: int = 1 << 20) -> str:
    """The MD5 hex digest of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _check_md5(md5: str) -> str:
    if not isinstance(md5, str) or len(md5) != 32 or any(c not in "0123456789abcdefABCDEF" for c in md5):
        raise ValueError(f"md5 must be 32 hexadecimal digits, got {md5!r}")
    return md5.lower()


def download(url: str, dest, md5: str, timeout: float = 60.0, chunk_size: int = 1 << 20) -> Path:
    """Download `url` to `dest` and check its MD5; return dest.

    If dest already exists with the right checksum, nothing is downloaded.  The
    bytes go to a temporary file in dest's folder (:func:`kfac_ref.io.atomic_write`),
    which is renamed to dest only after the checksum matches; on a mismatch
    (ValueError naming the expected and actual MD5) or any other failure it is removed.
    """
    dest = Path(dest)
    md5 = _check_md5(md5)
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in URL_SCHEMES:
        raise ValueError(f"download: URL {url!r} has scheme {scheme!r}, expected one of {URL_SCHEMES}")
    if dest.is_dir():
        raise IsADirectoryError(f"download: destination {str(dest)!r} is a directory, expected a file path")
    if dest.is_file() and file_md5(dest) == md5:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)  # kept, even if the download fails

    def fetch(tmp):
        digest = hashlib.md5(usedforsecurity=False)
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310  (scheme checked above)
            while chunk := response.read(chunk_size):
                out.write(chunk)
                digest.update(chunk)
        actual = digest.hexdigest()
        if actual != md5:
            raise ValueError(f"download: {url!r} has MD5 {actual}, expected {md5}; the file was not kept")

    return atomic_write(dest, fetch)


# ---- safe extraction ---------------------------------------------------------------------
def _escapes(path: str) -> bool:
    """True if a relative POSIX path, resolved lexically, leaves its root folder."""
    norm = posixpath.normpath(path)
    return norm.startswith("/") or norm == ".." or norm.startswith("../")


def _check_link_target(name: str, target: str, link_names: set[str], kind: str, archive: str) -> None:
    """Refuse a link target that is absolute, leaves the root, or passes through another link.

    `target` is relative to the archive root (already joined with the link's folder
    for symlinks).  Every prefix is checked, so '../root/x' is refused even though
    it may come back in, and 'a/b/..' is refused when 'a/b' is itself a link (the
    lexical '..' would then be wrong).
    """
    if target.startswith("/"):
        raise ValueError(f"archive {archive!r}: member {name!r} is a {kind} to the absolute path {target!r}")
    parts = target.split("/")
    for i in range(1, len(parts) + 1):
        prefix = "/".join(parts[:i])
        if _escapes(prefix):
            raise ValueError(
                f"archive {archive!r}: member {name!r} is a {kind} to {target!r}, which leaves the target folder"
            )
        if i < len(parts) and posixpath.normpath(prefix) in link_names:
            raise ValueError(f"archive {archive!r}: member {name!r} is a {kind} through the link {prefix!r}")


def check_tar_members(members: list[tarfile.TarInfo], archive: str = "?") -> None:
    """Raise ValueError naming the first member that is unsafe to extract.

    Refused: absolute names, names with a '..' component, members beneath a link
    member, symlinks/hardlinks whose target is absolute or leaves the folder,
    and anything that is not a regular file, folder, symlink or hardlink
    (character/block devices, fifos, ...).
    """
    link_names = {posixpath.normpath(m.name.replace("\\", "/")) for m in members if m.issym() or m.islnk()}
    for m in members:
        name = m.name.replace("\\", "/")  # treat a backslash as a separator too: refuse more, never less
        parts = name.split("/")
        if name.startswith("/"):
            raise ValueError(f"archive {archive!r}: member {m.name!r} has an absolute path")
        if ".." in parts:
            raise ValueError(f"archive {archive!r}: member {m.name!r} has a '..' component")
        if m.ischr() or m.isblk() or m.isfifo():
            raise ValueError(
                f"archive {archive!r}: member {m.name!r} is a device or fifo, expected only files, folders and links"
            )
        if not (m.isreg() or m.isdir() or m.issym() or m.islnk()):
            raise ValueError(f"archive {archive!r}: member {m.name!r} has unsupported type {m.type!r}")
        for i in range(1, len(parts)):
            prefix = posixpath.normpath("/".join(parts[:i]))
            if prefix in link_names:
                raise ValueError(f"archive {archive!r}: member {m.name!r} lies beneath the link {prefix!r}")
        if m.issym():  # relative to the link's own folder
            target = m.linkname if m.linkname.startswith("/") else posixpath.join(posixpath.dirname(name), m.linkname)
            _check_link_target(m.name, target, link_names, "symlink", archive)
        elif m.islnk():  # relative to the archive root
            _check_link_target(m.name, m.linkname, link_names, "hardlink", archive)
            if posixpath.normpath(m.linkname) in link_names:
                raise ValueError(f"archive {archive!r}: member {m.name!r} is a hardlink to the link {m.linkname!r}")


def safe_extract(archive_path, target_dir) -> list[Path]:
    """Extract a .tar / .tar.gz into target_dir after checking every member.

    1. Read all members and run :func:`check_tar_members` (nothing written yet).
    2. Refuse if a top-level entry already exists in target_dir.
    3. Extract into a temporary folder inside target_dir (with filter="data"
       where supported; otherwise member by member, without setting owners or
       modes), then rename each top-level entry into place.  On any failure the
       temporary folder is removed, so nothing half-written is left.

    Returns the paths of the top-level entries created in target_dir.
    """
    archive_path, target_dir = Path(archive_path), Path(target_dir)
    archive = str(archive_path)
    if archive_path.is_dir():
        raise IsADirectoryError(f"archive {archive!r} is a directory, expected a .tar or .tar.gz file")
    if not archive_path.is_file():
        raise FileNotFoundError(f"archive {archive!r} does not exist")
    if target_dir.exists() and not target_dir.is_dir():
        raise NotADirectoryError(f"safe_extract: target {str(target_dir)!r} is a file, expected a folder")
    try:
        tar = tarfile.open(archive_path, "r:*")
    except tarfile.TarError as exc:
        raise ValueError(f"archive {archive!r}: not a readable .tar or .tar.gz file ({exc})") from exc
    with tar:
        try:
            members = tar.getmembers()
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise ValueError(f"archive {archive!r}: truncated or corrupt ({exc})") from exc

        # 1-2. validate everything before writing anything
        check_tar_members(members, archive)
        tops = sorted({PurePosixPath(m.name).parts[0] for m in members if PurePosixPath(m.name).parts})
        target_dir.mkdir(parents=True, exist_ok=True)
        existing = [t for t in tops if os.path.lexists(target_dir / t)]
        if existing:
            raise FileExistsError(
                f"safe_extract: {existing} already exist in {str(target_dir)!r}; "
                f"remove them first to extract {archive!r} again"
            )

        # 3. extract into a private temporary folder, then rename into place
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=target_dir))
        try:
            if TAR_FILTER_SUPPORTED:
                tar.extractall(tmp, members=members, filter="data")
            else:  # pragma: no cover - old Python: our own checks above are the defence
                for m in members:
                    tar.extract(m, tmp, set_attrs=False)
            for t in tops:
                os.replace(tmp / t, target_dir / t)
        except tarfile.TarError as exc:
            raise ValueError(f"archive {archive!r}: extraction refused or failed ({exc})") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return [target_dir / t for t in tops]


# ---- CIFAR-10 ----------------------------------------------------------------------------
def download_cifar10(target_dir, version: str = "binary") -> Path:
    """Download and unpack CIFAR-10 into target_dir; return the batches folder.

    version "binary" gives target_dir/cifar-10-batches-bin (plain bytes, preferred),
    "python" gives target_dir/cifar-10-batches-py (pickles, read with a restricted
    unpickler).  Skips the download if the archive is already there with the right
    MD5, and everything if the batches folder already exists.  About 170 MB.
    """
    if version not in CIFAR10_URLS:
        raise ValueError(f"download_cifar10: unknown version {version!r}, expected one of {tuple(CIFAR10_URLS)}")
    spec = CIFAR10_URLS[version]
    target_dir = Path(target_dir)
    folder = target_dir / spec["folder"]
    if folder.is_dir():
        return folder
    archive = download(spec["url"], target_dir / posixpath.basename(spec["url"]), spec["md5"])
    safe_extract(archive, target_dir)
    if not folder.is_dir():
        raise ValueError(f"download_cifar10: {str(archive)!r} did not contain {spec['folder']!r}")
    return folder
