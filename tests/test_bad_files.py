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
