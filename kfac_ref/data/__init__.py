"""Data: every loader returns a checked, standardised :class:`Dataset`.

    module       idea
    ---------    ------------------------------------------------------------
    dataset      the Dataset container; standardisation with training statistics
    digits       scikit-learn's 8×8 digits (bundled, the default)
    idx          MNIST / Fashion-MNIST from IDX files
    cifar        CIFAR-10, binary or python (restricted unpickler) version
    archive      download with size and MD5 checks; strict gzip; tar extraction that refuses escapes
    downloads    the published files of Fashion-MNIST, MNIST, CIFAR-10 (`kfac-ref download`)
    synthetic    seeded toy problems for tests and notebooks
    batches      mini-batches from an explicit random generator

Where the files go and where they come from: data/README.md.
"""

from __future__ import annotations

from kfac_ref.data.archive import (
    CIFAR10_URLS,
    DownloadError,
    check_gzip_file,
    check_tar_members,
    download,
    download_cifar10,
    file_md5,
    gunzip,
    safe_extract,
)
from kfac_ref.data.batches import BatchStream, epoch_order, minibatches
from kfac_ref.data.cifar import (
    RestrictedUnpickler,
    UnsafePickleError,
    load_cifar10,
    read_cifar_batch,
    read_cifar_binary_batch,
    read_cifar_python_batch,
)
from kfac_ref.data.dataset import Dataset, standardise
from kfac_ref.data.digits import load_digits, stratified_split
from kfac_ref.data.downloads import download_dataset
from kfac_ref.data.idx import load_mnist, read_idx
from kfac_ref.data.synthetic import lognormal_regression, make_classification, make_images, make_regression

DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10")
_IDX_FILES = (
    "the four IDX files train-images-idx3-ubyte, train-labels-idx1-ubyte, "
    "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, optionally .gz"
)
_FOLDER_HINT = {
    "mnist": f"data/mnist ({_IDX_FILES}; `kfac-ref download mnist data/mnist` fetches them)",
    "fashion-mnist": f"data/fashion-mnist ({_IDX_FILES}; `kfac-ref download fashion-mnist "
    "data/fashion-mnist` fetches them)",
    "cifar10": "data/cifar10 (holding cifar-10-batches-bin or cifar-10-batches-py; "
    "`kfac-ref download cifar10 data/cifar10` fetches it)",
}


def load_dataset(name: str, data_dir=None, **kwargs) -> Dataset:
    """Load a dataset by name: 'digits' (needs no files), 'mnist', 'fashion-mnist' or 'cifar10' (need data_dir).

    The Dataset's ``name`` is this name.  Extra keyword arguments go to the
    loader (load_digits, load_mnist, load_cifar10), e.g. dtype=np.float32, flatten=True.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: expected one of {DATASETS}")
    if name == "digits":
        return load_digits(**kwargs)
    if data_dir is None:
        raise ValueError(
            f"load_dataset({name!r}) needs data_dir: the folder {_FOLDER_HINT[name]}; "
            f"see data/README.md for where to get the files"
        )
    if name in ("mnist", "fashion-mnist"):  # the same format and file names
        return load_mnist(data_dir, name=name, **kwargs)
    return load_cifar10(data_dir, **kwargs)


__all__ = [
    "CIFAR10_URLS",
    "DATASETS",
    "BatchStream",
    "Dataset",
    "DownloadError",
    "RestrictedUnpickler",
    "UnsafePickleError",
    "check_gzip_file",
    "check_tar_members",
    "download",
    "download_cifar10",
    "download_dataset",
    "epoch_order",
    "file_md5",
    "gunzip",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_mnist",
    "lognormal_regression",
    "make_classification",
    "make_images",
    "make_regression",
    "minibatches",
    "read_cifar_batch",
    "read_cifar_binary_batch",
    "read_cifar_python_batch",
    "read_idx",
    "safe_extract",
    "standardise",
    "stratified_split",
]
