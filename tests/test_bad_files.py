"""Hostile or mistaken files and paths: refused before anything is allocated, naming the culprit."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest

from kfac_ref.data import archive, cifar, idx


class _Reduce:
    """Pickles as a call of ``fn(*args)`` (how a hostile file spells any constructor call)."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _write(tmp_path, obj, name="data_batch_1"):
    path = tmp_path / name
    path.write_bytes(pickle.dumps(obj, protocol=4))
    return path


def test_cifar_pickle_with_zero_strides_posing_as_100000_images_is_refused(tmp_path):
    data = _Reduce(np.ndarray, ((100_000, 3072), np.dtype(np.uint8), b"\x00", 0, (0, 0)))
    labels = _Reduce(np.ndarray, ((100_000,), np.dtype(np.int64), b"\x00" * 8, 0, (0,)))
    path = _write(tmp_path, {b"data": data, b"labels": labels})
    assert path.stat().st_size < 400  # a few hundred bytes declaring 300 MB
    with pytest.raises(
        cifar.UnsafePickleError,
        match=r"data_batch_1.*ndarray\(100000, 3072\) of uint8 needs 307,200,000 bytes "
        r"but the file holds only 1",
    ):
        cifar.read_cifar_batch(path)


def test_cifar_pickle_with_zero_strides_over_a_full_buffer_is_refused(tmp_path):
    data = _Reduce(np.ndarray, ((2, 3072), np.dtype(np.uint8), b"\x00" * 6144, 0, (0, 1)))
    path = _write(tmp_path, {b"data": data, b"labels": [0, 1]})
    with pytest.raises(cifar.UnsafePickleError, match=r"strides \(0, 1\) refused, expected None or the C-order"):
        cifar.read_cifar_batch(path)


def test_cifar_pickle_array_without_buffer_is_refused(tmp_path):
    path = _write(tmp_path, {b"data": _Reduce(np.ndarray, ((100_000, 3072), np.dtype(np.uint8))), b"labels": []})
    with pytest.raises(cifar.UnsafePickleError, match=r"without a bytes buffer.*its data is not in the file"):
        cifar.read_cifar_batch(path)


def test_cifar_pickle_offset_outside_the_buffer_is_refused(tmp_path):
    data = _Reduce(np.ndarray, ((1, 3072), np.dtype(np.uint8), b"\x00" * 3072, 10**9))
    with pytest.raises(cifar.UnsafePickleError, match=r"offset 1000000000 is outside the 3072-byte buffer"):
        cifar.read_cifar_batch(_write(tmp_path, {b"data": data, b"labels": [0]}))


def test_cifar_pickle_with_object_dtype_is_refused(tmp_path):
    obj = np.array([1, "x"], dtype=object)
    with pytest.raises(
        cifar.UnsafePickleError, match=r"dtype object refused: only plain booleans, integers and floats"
    ):
        cifar.read_cifar_batch(_write(tmp_path, {b"data": obj, b"labels": [0]}))


def test_cifar_pickle_with_honest_buffer_view_still_loads(tmp_path):
    raw = bytes(range(256)) * 24  # 2 images × 3072 bytes
    data = _Reduce(np.ndarray, ((2, 3072), np.dtype(np.uint8), raw, 0, None))
    images, labels = cifar.read_cifar_batch(_write(tmp_path, {b"data": data, b"labels": [3, 7]}))
    assert images.shape == (2, 3, 32, 32) and labels.tolist() == [3, 7]
    np.testing.assert_array_equal(images.reshape(-1), np.frombuffer(raw, dtype=np.uint8))


def _idx_header(shape, code=0x08):
    return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)


def test_gzipped_idx_declaring_a_huge_payload_is_refused_before_decompressing(tmp_path):
    path = tmp_path / "bomb.gz"
    path.write_bytes(gzip.compress(_idx_header((60000, 65535, 65535)) + b"\x00" * 1000))
    with pytest.raises(ValueError, match=r"bomb.gz.*header declares 257,690,173,500,000 bytes.*over the limit"):
        idx.read_idx(path)


def test_gzipped_idx_with_trailing_bytes_is_refused_without_reading_them_all(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(_idx_header((2, 2)) + b"\x01" * (10 << 20)))
    with pytest.raises(ValueError, match=r"oversized payload, 5 bytes, expected 4"):
        idx.read_idx(path)


def test_gzipped_idx_still_loads(tmp_path):
    path = tmp_path / "ok.gz"
    path.write_bytes(gzip.compress(_idx_header((2, 2)) + bytes([1, 2, 3, 4])))
    np.testing.assert_array_equal(idx.read_idx(path), [[1, 2], [3, 4]])


def test_a_directory_given_as_an_idx_file_is_named_a_directory(tmp_path):
    with pytest.raises(IsADirectoryError, match=r"IDX file .* is a directory, expected an IDX file"):
        idx.read_idx(tmp_path)


def test_a_file_given_as_the_mnist_folder_is_named_a_file(tmp_path):
    f = tmp_path / "mnist"
    f.write_bytes(b"")
    with pytest.raises(NotADirectoryError, match=r"load_mnist: .*mnist' is a file, expected a folder"):
        idx.load_mnist(f)


def test_a_directory_given_as_a_cifar_batch_is_named_a_directory(tmp_path):
    with pytest.raises(IsADirectoryError, match=r"CIFAR batch .* is a directory, expected a batch file"):
        cifar.read_cifar_batch(tmp_path)


def test_a_file_or_missing_path_given_as_the_cifar_folder(tmp_path):
    f = tmp_path / "cifar"
    f.write_bytes(b"")
    with pytest.raises(NotADirectoryError, match=r"load_cifar10: .*cifar' is a file, expected the folder"):
        cifar.load_cifar10(f)
    with pytest.raises(FileNotFoundError, match=r"load_cifar10: folder .*nowhere' does not exist"):
        cifar.load_cifar10(tmp_path / "nowhere")


def test_a_directory_given_as_an_archive_or_download_target(tmp_path):
    with pytest.raises(IsADirectoryError, match=r"archive .* is a directory, expected a .tar or .tar.gz file"):
        archive.safe_extract(tmp_path, tmp_path / "out")
    with pytest.raises(IsADirectoryError, match=r"download: destination .* is a directory"):
        archive.download("https://example.invalid/x", tmp_path, "0" * 32)


# ---- sizes a file or an argument declares are never trusted -------------------------------
def test_an_idx_file_that_is_a_folder_is_reported_as_a_folder_not_as_missing(tmp_path):
    from tests.test_data_idx import write_mnist

    write_mnist(tmp_path, np.random.default_rng(0))
    (tmp_path / "train-images-idx3-ubyte").unlink()
    (tmp_path / "train-images-idx3-ubyte").mkdir()
    with pytest.raises(IsADirectoryError, match=r"IDX file .*train-images-idx3-ubyte' is a directory"):
        idx.load_mnist(tmp_path)


def test_a_sparse_48_gib_idx_file_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    with open(path, "wb") as f:
        f.write(_idx_header((60000, 28, 28)))
        f.truncate(48 << 30)  # sparse: no disk used, but read_bytes() would ask for 48 GiB
    with pytest.raises(ValueError, match=r"is 51,539,607,552 bytes, over the limit of 2,147,483,648"):
        idx.read_idx(path)


def test_a_sparse_48_gib_cifar_batch_is_refused_before_it_is_read(tmp_path):
    for name in ("data_batch_1.bin", "data_batch_1"):
        path = tmp_path / name
        with open(path, "wb") as f:
            f.truncate(48 << 30)
        with pytest.raises(ValueError, match=r"is 51,539,607,552 bytes, over the limit of 1,073,741,824"):
            cifar.read_cifar_batch(path)


def test_a_cifar_pickle_declaring_48_gib_of_bytes_is_refused_before_allocating(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(b"\x80\x04\x8e" + struct.pack("<Q", 48 << 30) + b"abc")  # BINBYTES8 of 48 GiB, 3 present
    with pytest.raises(ValueError, match=r"could not be read .*expected 51539607552 bytes in a bytes8, but only 3"):
        cifar.read_cifar_batch(path)


def test_check_allocation_refuses_48_gib_with_the_shape_and_size_named():
    from kfac_ref.validate import check_allocation

    with pytest.raises(MemoryError, match=r"K-FAC: the factor A of shape \(80000, 80000\) and float64 needs 47.7 GiB"):
        check_allocation("K-FAC", (80000, 80000), np.float64, what="the factor A", limit=16 << 30)
    assert check_allocation("x", (1000, 1000), np.float32, limit=16 << 30) == 4_000_000


def test_synthetic_data_of_impossible_size_is_refused_before_allocating():
    from kfac_ref.data import make_images

    with pytest.raises(MemoryError, match=r"make_images: x of shape \(1000000, 3, 2000, 2000\) and float64 needs"):
        make_images(1_000_000, 3, 2000, 2000, 10, rng=0)
