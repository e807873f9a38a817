"""Fetching and unpacking dataset archives without trusting them.

Four rules, each a function:

* :func:`download` writes to a temporary file beside the destination, checks the
  size and MD5 against the published ones, and only then renames it into place,
  so a failed or tampered download leaves nothing behind (not even a folder it
  created); a network failure is one :class:`DownloadError` line.
* :func:`gunzip` / :func:`check_gzip_file` decompress a gzip stream the strict
  way: a stream cut before its trailer (CRC-32 and length), bytes after it that
  are neither zero padding nor another gzip member, and more output than a
  stated limit are refused; the limit is enforced while decompressing.
* :func:`check_tar_members` refuses any member that could write outside the
  target folder (absolute paths, '..', links that point outside, files placed
  beneath a link) or that is not a plain file, folder or link (devices, fifos).
  It looks at ALL members before anything is extracted.
* :func:`safe_extract` checks the archive's own integrity first (a complete
  gzip stream, the end-of-archive block after the last member, at most
  ``max_members`` members and ``max_bytes`` bytes, no sparse members: nothing
  a header declares is believed), extracts into a temporary folder inside the
  target and renames the result into place; where Python's tarfile has
  extraction filters it also passes filter="data" as a second line of defence.

The datasets' published files and the ``kfac-ref download`` command: :mod:`kfac_ref.data.download`.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import posixpath
import shutil
import socket
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path, PurePosixPath

from ..io import atomic_write

# The official archives of https://www.cs.toronto.edu/~kriz/cifar.html and their MD5s.
CIFAR10_URLS = {
    "python": {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "md5": "c58f30108f718f92721af3b95e74349a",
        "size": 170_498_071,
        "folder": "cifar-10-batches-py",
        "members": ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"],
    },
    "binary": {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
        "md5": "c32a1d4ab5d03f1284b67883e8d87530",
        "size": 170_052_171,
        "folder": "cifar-10-batches-bin",
        "members": [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"],
    },
}

URL_SCHEMES = ("https", "http", "file")
# Python >= 3.12 (and 3.8.17+, 3.9.17+, 3.10.12+, 3.11.4+) has tarfile extraction filters.
TAR_FILTER_SUPPORTED = hasattr(tarfile, "data_filter")
GZIP_MAGIC = b"\x1f\x8b"
GZIP_WBITS = 16 + zlib.MAX_WBITS  # zlib reads the gzip wrapper and checks its CRC-32 and length
# safe_extract's defaults: CIFAR-10 has 8 members and unpacks to 185 MB
MAX_MEMBERS = 10_000
MAX_EXTRACT_BYTES = 2**30  # 1 GiB


class DownloadError(OSError):
    """A download that could not be completed (offline, refused, cut short); the message is one line."""


# ---- strict gzip ------------------------------------------------------------------------
def _inflate(chunks, who: str, limit: int, sink, *, over_limit: str = "raise", step: int = 1 << 20) -> int:
    """Decompress the gzip bytes of ``chunks`` into ``sink(bytes)``; return the number of bytes out.

    Refused with a ValueError naming ``who``: a corrupt stream (zlib checks the
    CRC-32 and length in every member's trailer), a stream that ends before a
    trailer, anything after the last member but zero padding or another gzip
    member, and more than ``limit`` output bytes.  ``over_limit="stop"`` returns
    after limit + 1 bytes instead (the caller reports what is too long).
    ``step``: output bytes per zlib call, so memory stays bounded whatever the ratio.
    """
    total = 0
    d = zlib.decompressobj(GZIP_WBITS)
    in_member, padding = True, False  # inside a gzip member; past the last one (zeros only)
    for chunk in chunks:
        data = chunk
        while True:
            if padding:
                if data.strip(b"\0"):
                    raise ValueError(f"{who}: bytes after the end of the gzip stream, expected none")
                break
            if not in_member:  # after a member: zero padding or the next member
                if not data:
                    break
                if data[0] == 0:
                    padding = True
                    continue
                d, in_member = zlib.decompressobj(GZIP_WBITS), True
            try:
                out = d.decompress(data, step)  # b"" input still flushes output a full call held back
            except zlib.error as exc:
                raise ValueError(f"{who}: corrupt gzip stream ({exc})") from None
            total += len(out)
            if total > limit:
                if over_limit == "stop":
                    sink(out[: len(out) - (total - limit - 1)])
                    return limit + 1
                raise ValueError(f"{who}: decompresses to more than {limit:,} bytes, expected at most that")
            sink(out)
            if d.eof:
                data, in_member = d.unused_data, False
            else:
                data = d.unconsumed_tail
                if not data and len(out) < step:  # input used up and nothing held back: next chunk
                    break
    if in_member and not d.eof:
        raise ValueError(f"{who}: the gzip stream ends before its trailer (CRC-32 and length): the file is truncated")
    return total


def gunzip(raw: bytes, who: str, limit: int, *, over_limit: str = "raise") -> bytes:
    """A whole gzip file held in memory, decompressed with the checks of :func:`_inflate`."""
    if raw[:2] != GZIP_MAGIC:
        raise ValueError(f"{who}: not a gzip file (it starts with {raw[:2].hex() or 'nothing'}, expected 1f8b)")
    out = bytearray()
    _inflate([raw], who, limit, out.extend, over_limit=over_limit)
    return bytes(out)


def check_gzip_file(path, who: str, limit: int, chunk_size: int = 1 << 20) -> int:
    """Read a gzip file through to its end with the checks of :func:`_inflate`; return its decompressed size."""

    def chunks():
        with open(path, "rb") as f:
            while chunk := f.read(chunk_size):
                yield chunk

    return _inflate(chunks(), who, limit, lambda out: None)


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


def _reason(exc: BaseException) -> str:
    """One line saying why a URL could not be read."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def fetch_url(url: str, out_path, *, size: int | None = None, timeout: float = 60.0, chunk_size: int = 1 << 20) -> str:
    """Copy ``url`` into the file ``out_path``; return the MD5 of the bytes written.

    With ``size``, the server must deliver exactly that many bytes: a
    Content-Length that says otherwise is refused before reading, and never more
    than size + 1 bytes are read.  Any network failure (offline, refused,
    HTTP error, timeout, cut short) is a :class:`DownloadError` of one line.
    """
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in URL_SCHEMES:
        raise ValueError(f"download: URL {url!r} has scheme {scheme!r}, expected one of {URL_SCHEMES}")
    digest = hashlib.md5(usedforsecurity=False)
    got = 0
    try:
        with open(out_path, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310  (scheme checked above)
            declared = response.headers.get("Content-Length") if hasattr(response, "headers") else None
            if size is not None and declared is not None and declared.isdigit() and int(declared) != size:
                raise DownloadError(
                    f"could not download {url}: the server offers {int(declared):,} bytes, expected {size:,}"
                )
            while chunk := response.read(chunk_size if size is None else min(chunk_size, size + 1 - got)):
                out.write(chunk)
                digest.update(chunk)
                got += len(chunk)
                if size is not None and got > size:
                    raise DownloadError(f"could not download {url}: more than the expected {size:,} bytes")
    except DownloadError:
        raise
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if isinstance(exc, OSError) and exc.filename is not None and str(exc.filename) == str(out_path):
            raise  # our own file could not be written: not a network failure
        raise DownloadError(f"could not download {url}: {_reason(exc)}") from None
    if size is not None and got != size:
        raise DownloadError(f"could not download {url}: the transfer stopped after {got:,} of {size:,} bytes")
    return digest.hexdigest()


def download(
    url: str, dest, md5: str, timeout: float = 60.0, chunk_size: int = 1 << 20, *, size: int | None = None
) -> Path:
    """Download `url` to `dest` and check its MD5 (and its size, if given); return dest.

    If dest already exists with the right checksum, nothing is downloaded.  The
    bytes go to a temporary file in dest's folder (:func:`kfac_ref.io.atomic_write`),
    which is renamed to dest only after the checksum matches; on a mismatch
    (ValueError naming the expected and actual MD5) or any other failure it is
    removed, and so are the folders the call created.  A network failure is a
    :class:`DownloadError` (an OSError) whose message is one line.
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

    def fetch(tmp):
        actual = fetch_url(url, tmp, size=size, timeout=timeout, chunk_size=chunk_size)
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


def _read_members(tar: tarfile.TarFile, archive: str, max_members: int, max_bytes: int) -> list[tarfile.TarInfo]:
    """Every member header, refusing more than max_members, sparse members, a total over max_bytes,
    and an archive that stops without its end-of-archive block (cut at a member boundary)."""
    members, total = [], 0
    try:
        for m in tar:
            members.append(m)
            if len(members) > max_members:
                raise ValueError(f"archive {archive!r}: more than {max_members:,} members, expected at most that")
            if m.issparse():
                raise ValueError(f"archive {archive!r}: member {m.name!r} is a sparse file, expected plain files only")
            total += m.size if m.isreg() else 0
            if total > max_bytes:
                raise ValueError(
                    f"archive {archive!r}: its files add up to more than {max_bytes:,} bytes, expected at most that"
                )
        # tarfile ends quietly at EOF or at a bad header; a complete archive ends with a zero block
        tar.fileobj.seek(tar.offset)
        end = tar.fileobj.read(tarfile.BLOCKSIZE)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise ValueError(f"archive {archive!r}: truncated or corrupt ({exc})") from exc
    if len(end) < tarfile.BLOCKSIZE or end.strip(b"\0"):
        raise ValueError(
            f"archive {archive!r}: ends after member {members[-1].name if members else None!r} without the "
            f"end-of-archive block: truncated (or not a tar file past that point)"
        )
    return members


def safe_extract(
    archive_path, target_dir, *, max_members: int = MAX_MEMBERS, max_bytes: int = MAX_EXTRACT_BYTES
) -> list[Path]:
    """Extract a .tar / .tar.gz into target_dir after checking the archive and every member.

    1. The archive itself: a gzip stream must be complete (its trailer checked,
       at most max_bytes decompressed, :func:`check_gzip_file`); the tar must end
       with its end-of-archive block, hold at most max_members members, no sparse
       ones, and files of at most max_bytes in all.  Sizes are counted from the
       bytes really present, not taken from a header.
    2. Every member: :func:`check_tar_members` (nothing written yet).
    3. Refuse if a top-level entry already exists in target_dir.
    4. Extract into a temporary folder inside target_dir (with filter="data"
       where supported; otherwise member by member, without setting owners or
       modes), then rename each top-level entry into place.  On any failure the
       temporary folder, and target_dir if this call created it, are removed,
       so nothing half-written is left.

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
    with open(archive_path, "rb") as f:
        gzipped = f.read(2) == GZIP_MAGIC
    if gzipped:
        check_gzip_file(archive_path, f"archive {archive!r}", max_bytes + 2 * tarfile.BLOCKSIZE * (max_members + 2))
    elif archive_path.stat().st_size > max_bytes + 2 * tarfile.BLOCKSIZE * (max_members + 2):
        raise ValueError(f"archive {archive!r}: {archive_path.stat().st_size:,} bytes, expected at most {max_bytes:,}")
    try:
        tar = tarfile.open(archive_path, "r:*")
    except tarfile.TarError as exc:
        raise ValueError(f"archive {archive!r}: not a readable .tar or .tar.gz file ({exc})") from exc
    with tar:
        # 1-3. validate everything before writing anything
        members = _read_members(tar, archive, max_members, max_bytes)
        check_tar_members(members, archive)
        tops = sorted({PurePosixPath(m.name).parts[0] for m in members if PurePosixPath(m.name).parts})
        existing = [t for t in tops if os.path.lexists(target_dir / t)]
        if existing:
            raise FileExistsError(
                f"safe_extract: {existing} already exist in {str(target_dir)!r}; "
                f"remove them first to extract {archive!r} again"
            )
        created = [d for d in (target_dir, *target_dir.parents) if not d.exists()]  # innermost first
        target_dir.mkdir(parents=True, exist_ok=True)

        # 4. extract into a private temporary folder, then rename into place
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=target_dir))
        try:
            if TAR_FILTER_SUPPORTED:
                tar.extractall(tmp, members=members, filter="data")
            else:  # pragma: no cover - old Python: our own checks above are the defence
                for m in members:
                    tar.extract(m, tmp, set_attrs=False)
            for t in tops:
                os.replace(tmp / t, target_dir / t)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            for d in created:
                try:
                    d.rmdir()
                except OSError:
                    break
            if isinstance(exc, (tarfile.TarError, EOFError, zlib.error)):
                raise ValueError(f"archive {archive!r}: extraction refused or failed ({exc})") from exc
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return [target_dir / t for t in tops]


# ---- CIFAR-10 ----------------------------------------------------------------------------
def download_cifar10(
    target_dir, version: str = "binary", *, base_url: str | None = None, timeout: float = 60.0
) -> Path:
    """Download and unpack CIFAR-10 into target_dir; return the batches folder.

    version "binary" gives target_dir/cifar-10-batches-bin (plain bytes, preferred),
    "python" gives target_dir/cifar-10-batches-py (pickles, read with a restricted
    unpickler).  Skips the download if the archive is already there with the right
    MD5, and everything if the batches folder already exists.  About 170 MB.
    ``base_url``: a mirror holding the same archive under the same name.

    Offline (or any network failure) it raises one :class:`DownloadError` line and
    leaves nothing behind, not even a target_dir it created; an archive without
    every batch file is refused by name.
    """
    if version not in CIFAR10_URLS:
        raise ValueError(f"download_cifar10: unknown version {version!r}, expected one of {tuple(CIFAR10_URLS)}")
    spec = CIFAR10_URLS[version]
    target_dir = Path(target_dir)
    if target_dir.exists() and not target_dir.is_dir():
        raise NotADirectoryError(f"download_cifar10: {str(target_dir)!r} is a file, expected a folder")
    folder = target_dir / spec["folder"]
    if folder.is_dir():
        return folder
    name = posixpath.basename(urllib.parse.urlsplit(spec["url"]).path)
    url = spec["url"] if base_url is None else base_url.rstrip("/") + "/" + name
    archive = download(url, target_dir / name, spec["md5"], timeout=timeout, size=spec.get("size"))
    safe_extract(archive, target_dir)
    missing = [m for m in spec.get("members", ()) if not (folder / m).is_file()]
    if not folder.is_dir() or missing:
        raise ValueError(
            f"download_cifar10: {str(archive)!r} did not contain {spec['folder']!r}"
            + (f" with {', '.join(missing)}" if missing and folder.is_dir() else "")
        )
    return folder
