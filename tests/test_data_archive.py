"""Download with checksum, and tar extraction that refuses to escape; no network."""

import hashlib
import io
import tarfile

import numpy as np
import pytest

from kfac_ref.data import CIFAR10_URLS, download, download_cifar10, file_md5, load_cifar10, safe_extract
from kfac_ref.data import archive as archive_module


def md5_of(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# ---- checksums and download --------------------------------------------------------------
def test_file_md5_matches_known_digests(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "abc").write_bytes(b"abc")
    assert file_md5(tmp_path / "empty") == "d41d8cd98f00b204e9800998ecf8427e"
    assert file_md5(tmp_path / "abc") == "900150983cd24fb0d6963f7d28e17f72"
    big = bytes(range(256)) * 10_000  # several read chunks
    (tmp_path / "big").write_bytes(big)
    assert file_md5(tmp_path / "big", chunk_size=1000) == md5_of(big)


def test_official_cifar_urls_and_checksums():
    assert CIFAR10_URLS["python"]["url"] == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert CIFAR10_URLS["python"]["md5"] == "c58f30108f718f92721af3b95e74349a"
    assert CIFAR10_URLS["binary"]["url"] == "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
    assert CIFAR10_URLS["binary"]["md5"] == "c32a1d4ab5d03f1284b67883e8d87530"


@pytest.fixture
def source(tmp_path):
    payload = bytes(range(256)) * 5000  # 1.28 MB: more than one read chunk
    path = tmp_path / "src" / "payload.bin"
    path.parent.mkdir()
    path.write_bytes(payload)
    return path, payload


def test_download_with_right_md5_writes_the_file(tmp_path, source):
    path, payload = source
    dest = tmp_path / "out" / "payload.bin"
    assert download(path.as_uri(), dest, md5_of(payload)) == dest
    assert dest.read_bytes() == payload
    assert sorted(p.name for p in dest.parent.iterdir()) == ["payload.bin"]  # no .part left


def test_download_with_wrong_md5_keeps_nothing(tmp_path, source):
    path, payload = source
    dest = tmp_path / "out" / "payload.bin"
    wrong = "0" * 32
    with pytest.raises(ValueError, match=rf"MD5 {md5_of(payload)}, expected {wrong}; the file was not kept"):
        download(path.as_uri(), dest, wrong)
    assert not dest.parent.exists()  # nothing kept, not even the folder the call created


def test_failed_download_keeps_nothing(tmp_path):
    dest = tmp_path / "out" / "x.bin"
    with pytest.raises(OSError):
        download((tmp_path / "missing.bin").as_uri(), dest, "0" * 32)
    assert not dest.parent.exists()  # nothing kept, not even the folder the call created


def test_download_skips_an_existing_good_file_and_replaces_a_bad_one(tmp_path, source):
    path, payload = source
    dest = tmp_path / "payload.bin"
    dest.write_bytes(payload)
    # would fail if it tried to fetch: the URL does not exist
    assert download((tmp_path / "gone").as_uri(), dest, md5_of(payload)) == dest
    dest.write_bytes(b"stale")
    download(path.as_uri(), dest, md5_of(payload))
    assert dest.read_bytes() == payload


@pytest.mark.parametrize(
    "url, md5, message",
    [
        ("ftp://example.com/x", "0" * 32, "has scheme 'ftp', expected one of"),
        ("file:///x", "xyz", "md5 must be 32 hexadecimal digits"),
    ],
)
def test_download_refuses_bad_arguments(tmp_path, url, md5, message):
    with pytest.raises(ValueError, match=message):
        download(url, tmp_path / "x", md5)


# ---- safe_extract ------------------------------------------------------------------------
def add_file(tar, name, data=b"hello"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def add_special(tar, name, kind, linkname=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    tar.addfile(info)


def build_tar(path, members, mode="w:gz"):
    """members: list of (name, kind, data_or_linkname); kind 'file', 'dir' or a tarfile type."""
    with tarfile.open(path, mode) as tar:
        for name, kind, extra in members:
            if kind == "file":
                add_file(tar, name, extra)
            elif kind == "dir":
                add_special(tar, name, tarfile.DIRTYPE)
            else:
                add_special(tar, name, kind, extra)
    return path


CLEAN = [
    ("pkg", "dir", None),
    ("pkg/a.txt", "file", b"first file"),
    ("pkg/sub/b.bin", "file", bytes(range(200))),
    ("pkg/link", tarfile.SYMTYPE, "a.txt"),
    ("pkg/sub/up", tarfile.SYMTYPE, "../a.txt"),
    ("pkg/hard", tarfile.LNKTYPE, "pkg/a.txt"),
    ("top.txt", "file", b"top"),
]


@pytest.mark.parametrize("mode", ["w:gz", "w"])
@pytest.mark.parametrize("with_filter", [True, False])
def test_clean_archive_is_extracted_exactly(tmp_path, monkeypatch, mode, with_filter):
    if with_filter and not archive_module.TAR_FILTER_SUPPORTED:
        pytest.skip("this Python's tarfile has no extraction filters")
    monkeypatch.setattr(archive_module, "TAR_FILTER_SUPPORTED", with_filter)
    archive = build_tar(tmp_path / "clean.tar", CLEAN, mode)
    target = tmp_path / "target"
    created = safe_extract(archive, target)
    assert created == [target / "pkg", target / "top.txt"]
    assert sorted(p.name for p in target.iterdir()) == ["pkg", "top.txt"]  # no temporary folder left
    assert (target / "pkg" / "a.txt").read_bytes() == b"first file"
    assert (target / "pkg" / "sub" / "b.bin").read_bytes() == bytes(range(200))
    assert (target / "pkg" / "link").is_symlink() and (target / "pkg" / "link").read_bytes() == b"first file"
    assert (target / "pkg" / "sub" / "up").read_bytes() == b"first file"
    assert (target / "pkg" / "hard").read_bytes() == b"first file"


EVIL = {
    "dotdot": ([("../evil", "file", b"x")], r"'\.\./evil' has a '\.\.' component"),
    "dotdot_inside": ([("pkg/../../evil", "file", b"x")], "has a '..' component"),
    "absolute": ([("/abs/path", "file", b"x")], "'/abs/path' has an absolute path"),
    "symlink_absolute": (
        [("pkg/passwd", tarfile.SYMTYPE, "/etc/passwd")],
        "'pkg/passwd' is a symlink to the absolute path '/etc/passwd'",
    ),
    "symlink_up": ([("pkg/up", tarfile.SYMTYPE, "../../outside")], "'pkg/up' is a symlink to .* leaves the target"),
    "hardlink_up": ([("pkg/h", tarfile.LNKTYPE, "../outside")], "'pkg/h' is a hardlink to .* leaves the target"),
    "hardlink_absolute": ([("pkg/h", tarfile.LNKTYPE, "/etc/passwd")], "hardlink to the absolute path"),
    "fifo": ([("pkg/pipe", tarfile.FIFOTYPE, "")], "'pkg/pipe' is a device or fifo"),
    "char_device": ([("pkg/tty", tarfile.CHRTYPE, "")], "'pkg/tty' is a device or fifo"),
    "block_device": ([("pkg/sda", tarfile.BLKTYPE, "")], "'pkg/sda' is a device or fifo"),
    "beneath_link": (
        [("pkg/l", tarfile.SYMTYPE, "sub"), ("pkg/l/x", "file", b"x")],
        "'pkg/l/x' lies beneath the link 'pkg/l'",
    ),
    "through_link": (
        [("pkg/d/b", tarfile.SYMTYPE, ".."), ("pkg/x", tarfile.SYMTYPE, "d/b/../../..")],
        "'pkg/x' is a symlink through the link 'pkg/d/b'",
    ),
}


@pytest.mark.parametrize("case", sorted(EVIL))
@pytest.mark.parametrize("with_filter", [True, False])
def test_unsafe_member_is_refused_before_anything_is_written(tmp_path, monkeypatch, case, with_filter):
    monkeypatch.setattr(archive_module, "TAR_FILTER_SUPPORTED", with_filter and archive_module.TAR_FILTER_SUPPORTED)
    members, message = EVIL[case]
    archive = build_tar(tmp_path / "evil.tar.gz", [("pkg", "dir", None), ("pkg/ok.txt", "file", b"ok")] + members)
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(ValueError, match=rf"evil.tar.gz.*{message}"):
        safe_extract(archive, target)
    assert list(target.iterdir()) == []  # not even the clean members
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.tar.gz", "target"]


def test_existing_entry_is_not_overwritten(tmp_path):
    archive = build_tar(tmp_path / "clean.tar.gz", CLEAN)
    (tmp_path / "target" / "pkg").mkdir(parents=True)
    with pytest.raises(FileExistsError, match=r"\['pkg'\] already exist"):
        safe_extract(archive, tmp_path / "target")
    assert sorted(p.name for p in (tmp_path / "target").iterdir()) == ["pkg"]


def test_not_an_archive_is_refused(tmp_path):
    (tmp_path / "fake.tar.gz").write_bytes(b"this is not a tar file at all" * 20)
    with pytest.raises(ValueError, match=r"fake.tar.gz.*not a readable .tar"):
        safe_extract(tmp_path / "fake.tar.gz", tmp_path / "target")


def test_missing_archive_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.tar.gz"):
        safe_extract(tmp_path / "nothing.tar.gz", tmp_path)


# ---- download_cifar10, end to end on a local archive -------------------------------------
def test_download_cifar10_end_to_end_from_a_local_archive(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    members = [("cifar-10-batches-bin", "dir", None), ("cifar-10-batches-bin/batches.meta.txt", "file", b"airplane\n")]
    labels = {}
    for name in names:
        labels[name] = rng.integers(0, 10, size=4)
        pixels = rng.integers(0, 256, size=(4, 3072))
        records = np.concatenate([labels[name][:, None], pixels], axis=1).astype(np.uint8)
        members.append((f"cifar-10-batches-bin/{name}", "file", records.tobytes()))
    archive = build_tar(tmp_path / "cifar-10-binary.tar.gz", members)
    monkeypatch.setitem(
        archive_module.CIFAR10_URLS,
        "binary",
        {"url": archive.as_uri(), "md5": file_md5(archive), "folder": "cifar-10-batches-bin"},
    )

    folder = download_cifar10(tmp_path / "data" / "cifar10", version="binary")
    assert folder == tmp_path / "data" / "cifar10" / "cifar-10-batches-bin"
    ds = load_cifar10(tmp_path / "data" / "cifar10")
    np.testing.assert_array_equal(ds.y_val, labels["test_batch.bin"])
    assert ds.n_train == 20
    # second call: folder exists, nothing fetched (the URL is gone)
    archive.unlink()
    assert download_cifar10(tmp_path / "data" / "cifar10") == folder


def test_download_cifar10_unknown_version(tmp_path):
    with pytest.raises(ValueError, match=r"unknown version 'matlab', expected one of \('python', 'binary'\)"):
        download_cifar10(tmp_path, version="matlab")
