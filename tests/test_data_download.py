"""``kfac-ref download``: published files fetched from a loopback HTTP server, checked, all or nothing.

Every test serves small files written here from a server bound to 127.0.0.1
that stops by itself; nothing leaves the machine.  The real Fashion-MNIST files
are checked only by the slow test at the end, when KFAC_REF_FASHION_MNIST names
a folder holding them.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.server
import io
import os
import re
import socket
import struct
import tarfile
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from kfac_ref import cli
from kfac_ref.data import DownloadError, download_cifar10, load_cifar10, load_dataset
from kfac_ref.data import archive as archive_module
from kfac_ref.data import downloads as dl

REPO = Path(__file__).resolve().parents[1]


# ---- a loopback server that stops by itself ------------------------------------------------
class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list  # paths asked for, shared per server
    cut: set  # file names sent with a Content-Length larger than what follows

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        self.requests.append(self.path)
        name = self.path.lstrip("/")
        if name in self.cut:
            data = (Path(self.directory) / name).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])  # then the connection closes
            return
        super().do_GET()


@contextlib.contextmanager
def loopback_server(folder, cut=(), seconds: float = 30.0):
    """Serve ``folder`` over HTTP on 127.0.0.1 (a free port); yields (base URL, requested paths)."""
    requests: list = []
    handler = functools.partial(type("H", (_Handler,), {"requests": requests, "cut": set(cut)}), directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    timer = threading.Timer(seconds, server.shutdown)  # stops by itself if a test hangs
    timer.daemon = True
    thread.start()
    timer.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", requests
    finally:
        timer.cancel()
        server.shutdown()
        server.server_close()
        thread.join(5)


def closed_port_url() -> str:
    """A loopback URL where nothing listens: connecting is refused, as offline."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


# ---- small published files, written here ------------------------------------------------
def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def gzip_with_name(data: bytes, name: str) -> bytes:
    """gzip as the publishers wrote it: the original file name in the header."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename=name, mode="wb", fileobj=buf, mtime=1_500_000_000) as f:
        f.write(data)
    return buf.getvalue()


@pytest.fixture
def published(tmp_path):
    """(folder served, Source describing it, the raw arrays): four tiny IDX files named like Fashion-MNIST's."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (6, 7, 5)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, 6),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (4, 7, 5)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 4),
    }
    served = tmp_path / "served"
    served.mkdir()
    files = []
    for stem, array in arrays.items():
        content = idx_bytes(array)
        gz = gzip_with_name(content, stem)
        (served / f"{stem}.gz").write_bytes(gz)
        files.append(
            dl.RemoteFile(
                f"{stem}.gz", len(gz), hashlib.md5(gz).hexdigest(), array.shape, hashlib.sha256(content).hexdigest()
            )
        )
    return served, dl.Source("fashion-mnist", ("http://unused/",), tuple(files)), arrays


def _quiet(*args, **kwargs):
    pass


# ---- the published table ------------------------------------------------------------------
def test_published_table_matches_data_readme_and_the_idx_format():
    readme = (REPO / "data" / "README.md").read_text()
    for name, column in (("mnist", 1), ("fashion-mnist", 2)):
        for spec in dl.SOURCES[name].files:
            row = next(line for line in readme.splitlines() if line.startswith(f"| {spec.name} |"))
            assert row.split("|")[column + 1].strip() == spec.md5
            images = "images" in spec.name
            n = 60000 if spec.name.startswith("train") else 10000
            assert spec.content_size == (16 + n * 28 * 28 if images else 8 + n)  # IDX header + bytes
    sizes = {s.name: s.size for s in dl.SOURCES["fashion-mnist"].files}
    assert sizes["train-images-idx3-ubyte.gz"] == 26_421_880 and sizes["t10k-labels-idx1-ubyte.gz"] == 5_148
    assert all(s.content_sha256 for s in dl.SOURCES["fashion-mnist"].files)


# ---- fetching -------------------------------------------------------------------------------
def test_download_fetches_every_file_checked_and_loads_as_fashion_mnist(tmp_path, published):
    served, source, arrays = published
    out = tmp_path / "data" / "fashion-mnist"
    with loopback_server(served) as (url, requests):
        paths = dl.download_idx_dataset(replace(source, urls=(url,)), out, timeout=5, log=_quiet)
    assert sorted(requests) == sorted(f"/{s.name}" for s in source.files)
    assert sorted(p.name for p in out.iterdir()) == sorted(s.name for s in source.files)  # no temporary file
    for path in paths:
        assert path.read_bytes() == (served / path.name).read_bytes()
    ds = load_dataset("fashion-mnist", out)
    assert ds.name == "fashion-mnist" and "fashion-mnist" in repr(ds)
    np.testing.assert_array_equal(ds.y_train, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(ds.y_val, arrays["t10k-labels-idx1-ubyte"])


def test_files_already_present_are_not_fetched_again(tmp_path, published):
    served, source, _ = published
    out = tmp_path / "out"
    with loopback_server(served) as (url, requests):
        dl.download_idx_dataset(replace(source, urls=(url,)), out, timeout=5, log=_quiet)
        n = len(requests)
        dl.download_idx_dataset(replace(source, urls=(url,)), out, timeout=5, log=_quiet)
        assert len(requests) == n == 4


def test_a_recompressed_copy_is_recognised_by_its_content_without_a_download(tmp_path, published):
    """Debian's package re-gzips the images: other .gz bytes and MD5, the same content."""
    served, source, _ = published
    out = tmp_path / "debian"
    out.mkdir()
    for spec in source.files:
        content = gzip.decompress((served / spec.name).read_bytes())
        (out / spec.name).write_bytes(gzip.compress(content, mtime=0))  # no file name in the header
        assert hashlib.md5((out / spec.name).read_bytes()).hexdigest() != spec.md5
    lines = []
    dl.download_idx_dataset(replace(source, urls=(closed_port_url(),)), out, timeout=5, log=lines.append)
    assert len(lines) == 4 and all("present and checked" in line for line in lines)


def test_a_copy_with_other_content_is_not_accepted_and_is_replaced(tmp_path, published):
    served, source, _ = published
    out = tmp_path / "out"
    out.mkdir()
    first = source.files[0]
    content = bytearray(gzip.decompress((served / first.name).read_bytes()))
    content[-1] ^= 1  # one pixel differs
    (out / first.name).write_bytes(gzip.compress(bytes(content)))
    with pytest.raises(ValueError, match="decompressed SHA-256"):
        dl.check_content(out / first.name, first)
    with loopback_server(served) as (url, requests):
        dl.download_idx_dataset(replace(source, urls=(url,)), out, timeout=5, log=_quiet)
    assert f"/{first.name}" in requests
    assert (out / first.name).read_bytes() == (served / first.name).read_bytes()


def test_download_refuses_a_wrong_md5_and_keeps_nothing(tmp_path, published):
    served, source, _ = published
    victim = source.files[1]
    data = bytearray((served / victim.name).read_bytes())
    data[20] ^= 0xFF  # same size, other bytes
    (served / victim.name).write_bytes(bytes(data))
    out = tmp_path / "data" / "fashion-mnist"
    with loopback_server(served) as (url, _), pytest.raises(DownloadError) as err:
        dl.download_idx_dataset(replace(source, urls=(url,)), out, timeout=5, log=_quiet)
    assert re.search(rf"{victim.name}.*has MD5 [0-9a-f]{{32}}, expected {victim.md5}", str(err.value))
    assert not (tmp_path / "data").exists()  # all or nothing: not even the folder


def test_download_is_all_or_nothing_when_one_file_is_missing(tmp_path, published):
    served, source, _ = published
    (served / source.files[3].name).unlink()  # the server answers 404
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with loopback_server(served) as (url, _), pytest.raises(DownloadError, match=r"HTTP 404"):
        dl.download_idx_dataset(replace(source, urls=(url,)), out, timeout=5, log=_quiet)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # the three good files were not kept either


def test_a_transfer_cut_short_is_refused(tmp_path, published):
    served, source, _ = published
    victim = source.files[0]
    out = tmp_path / "out"
    with loopback_server(served, cut={victim.name}) as (url, _), pytest.raises(DownloadError) as err:
        dl.download_idx_dataset(replace(source, urls=(url,)), out, timeout=5, log=_quiet)
    assert victim.name in str(err.value) and "\n" not in str(err.value)
    assert not out.exists()


def test_a_server_offering_another_size_is_refused_before_reading(tmp_path, published):
    served, source, _ = published
    victim = source.files[2]
    (served / victim.name).write_bytes((served / victim.name).read_bytes() + b"\0" * 100)
    with loopback_server(served) as (url, _), pytest.raises(DownloadError) as err:
        dl.download_idx_dataset(replace(source, urls=(url,)), tmp_path / "out", timeout=5, log=_quiet)
    assert f"offers {victim.size + 100:,} bytes, expected {victim.size:,}" in str(err.value)


def test_the_next_base_url_is_tried_when_the_first_fails(tmp_path, published):
    served, source, _ = published
    with loopback_server(served) as (url, _):
        dl.download_idx_dataset(replace(source, urls=(closed_port_url(), url)), tmp_path / "o", timeout=5, log=_quiet)
    assert len(list((tmp_path / "o").iterdir())) == 4


def test_offline_download_is_one_line_and_leaves_nothing(tmp_path, published):
    _, source, _ = published
    out = tmp_path / "data" / "fashion-mnist"
    with pytest.raises(DownloadError) as err:
        dl.download_idx_dataset(replace(source, urls=(closed_port_url(),)), out, timeout=5, log=_quiet)
    message = str(err.value)
    assert "\n" not in message and message.startswith("could not download train-images-idx3-ubyte.gz")
    assert "refused" in message.lower()
    assert err.value.__cause__ is None and (err.value.__context__ is None or err.value.__suppress_context__)
    assert not (tmp_path / "data").exists()


# ---- the command line -----------------------------------------------------------------------
def test_cli_download_fashion_mnist_from_a_mirror(tmp_path, published, monkeypatch, capsys):
    served, source, _ = published
    monkeypatch.setitem(dl.SOURCES, "fashion-mnist", source)
    out = tmp_path / "fm"
    with loopback_server(served) as (url, _):
        assert cli.main(["download", "fashion-mnist", str(out), "--mirror", url, "--timeout", "5"]) == 0
    assert len(list(out.iterdir())) == 4
    assert "size, MD5 and content checked" in capsys.readouterr().out
    assert load_dataset("fashion-mnist", out).name == "fashion-mnist"


@pytest.mark.parametrize("name", ["fashion-mnist", "mnist", "cifar10"])
def test_cli_download_offline_prints_one_line_and_leaves_no_folder(tmp_path, monkeypatch, capsys, name):
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["download", name, "--mirror", closed_port_url(), "--timeout", "5"])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.count("\n") == 1 and err.startswith("kfac-ref download: error: could not download")
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no data/ and no data/NAME folder


def test_cli_download_refuses_the_empty_path_and_a_file_as_folder(tmp_path, capsys):
    assert cli.main(["download", "mnist", ""]) == 1
    assert "the folder is the empty path" in capsys.readouterr().err
    (tmp_path / "f").write_text("x")
    assert cli.main(["download", "mnist", str(tmp_path / "f")]) == 1
    assert "is not a folder" in capsys.readouterr().err


# ---- CIFAR-10 -------------------------------------------------------------------------------
def _cifar_archive(path, names):
    rng = np.random.default_rng(1)
    with tarfile.open(path, "w:gz") as tar:
        for name in names:
            records = np.concatenate([rng.integers(0, 10, (3, 1)), rng.integers(0, 256, (3, 3072))], axis=1)
            data = records.astype(np.uint8).tobytes()
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


CIFAR_NAMES = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]


def _serve_cifar(monkeypatch, folder, names):
    archive = _cifar_archive(folder / "cifar-10-binary.tar.gz", names)
    spec = dict(archive_module.CIFAR10_URLS["binary"])
    spec.update(md5=archive_module.file_md5(archive), size=archive.stat().st_size)
    monkeypatch.setitem(archive_module.CIFAR10_URLS, "binary", spec)


def test_cli_download_cifar10_from_a_mirror(tmp_path, monkeypatch):
    (tmp_path / "served").mkdir()
    _serve_cifar(monkeypatch, tmp_path / "served", CIFAR_NAMES)
    with loopback_server(tmp_path / "served") as (url, _):
        assert cli.main(["download", "cifar10", str(tmp_path / "c"), "--mirror", url, "--quiet"]) == 0
    assert load_cifar10(tmp_path / "c").n_train == 15


def test_download_cifar10_refuses_an_archive_without_every_batch(tmp_path, monkeypatch):
    (tmp_path / "served").mkdir()
    _serve_cifar(monkeypatch, tmp_path / "served", CIFAR_NAMES[:-1])
    with loopback_server(tmp_path / "served") as (url, _), pytest.raises(ValueError, match=r"with test_batch.bin"):
        download_cifar10(tmp_path / "c", base_url=url, timeout=5)


def test_download_cifar10_offline_is_one_line_and_leaves_no_folder(tmp_path, monkeypatch):
    spec = dict(archive_module.CIFAR10_URLS["binary"], url=closed_port_url() + "cifar-10-binary.tar.gz")
    monkeypatch.setitem(archive_module.CIFAR10_URLS, "binary", spec)
    with pytest.raises(DownloadError) as err:
        download_cifar10(tmp_path / "data" / "cifar10", timeout=5)
    assert "\n" not in str(err.value) and (err.value.__context__ is None or err.value.__suppress_context__)
    assert list(tmp_path.iterdir()) == []


# ---- the real files (slow; only where they are) ------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("KFAC_REF_FASHION_MNIST"), reason="KFAC_REF_FASHION_MNIST not set")
def test_real_fashion_mnist_files_are_recognised_and_load():
    folder = Path(os.environ["KFAC_REF_FASHION_MNIST"])
    lines = []
    dl.download_dataset("fashion-mnist", folder, mirror=closed_port_url(), log=lines.append)  # no network needed
    assert len(lines) == 4 and all("present and checked" in line for line in lines)
    ds = load_dataset("fashion-mnist", folder)
    assert ds.name == "fashion-mnist" and ds.x_train.shape == (60000, 1, 28, 28) and ds.x_val.shape[0] == 10000
    assert np.bincount(ds.y_train).tolist() == [6000] * 10 and np.bincount(ds.y_val).tolist() == [1000] * 10
