"""``kfac-ref download NAME [DIR]``: a dataset's published files, fetched and checked, all or nothing.

    name            what is fetched                              DIR (default data/NAME) then holds
    fashion-mnist   4 gzipped IDX files (Zalando Research)       train-images-idx3-ubyte.gz, ... (load_dataset)
    mnist           4 gzipped IDX files                          the same four names
    cifar10         cifar-10-binary.tar.gz, then unpacked        cifar-10-batches-bin/

A gzipped IDX file is kept only if three things match the published values:
its size, its MD5, and its **content** — the decompressed size, the IDX
shape, and (where known) the SHA-256 of the decompressed bytes.  The content
is what identifies the data: Debian's ``dataset-fashion-mnist`` package ships
the same images re-gzipped, so their ``.gz`` MD5s differ while the content's
SHA-256 is the same.  A file already in DIR is accepted without a download when
its MD5 *or* its content matches, so a folder filled from that package (or by
hand) is recognised as complete.

All or nothing (:func:`kfac_ref.io.write_together`): the missing files go to
temporary files in DIR and are renamed into place only when every one is
checked; a failure (offline, a wrong checksum, Ctrl-C) leaves DIR as it was —
and removes DIR again if this call created it.  A network failure is one line
(:class:`~kfac_ref.data.archive.DownloadError`), never a traceback.

Where the numbers come from: data/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import math
from dataclasses import dataclass, replace
from pathlib import Path

from ..io import check_output_dir, write_together
from .archive import CIFAR10_URLS, DownloadError, download_cifar10, fetch_url, file_md5, gunzip
from .idx import IDX_DTYPES, parse_idx


@dataclass(frozen=True)
class RemoteFile:
    """One published gzipped IDX file and what it must be."""

    name: str  # file name on the server and in DIR, e.g. "train-images-idx3-ubyte.gz"
    size: int  # bytes of the published .gz file
    md5: str  # MD5 of the published .gz file
    shape: tuple  # the IDX array's shape, e.g. (60000, 28, 28); its items are unsigned bytes
    content_sha256: str | None = None  # SHA-256 of the decompressed file, where known

    @property
    def content_size(self) -> int:
        """Bytes of the decompressed IDX file: 4-byte magic + 4 bytes per dimension + the uint8 data."""
        return 4 + 4 * len(self.shape) + math.prod(self.shape)


@dataclass(frozen=True)
class Source:
    """A dataset's published files: base URLs tried in order, and the files."""

    name: str
    urls: tuple  # base URLs ending in "/", each holding every file under its name
    files: tuple  # RemoteFile, ...


def _mnist_like(name, urls, table) -> Source:
    shapes = {"train-images": (60000, 28, 28), "train-labels": (60000,), "t10k-images": (10000, 28, 28)}
    files = []
    for stem, (size, md5, sha256) in table.items():
        kind = "idx3-ubyte" if "images" in stem else "idx1-ubyte"
        files.append(RemoteFile(f"{stem}-{kind}.gz", size, md5, shapes.get(stem, (10000,)), sha256))
    return Source(name, tuple(urls), tuple(files))


SOURCES = {
    # https://github.com/zalandoresearch/fashion-mnist (README, "Get the Data"); the content SHA-256s were
    # computed from the decompressed files and agree for the official files and Debian's re-gzipped copies
    "fashion-mnist": _mnist_like(
        "fashion-mnist",
        [
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
        ],
        {
            "train-images": (
                26_421_880,
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            ),
            "train-labels": (
                29_515,
                "25c81989df183df01b3e8a0aad5dffbe",
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            ),
            "t10k-images": (
                4_422_102,
                "bef4ecab320f06d8554ea6380940ec79",
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            ),
            "t10k-labels": (
                5_148,
                "bb300cfdad3c16e7a12a480ee83cd310",
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            ),
        },
    ),
    # http://yann.lecun.com/exdb/mnist/ (sizes and files); the mirror torchvision uses comes first,
    # since the original site often refuses scripts.  No content SHA-256 is published: the size, the MD5
    # and the IDX shape are checked.
    "mnist": _mnist_like(
        "mnist",
        ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"],
        {
            "train-images": (9_912_422, "f68b3c2dcbeaaa9fbdd348bbdeb94873", None),
            "train-labels": (28_881, "d53e105ee54ea40749a09fcbcd1e9432", None),
            "t10k-images": (1_648_877, "9fb629c4189551a2d022fa330f9573f3", None),
            "t10k-labels": (4_542, "ec29112dd5afa0611ce80d1b7f02629c", None),
        },
    ),
}
NAMES = ("fashion-mnist", "mnist", "cifar10")


def check_content(path, spec: RemoteFile) -> None:
    """Raise ValueError unless the gzipped file at ``path`` decompresses to ``spec``'s IDX content.

    Checked: a complete gzip stream (trailer and CRC), exactly ``content_size``
    bytes (never more decompressed than that, plus one), an IDX header of
    unsigned bytes with ``spec.shape``, and the SHA-256 where ``spec`` has one.
    """
    who = f"{spec.name} ({path})"
    raw = gunzip(Path(path).read_bytes(), who, spec.content_size)
    if len(raw) != spec.content_size:
        raise ValueError(f"{who}: decompresses to {len(raw):,} bytes, expected {spec.content_size:,}")
    array = parse_idx(raw, who)
    if array.shape != tuple(spec.shape) or array.dtype != IDX_DTYPES[0x08].newbyteorder("="):
        raise ValueError(f"{who}: holds {array.dtype} of shape {array.shape}, expected uint8 of shape {spec.shape}")
    if spec.content_sha256 is not None:
        actual = hashlib.sha256(raw).hexdigest()
        if actual != spec.content_sha256:
            raise ValueError(f"{who}: decompressed SHA-256 {actual}, expected {spec.content_sha256}")


def is_present(path: Path, spec: RemoteFile) -> bool:
    """True if ``path`` is this file: the published MD5, or (a re-compressed copy) the same content."""
    if not path.is_file():
        return False
    if path.stat().st_size == spec.size and file_md5(path) == spec.md5:
        check_content(path, spec)  # the published file must also be what it says
        return True
    if spec.content_sha256 is None:
        return False
    try:
        check_content(path, spec)
    except ValueError:
        return False
    return True


def _fetch_checked(source: Source, spec: RemoteFile, tmp: Path, timeout: float) -> None:
    """Fill ``tmp`` with ``spec`` from the first base URL that delivers it, checked; else DownloadError."""
    failures = []
    for base in source.urls:
        url = base + spec.name
        try:
            md5 = fetch_url(url, tmp, size=spec.size, timeout=timeout)
            if md5 != spec.md5:
                raise ValueError(f"{url} has MD5 {md5}, expected {spec.md5}")
            check_content(tmp, spec)
            return
        except DownloadError as exc:
            failures.append(str(exc).removeprefix("could not download "))
        except ValueError as exc:
            failures.append(str(exc))
    raise DownloadError(f"could not download {spec.name}: {'; '.join(failures)}")


def download_idx_dataset(source: Source, folder, *, timeout: float = 60.0, log=print) -> list[Path]:
    """Make ``folder`` hold every file of ``source``, checked (see the module's docstring); return their paths."""
    folder = Path(folder)
    _check_folder(folder)
    paths = [folder / spec.name for spec in source.files]
    for path in paths:
        if path.is_dir() or (path.is_symlink() and not path.exists()):
            raise ValueError(
                f"{source.name}: {path} is {'a folder' if path.is_dir() else 'a dangling link'}, expected a file"
            )
    missing = []
    for spec, path in zip(source.files, paths):
        if is_present(path, spec):
            log(f"{source.name}: {path} is present and checked")
        else:
            missing.append((spec, path))
    if not missing:
        return paths
    total = sum(spec.size for spec, _ in missing)
    log(f"{source.name}: fetching {len(missing)} file(s), {total / 1e6:.1f} MB, from {source.urls[0]}")
    write_together(
        [(path, lambda tmp, spec=spec: _fetch_checked(source, spec, tmp, timeout)) for spec, path in missing]
    )
    log(f"{source.name}: wrote {', '.join(str(p) for _, p in missing)} (size, MD5 and content checked)")
    return paths


def _check_folder(folder: Path) -> None:
    """The folder to fill: not a file, not under a file, not a dangling link, writable (:func:`check_output_dir`)."""
    check_output_dir(folder, who="download")


def download_dataset(name: str, folder=None, *, mirror: str | None = None, timeout: float = 60.0, log=print):
    """``kfac-ref download NAME [DIR]`` as a function: DIR defaults to data/NAME; returns what DIR now holds.

    ``mirror``: a base URL holding the same files under the same names, tried
    instead of the published ones (the checksums are the same).
    """
    if name not in NAMES:
        raise ValueError(f"unknown dataset {name!r} to download: expected one of {', '.join(NAMES)}")
    if folder is not None and str(folder) == "":  # Path("") would be the current folder
        raise ValueError(f"download: the folder is the empty path; give a folder, e.g. data/{name}")
    folder = Path(f"data/{name}" if folder is None else folder)
    _check_folder(folder)
    if name == "cifar10":
        log(f"cifar10: fetching {CIFAR10_URLS['binary']['size'] / 1e6:.0f} MB into {folder}")
        out = download_cifar10(folder, "binary", base_url=mirror, timeout=timeout)
        log(f"cifar10: {out} holds the binary batches (size and MD5 checked)")
        return out
    source = SOURCES[name]
    if mirror is not None:
        source = replace(source, urls=(mirror.rstrip("/") + "/",))
    return download_idx_dataset(source, folder, timeout=timeout, log=log)


def add_download_arguments(p) -> None:
    """The arguments of ``kfac-ref download`` (no default shown twice: absent ones are SUPPRESSed)."""
    p.add_argument("dataset", choices=NAMES, help="what to fetch")
    p.add_argument("dir", nargs="?", default=argparse.SUPPRESS, help="the folder to fill (default: data/DATASET)")
    p.add_argument(
        "--mirror",
        metavar="URL",
        default=argparse.SUPPRESS,
        help="a base URL holding the same files under the same names, tried instead of the published ones "
        "(the checksums are the same)",
    )
    p.add_argument("--timeout", type=float, default=60.0, help="seconds without data before a transfer is given up")
    p.add_argument("--quiet", action="store_true", help="no log lines")


def run_download(args, argv=None) -> int:
    """Run ``kfac-ref download``; errors propagate as one-line exceptions (the command line prints them)."""
    if not (args.timeout > 0 and math.isfinite(args.timeout)):
        raise ValueError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    log = (lambda *a, **k: None) if args.quiet else print
    folder, mirror = getattr(args, "dir", None), getattr(args, "mirror", None)
    download_dataset(args.dataset, folder, mirror=mirror, timeout=args.timeout, log=log)
    return 0
