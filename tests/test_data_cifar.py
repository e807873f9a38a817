"""CIFAR-10 loading, on small batches written here in both official formats."""

import os
import pickle
import re
import struct
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

import kfac_ref.data as data_pkg
from kfac_ref.data import load_cifar10, load_dataset, read_cifar_batch

TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
N_PER_FILE = 10


def make_batch(rng, n=N_PER_FILE):
    images = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)  # (n, 3, 32, 32)
    labels = rng.integers(0, 10, size=n)  # (n,)
    return images, labels


def write_binary(path, images, labels):
    """Records of 1 label byte + R plane + G plane + B plane (row-major 32×32 each)."""
    records = np.concatenate([np.asarray(labels, np.uint8)[:, None], images.reshape(len(labels), 3072)], axis=1)
    path.write_bytes(records.astype(np.uint8).tobytes())


def write_python(path, images, labels, protocol=4):
    """The python version's dict, pickled (protocol >= 3 keeps bytes keys without _codecs)."""
    batch = {
        b"batch_label": b"test batch",
        b"labels": [int(v) for v in labels],
        b"data": images.reshape(len(labels), 3072),
        b"filenames": [b"x.png"] * len(labels),
    }
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=protocol)


def write_cifar(folder, rng, version="binary", n=N_PER_FILE):
    """A miniature cifar-10-batches-{bin,py} folder; returns the raw (images, labels) per file."""
    sub = folder / ("cifar-10-batches-bin" if version == "binary" else "cifar-10-batches-py")
    sub.mkdir(parents=True)
    ext, write = (".bin", write_binary) if version == "binary" else ("", write_python)
    raw = {}
    for name in TRAIN_FILES + ["test_batch"]:
        raw[name] = make_batch(rng, n)
        write(sub / (name + ext), *raw[name])
    return raw


# ---- single batches ----------------------------------------------------------------------
def test_binary_batch_round_trips_exactly(tmp_path):
    images, labels = make_batch(np.random.default_rng(0), n=7)
    write_binary(tmp_path / "b.bin", images, labels)
    got_images, got_labels = read_cifar_batch(tmp_path / "b.bin")
    assert got_images.dtype == np.uint8 and got_images.shape == (7, 3, 32, 32)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_binary_record_layout_is_label_then_rgb_planes(tmp_path):
    record = bytes([3]) + bytes([10]) * 1024 + bytes([20]) * 1024 + bytes([30]) * 1023 + bytes([99])
    (tmp_path / "one.bin").write_bytes(record)
    images, labels = read_cifar_batch(tmp_path / "one.bin")
    assert labels.tolist() == [3]
    assert (images[0, 0] == 10).all() and (images[0, 1] == 20).all()
    assert images[0, 2, 31, 31] == 99 and images[0, 2, 0, 0] == 30


@pytest.mark.parametrize("protocol", [3, 4])
def test_python_batch_round_trips_exactly(tmp_path, protocol):
    images, labels = make_batch(np.random.default_rng(1), n=5)
    write_python(tmp_path / "data_batch_1", images, labels, protocol=protocol)
    got_images, got_labels = read_cifar_batch(tmp_path / "data_batch_1")
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    assert got_labels.dtype == np.int64


def py2_string(b: bytes) -> bytes:
    """A Python-2 str in pickle protocol 2: SHORT_BINSTRING or BINSTRING."""
    return (b"U" + bytes([len(b)]) + b) if len(b) < 256 else (b"T" + struct.pack("<i", len(b)) + b)


def py2_era_pickle(data: np.ndarray, labels) -> bytes:
    """Opcode by opcode, the pickle Python 2 and NumPy 1.x wrote for the official files.

    {'data': ndarray uint8 (n, 3072), 'labels': [int, ...]}, with the array rebuilt by
    numpy.core.multiarray._reconstruct, ndarray.__setstate__ and a pickled dtype('u1').
    """
    n = data.shape[0]
    out = b"\x80\x02}(" + py2_string(b"data")
    out += b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n" + b"K\x00\x85" + py2_string(b"b") + b"\x87R"
    out += b"(K\x01" + b"J" + struct.pack("<i", n) + b"M\x00\x0c\x86"  # state: version 1, shape (n, 3072)
    out += b"cnumpy\ndtype\n" + py2_string(b"u1") + b"K\x00K\x01\x87R"  # dtype('u1', 0, 1)
    out += b"(K\x03" + py2_string(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    out += b"\x89" + py2_string(data.tobytes()) + b"tb"  # not Fortran, raw bytes
    out += py2_string(b"labels") + b"](" + b"".join(b"K" + bytes([int(v)]) for v in labels) + b"e"
    return out + b"u."


def test_python2_era_pickle_like_the_official_files(tmp_path):
    images, labels = make_batch(np.random.default_rng(9), n=3)
    (tmp_path / "data_batch_1").write_bytes(py2_era_pickle(images.reshape(3, 3072), labels))
    got_images, got_labels = read_cifar_batch(tmp_path / "data_batch_1")
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_truncated_binary_batch_is_refused_with_path(tmp_path):
    images, labels = make_batch(np.random.default_rng(2), n=2)
    write_binary(tmp_path / "cut.bin", images, labels)
    (tmp_path / "cut.bin").write_bytes((tmp_path / "cut.bin").read_bytes()[:-1])
    with pytest.raises(ValueError, match=r"cut.bin.*6145 bytes is not a positive multiple of 3073"):
        read_cifar_batch(tmp_path / "cut.bin")


def test_binary_label_out_of_range_is_refused(tmp_path):
    (tmp_path / "bad.bin").write_bytes(bytes([10]) + bytes(3072))
    with pytest.raises(ValueError, match=r"bad.bin.*1 labels outside \[0, 10\)"):
        read_cifar_batch(tmp_path / "bad.bin")


def test_missing_batch_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_batch_9"):
        read_cifar_batch(tmp_path / "data_batch_9")


# ---- the restricted unpickler ------------------------------------------------------------
class RunsAShellCommand:
    def __reduce__(self):
        return os.system, ("echo pwned",)


class MakesAFolder:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


def test_malicious_pickle_is_refused_by_name(tmp_path):
    path = tmp_path / "data_batch_1"
    with open(path, "wb") as f:
        pickle.dump({b"data": RunsAShellCommand(), b"labels": []}, f, protocol=4)
    with pytest.raises(ValueError, match=r"data_batch_1.*refused to load global '(os|posix|nt)\.system'"):
        read_cifar_batch(path)


def test_malicious_pickle_has_no_side_effect(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "test_batch"
    with open(path, "wb") as f:
        pickle.dump(MakesAFolder(str(marker)), f, protocol=2)
    with pytest.raises(ValueError, match=r"refused to load global '(os|posix|nt)\.mkdir'"):
        read_cifar_batch(path)
    assert not marker.exists()


def test_harmless_but_unlisted_globals_are_refused_too(tmp_path):
    path = tmp_path / "data_batch_1"
    with open(path, "wb") as f:
        pickle.dump(OrderedDict(data=1), f, protocol=4)
    with pytest.raises(ValueError, match=r"refused to load global 'collections.OrderedDict'; only numpy"):
        read_cifar_batch(path)


@pytest.mark.parametrize(
    "content, message",
    [
        ([1, 2, 3], "holds a list, expected a dict"),
        ({b"data": np.zeros((2, 3072), np.uint8)}, "keys .*expected b'data' and b'labels'"),
        (
            {b"data": np.zeros((2, 3071), np.uint8), b"labels": [0, 1]},
            r"b'data' is an array of uint8 with shape \(2, 3071\)",
        ),
        ({b"data": np.zeros((2, 3072), np.int16), b"labels": [0, 1]}, "b'data' is an array of int16"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, r"\(1,\) labels for 2 images"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 12]}, r"1 labels outside \[0, 10\)"),
    ],
)
def test_malformed_python_batches_are_refused_with_path(tmp_path, content, message):
    path = tmp_path / "data_batch_3"
    with open(path, "wb") as f:
        pickle.dump(content, f, protocol=4)
    with pytest.raises(ValueError, match=rf"data_batch_3.*{message}"):
        read_cifar_batch(path)


def test_truncated_pickle_is_refused_with_path(tmp_path):
    images, labels = make_batch(np.random.default_rng(3), n=2)
    write_python(tmp_path / "data_batch_2", images, labels)
    path = tmp_path / "data_batch_2"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ValueError, match=r"data_batch_2.*could not be read"):
        read_cifar_batch(path)


def test_package_never_unpickles_directly_and_always_filters_tar():
    """The rules the repository hooks enforce, checked on the data package's source."""
    for source in Path(data_pkg.__file__).parent.glob("*.py"):
        text = source.read_text()
        assert not re.search(r"pickle\.loads?\b", text), source
        assert "allow_pickle=True" not in text, source
        for call in re.findall(r"\.extractall\([^)]*\)", text):
            assert "filter=" in call, (source, call)


# ---- load_cifar10 ------------------------------------------------------------------------
def _standardised(raw, names):
    """Independent reference: scale, then per-channel training μ, σ over (N, H, W)."""
    train = np.concatenate([raw[n][0] for n in TRAIN_FILES]) / 255.0  # (N, 3, 32, 32)
    mu = train.mean(axis=(0, 2, 3))[None, :, None, None]
    sigma = train.std(axis=(0, 2, 3))[None, :, None, None]
    return (np.concatenate([raw[n][0] for n in names]) / 255.0 - mu) / sigma


@pytest.mark.parametrize("version", ["binary", "python"])
def test_load_cifar10_values_and_labels(tmp_path, version):
    raw = write_cifar(tmp_path, np.random.default_rng(4), version)
    ds = load_cifar10(tmp_path)
    assert ds.name == "cifar10" and ds.num_classes == 10
    assert ds.x_train.shape == (50, 3, 32, 32) and ds.x_val.shape == (10, 3, 32, 32)
    np.testing.assert_array_equal(ds.y_train, np.concatenate([raw[n][1] for n in TRAIN_FILES]))
    np.testing.assert_array_equal(ds.y_val, raw["test_batch"][1])
    np.testing.assert_allclose(ds.x_train, _standardised(raw, TRAIN_FILES), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ds.x_val, _standardised(raw, ["test_batch"]), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ds.x_train.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(ds.x_train.std(axis=(0, 2, 3)), 1, rtol=1e-12)


def test_binary_and_python_versions_agree(tmp_path):
    rng_state = np.random.default_rng(5)
    raw = write_cifar(tmp_path / "bin", rng_state, "binary")
    py_dir = tmp_path / "py" / "cifar-10-batches-py"
    py_dir.mkdir(parents=True)
    for name, (images, labels) in raw.items():
        write_python(py_dir / name, images, labels)
    a, b = load_cifar10(tmp_path / "bin"), load_cifar10(tmp_path / "py")
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_val, b.y_val)


def test_folder_may_be_the_batches_folder_itself(tmp_path):
    raw = write_cifar(tmp_path, np.random.default_rng(6))
    ds = load_dataset("cifar10", data_dir=tmp_path / "cifar-10-batches-bin", flatten=True, dtype=np.float32)
    assert ds.x_train.shape == (50, 3072) and ds.x_train.dtype == np.float32
    np.testing.assert_array_equal(ds.y_val, raw["test_batch"][1])


def test_max_train_reads_only_what_it_needs(tmp_path):
    raw = write_cifar(tmp_path, np.random.default_rng(7))
    (tmp_path / "cifar-10-batches-bin" / "data_batch_5.bin").unlink()  # never read for 15 images
    ds = load_cifar10(tmp_path, max_train=15)
    assert ds.n_train == 15 and ds.n_val == 10
    np.testing.assert_array_equal(ds.y_train, np.concatenate([raw["data_batch_1"][1], raw["data_batch_2"][1][:5]]))


def test_missing_folder_says_what_is_expected(tmp_path):
    with pytest.raises(
        FileNotFoundError,
        match=r"no CIFAR-10 batches in .*'cifar-10-batches-bin'.*"
        r"'cifar-10-batches-py'.*cs.toronto.edu",
    ):
        load_cifar10(tmp_path)


def test_missing_training_batch_is_named(tmp_path):
    write_cifar(tmp_path, np.random.default_rng(8))
    (tmp_path / "cifar-10-batches-bin" / "data_batch_4.bin").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_4.bin"):
        load_cifar10(tmp_path)


def test_bad_max_train_is_refused(tmp_path):
    with pytest.raises(ValueError, match="max_train must be a positive integer"):
        load_cifar10(tmp_path, max_train=0)
