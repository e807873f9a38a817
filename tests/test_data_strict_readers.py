"""Strict readers: a gzip stream without its trailer, a tar cut at a member boundary, archive bombs.

A lenient reader accepts all of these quietly (Python's own zlib and tarfile
do, when asked for no more than the data); each is refused here by name, before
anything is written.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import zlib

import numpy as np
import pytest

from kfac_ref.data import archive, gunzip, read_idx, safe_extract

IDX = bytes([0, 0, 0x08, 2, 0, 0, 0, 3, 0, 0, 0, 4]) + bytes(range(12))  # a (3, 4) uint8 IDX file


# ---- gzip ---------------------------------------------------------------------------------
@pytest.mark.parametrize("cut", [1, 4, 8])
def test_a_gzip_stream_without_its_trailer_is_refused(tmp_path, cut):
    """The deflate data is complete, only (part of) the 8-byte CRC-32 + length trailer is missing."""
    whole = gzip.compress(IDX)
    path = tmp_path / "images.gz"
    path.write_bytes(whole[:-cut])
    assert zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(whole[:-cut]) == IDX  # what a lenient reader sees
    with pytest.raises(ValueError, match=r"images.gz.*ends before its trailer \(CRC-32 and length\).*truncated"):
        read_idx(path)
    with pytest.raises(ValueError, match=r"ends before its trailer"):
        gunzip(whole[:-cut], "x", 10**6)


def test_a_gzip_stream_with_a_wrong_checksum_is_refused(tmp_path):
    data = bytearray(gzip.compress(IDX))
    data[-8] ^= 0xFF  # the CRC-32
    (tmp_path / "crc.gz").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"crc.gz.*corrupt gzip stream \(.*incorrect data check"):
        read_idx(tmp_path / "crc.gz")


def test_bytes_after_the_gzip_stream_are_refused_but_zero_padding_and_members_are_not():
    whole = gzip.compress(IDX)
    with pytest.raises(ValueError, match=r"bytes after the end of the gzip stream"):
        gunzip(whole + b"\0\0junk", "x", 10**6)
    with pytest.raises(ValueError, match=r"corrupt gzip stream"):
        gunzip(whole + b"junk", "x", 10**6)
    assert gunzip(whole + b"\0" * 100, "x", 10**6) == IDX
    assert gunzip(gzip.compress(IDX[:5]) + gzip.compress(IDX[5:]), "x", 10**6) == IDX  # two members, as gzip -c a b


def test_gunzip_refuses_more_output_than_its_limit_while_decompressing():
    bomb = gzip.compress(b"\0" * (20 << 20))  # 20 MiB of zeros in ~20 KB
    assert len(bomb) < 30_000
    with pytest.raises(ValueError, match=r"decompresses to more than 1,048,576 bytes"):
        gunzip(bomb, "bomb", 1 << 20)
    assert len(gunzip(bomb, "bomb", 1 << 20, over_limit="stop")) == (1 << 20) + 1


# ---- tar ----------------------------------------------------------------------------------
def _tar_bytes(members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


MEMBERS = [("pkg/a.bin", b"a" * 700), ("pkg/b.bin", b"b" * 100), ("pkg/c.bin", b"c" * 300)]


def _boundary_after(n_members: int) -> int:
    """Byte offset just after the n-th member's (padded) data: a cut there is a valid-looking shorter tar."""
    offset = 0
    for _, data in MEMBERS[:n_members]:
        offset += 512 + -(-len(data) // 512) * 512
    return offset


@pytest.mark.parametrize("compress", [False, True])
def test_a_tar_cut_at_a_member_boundary_is_refused(tmp_path, compress):
    cut = _tar_bytes(MEMBERS)[: _boundary_after(2)]
    with tarfile.open(fileobj=io.BytesIO(cut)) as tar:
        assert [m.name for m in tar.getmembers()] == ["pkg/a.bin", "pkg/b.bin"]  # tarfile ends quietly
    path = tmp_path / ("cut.tar.gz" if compress else "cut.tar")
    path.write_bytes(gzip.compress(cut) if compress else cut)
    target = tmp_path / "target"
    with pytest.raises(ValueError, match=r"ends after member 'pkg/b.bin' without the end-of-archive block"):
        safe_extract(path, target)
    assert not target.exists()


def test_a_tar_gz_whose_gzip_stream_is_cut_is_refused(tmp_path):
    whole = gzip.compress(_tar_bytes(MEMBERS))
    (tmp_path / "cut.tar.gz").write_bytes(whole[:-4])
    with pytest.raises(ValueError, match=r"cut.tar.gz.*ends before its trailer"):
        safe_extract(tmp_path / "cut.tar.gz", tmp_path / "target")
    assert not (tmp_path / "target").exists()


def test_safe_extract_limits_the_member_count(tmp_path):
    (tmp_path / "many.tar").write_bytes(_tar_bytes([(f"d/{i}", b"x") for i in range(30)]))
    with pytest.raises(ValueError, match=r"more than 20 members"):
        safe_extract(tmp_path / "many.tar", tmp_path / "t", max_members=20)
    assert len(safe_extract(tmp_path / "many.tar", tmp_path / "t", max_members=30)) == 1


def test_safe_extract_limits_the_total_size(tmp_path):
    (tmp_path / "big.tar.gz").write_bytes(gzip.compress(_tar_bytes([("d/a", b"\0" * 6000), ("d/b", b"\0" * 6000)])))
    with pytest.raises(ValueError, match=r"more than 10,000 bytes"):
        safe_extract(tmp_path / "big.tar.gz", tmp_path / "t", max_bytes=10_000)
    assert not (tmp_path / "t").exists()


def _sparse_tar(real_size: int) -> bytes:
    """A GNU sparse member: 512 bytes stored, declared to unpack to real_size bytes (mostly holes)."""
    info = tarfile.TarInfo("pkg/huge.bin")
    info.type = tarfile.GNUTYPE_SPARSE
    info.size = 512
    header = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))
    header[386:398] = tarfile.itn(real_size - 512, 12, tarfile.GNU_FORMAT)  # one sparse chunk: its offset
    header[398:410] = tarfile.itn(512, 12, tarfile.GNU_FORMAT)  # and its length
    header[483:495] = tarfile.itn(real_size, 12, tarfile.GNU_FORMAT)  # the size once unpacked
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header) + b"x" * 512 + b"\0" * 1024


def test_a_2_kib_tar_declaring_a_4_gib_sparse_file_is_refused(tmp_path):
    data = _sparse_tar(4 << 30)
    assert len(data) == 2048
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        (member,) = tar.getmembers()
        assert member.issparse() and member.size == 4 << 30  # what extraction would create
    (tmp_path / "sparse.tar").write_bytes(data)
    target = tmp_path / "target"
    with pytest.raises(ValueError, match=r"'pkg/huge.bin' is a sparse file"):
        safe_extract(tmp_path / "sparse.tar", target)
    assert not target.exists()


def test_a_declared_size_beyond_the_bytes_present_is_not_believed(tmp_path):
    """A header saying 100 MB with 1 KB behind it: refused as truncated, nothing allocated or written."""
    info = tarfile.TarInfo("pkg/liar.bin")
    info.size = 100_000_000
    data = info.tobuf(format=tarfile.GNU_FORMAT) + b"y" * 1024
    (tmp_path / "liar.tar").write_bytes(data)
    with pytest.raises(ValueError, match=r"liar.tar.*(truncated|end-of-archive)"):
        safe_extract(tmp_path / "liar.tar", tmp_path / "target")
    assert not (tmp_path / "target").exists()


def test_a_complete_archive_still_extracts_exactly(tmp_path):
    (tmp_path / "ok.tar.gz").write_bytes(gzip.compress(_tar_bytes(MEMBERS)))
    assert safe_extract(tmp_path / "ok.tar.gz", tmp_path / "t") == [tmp_path / "t" / "pkg"]
    for name, data in MEMBERS:
        assert (tmp_path / "t" / name).read_bytes() == data
    assert archive.check_gzip_file(tmp_path / "ok.tar.gz", "ok", 10**6) == len(_tar_bytes(MEMBERS))
    assert np.array_equal(sorted(p.name for p in (tmp_path / "t").iterdir()), ["pkg"])


@pytest.mark.parametrize("step", [1, 7, 258, 1 << 20])
def test_strict_gunzip_equals_the_standard_library_on_any_chunking_and_output_step(step):
    """Reference: gzip.decompress.  Runs of zeros (long matches), noise and small alphabets; input in
    chunks of 1-49 bytes; output at most `step` bytes per zlib call (a match may straddle two calls)."""
    rng = np.random.default_rng(step)
    for _ in range(40):
        parts = []
        for _ in range(rng.integers(1, 6)):
            n, kind = int(rng.integers(0, 5000)), rng.integers(0, 3)
            parts.append(
                b"\0" * n if kind == 0 else rng.integers(0, 256 if kind == 1 else 4, n).astype(np.uint8).tobytes()
            )
        raw = b"".join(parts)
        gz = gzip.compress(raw)
        size = int(rng.integers(1, 50))
        out = bytearray()
        n = archive._inflate([gz[i : i + size] for i in range(0, len(gz), size)], "t", 10**9, out.extend, step=step)
        assert bytes(out) == gzip.decompress(gz) == raw and n == len(raw)
