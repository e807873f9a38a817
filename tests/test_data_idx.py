"""IDX reading and the MNIST loader, on small files written here in the real format."""

import gzip
import struct

import numpy as np
import pytest

from kfac_ref.data import load_dataset, load_mnist, read_idx

# dtype code -> big-endian struct/NumPy type, written independently of the package
CODES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def idx_bytes(array: np.ndarray, code: int) -> bytes:
    """The IDX encoding of `array`: 0, 0, code, ndim, dims as big-endian uint32, data."""
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=CODES[code]).tobytes()


def write_idx(path, array, code=0x08, compress=False):
    data = idx_bytes(np.asarray(array), code)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def write_mnist(folder, rng, n_train=6, n_val=4, h=7, w=5, compress=False, dotted=False, max_label=9):
    """Four small IDX files named like MNIST's; returns the raw arrays written."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = {
        "train-images": rng.integers(0, 256, size=(n_train, h, w), dtype=np.uint8),
        "train-labels": rng.integers(0, max_label + 1, size=n_train, dtype=np.uint8),
        "t10k-images": rng.integers(0, 256, size=(n_val, h, w), dtype=np.uint8),
        "t10k-labels": rng.integers(0, max_label + 1, size=n_val, dtype=np.uint8),
    }
    for stem, array in raw.items():
        kind = "idx3-ubyte" if "images" in stem else "idx1-ubyte"
        name = f"{stem}.{kind}" if dotted else f"{stem}-{kind}"
        write_idx(folder / (name + (".gz" if compress else "")), array, compress=compress)
    return raw


# ---- read_idx ----------------------------------------------------------------------------
@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("code", sorted(CODES))
def test_read_idx_round_trips_every_dtype(tmp_path, code, compress):
    rng = np.random.default_rng(code)
    array = (
        (rng.standard_normal((3, 4, 2)) * 100).astype(CODES[code])
        if code >= 0x0D
        else rng.integers(-100 if code != 0x08 else 0, 100, size=(3, 4, 2)).astype(CODES[code])
    )
    out = read_idx(write_idx(tmp_path / "a.idx", array, code, compress))
    assert out.shape == (3, 4, 2) and out.dtype.isnative
    assert out.dtype == np.dtype(CODES[code]).newbyteorder("=")
    np.testing.assert_array_equal(out, array)


def test_read_idx_known_bytes(tmp_path):
    # hand-written: shape (2, 3) of int16, values chosen to expose byte order
    data = bytes([0, 0, 0x0B, 2, 0, 0, 0, 2, 0, 0, 0, 3]) + struct.pack(">6h", 1, 256, -2, 300, 0, -32768)
    (tmp_path / "h").write_bytes(data)
    np.testing.assert_array_equal(read_idx(tmp_path / "h"), [[1, 256, -2], [300, 0, -32768]])


def test_gzip_is_detected_by_magic_not_by_name(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    gz_without_suffix = tmp_path / "images"
    gz_without_suffix.write_bytes(gzip.compress(idx_bytes(array, 0x08)))
    plain_with_suffix = tmp_path / "images.gz"
    plain_with_suffix.write_bytes(idx_bytes(array, 0x08))
    np.testing.assert_array_equal(read_idx(gz_without_suffix), array)
    np.testing.assert_array_equal(read_idx(plain_with_suffix), array)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope-idx1-ubyte"):
        read_idx(tmp_path / "nope-idx1-ubyte")


@pytest.mark.parametrize(
    "data, message",
    [
        (bytes([1, 0, 8, 1, 0, 0, 0, 1, 7]), "bad magic 0100, expected 0000"),
        (bytes([0, 0, 0x0A, 1, 0, 0, 0, 1, 7]), "unknown dtype code 0x0A, expected one of 0x08"),
        (bytes([0, 0, 8]), "truncated header, 3 bytes"),
        (bytes([0, 0, 8, 2, 0, 0, 0, 1]), "truncated header, 8 bytes, expected 12 for 2 dimensions"),
        (bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2, 3]), r"truncated payload, 3 bytes, expected 5 for shape \(5,\)"),
        (bytes([0, 0, 8, 1, 0, 0, 0, 2, 1, 2, 3]), r"oversized payload, 3 bytes, expected 2 for shape \(2,\)"),
        (bytes([0, 0, 0x0C, 1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0]), "truncated payload, 6 bytes, expected 8"),
        (b"\x1f\x8b" + b"not really gzip", "corrupt gzip stream"),
    ],
)
def test_malformed_files_are_refused_with_path(tmp_path, data, message):
    path = tmp_path / "broken-idx"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=rf"broken-idx.*{message}"):
        read_idx(path)


def test_truncated_gzip_is_refused(tmp_path):
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((10, 10), np.uint8), 0x08))[:-10])
    with pytest.raises(ValueError, match="cut.gz"):
        read_idx(path)


# ---- load_mnist --------------------------------------------------------------------------
def _reference(raw, key):
    """Independent reference: scale to [0, 1], standardise with one training μ, σ."""
    train = raw["train-images"] / 255.0
    return (raw[key] / 255.0 - train.mean()) / train.std()


@pytest.mark.parametrize("compress, dotted", [(False, False), (True, False), (True, True), (False, True)])
def test_load_mnist_values_labels_and_shapes(tmp_path, compress, dotted):
    raw = write_mnist(tmp_path / "mnist", np.random.default_rng(0), compress=compress, dotted=dotted)
    ds = load_mnist(tmp_path / "mnist")
    assert ds.name == "mnist" and ds.num_classes == 10
    assert ds.x_train.shape == (6, 1, 7, 5) and ds.x_val.shape == (4, 1, 7, 5)
    np.testing.assert_array_equal(ds.y_train, raw["train-labels"])
    np.testing.assert_array_equal(ds.y_val, raw["t10k-labels"])
    assert ds.y_train.dtype == np.int64
    np.testing.assert_allclose(ds.x_train[:, 0], _reference(raw, "train-images"), rtol=1e-12)
    np.testing.assert_allclose(ds.x_val[:, 0], _reference(raw, "t10k-images"), rtol=1e-12)
    assert abs(ds.x_train.mean()) < 1e-12 and abs(ds.x_train.std() - 1) < 1e-12


def test_load_mnist_flatten_float32_and_by_name(tmp_path):
    raw = write_mnist(tmp_path, np.random.default_rng(1), h=28, w=28, n_train=3, n_val=2)
    ds = load_dataset("mnist", data_dir=tmp_path, flatten=True, dtype=np.float32)
    assert ds.x_train.shape == (3, 784) and ds.x_train.dtype == np.float32
    np.testing.assert_allclose(ds.x_val, _reference(raw, "t10k-images").reshape(2, 784), rtol=1e-5, atol=1e-5)


def test_fashion_mnist_folder_and_name(tmp_path):
    write_mnist(tmp_path / "fashion-mnist", np.random.default_rng(2), compress=True)
    assert load_mnist(tmp_path / "fashion-mnist", name="fashion-mnist").name == "fashion-mnist"


def test_more_than_ten_classes_are_counted(tmp_path):
    raw = write_mnist(tmp_path, np.random.default_rng(3), n_train=40, max_label=12)
    expected = max(raw["train-labels"].max(), raw["t10k-labels"].max()) + 1
    assert expected > 10 and load_mnist(tmp_path).num_classes == expected


def test_missing_folder_says_what_is_expected_and_where_to_get_it(tmp_path):
    with pytest.raises(
        FileNotFoundError,
        match=r"'.*no-such-dir' does not exist.*train-images-idx3-ubyte.*"
        r"t10k-labels-idx1-ubyte.*yann.lecun.com.*fashion-mnist",
    ):
        load_mnist(tmp_path / "no-such-dir")


def test_missing_file_is_named(tmp_path):
    write_mnist(tmp_path, np.random.default_rng(4))
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks t10k-labels-idx1-ubyte \(optionally .gz"):
        load_mnist(tmp_path)


def test_image_label_count_mismatch_names_both_files(tmp_path):
    write_mnist(tmp_path, np.random.default_rng(5))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(5, np.uint8))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte' has 6 images but .*train-labels-idx1-ubyte' has 5"):
        load_mnist(tmp_path)


def test_images_of_wrong_kind_are_refused(tmp_path):
    write_mnist(tmp_path, np.random.default_rng(6))
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((6, 7, 5), np.float32), code=0x0D)
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte' holds float32.*expected unsigned bytes"):
        load_mnist(tmp_path)
