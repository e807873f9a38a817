"""Data: every loader returns a checked, standardised :class:`Dataset`.

    module       idea
    ---------    ------------------------------------------------------------
    dataset      the Dataset container; standardisation with training statistics
    digits       scikit-learn's 8×8 digits (bundled, the default)
    idx          MNIST / Fashion-MNIST from IDX files
    cifar        CIFAR-10, binary or python (restricted unpickler) version
    archive      download with MD5 check; tar extraction that refuses escapes
    synthetic    seeded toy problems for tests and notebooks
    batches      mini-batches from an explicit random generator

Where the files go and where they come from: data/README.md.
"""

from __future__ import annotations

from kfac_ref.data.archive import CIFAR10_URLS, check_tar_members, download, download_cifar10, file_md5, safe_extract
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
from kfac_ref.data.idx import load_mnist, read_idx
from kfac_ref.data.synthetic import lognormal_regression, make_classification, make_images, make_regression

DATASETS = ("digits", "mnist", "cifar10")
_FOLDER_HINT = {
    "mnist": "data/mnist (the four IDX files train-images-idx3-ubyte, train-labels-idx1-ubyte, "
    "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, optionally .gz; data/fashion-mnist "
    "works the same way)",
    "cifar10": "data/cifar10 (holding cifar-10-batches-bin or cifar-10-batches-py; "
    "kfac_ref.data.download_cifar10('data/cifar10') fetches it)",
}


def load_dataset(name: str, data_dir=None, **kwargs) -> Dataset:
    """Load a dataset by name: 'digits' (needs no files), 'mnist' or 'cifar10' (need data_dir).

    Extra keyword arguments go to the loader (load_digits, load_mnist, load_cifar10),
    e.g. dtype=np.float32, flatten=True.
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
    if name == "mnist":
        return load_mnist(data_dir, **kwargs)
    return load_cifar10(data_dir, **kwargs)


__all__ = [
    "CIFAR10_URLS",
    "DATASETS",
    "BatchStream",
    "Dataset",
    "RestrictedUnpickler",
    "UnsafePickleError",
    "check_tar_members",
    "download",
    "download_cifar10",
    "epoch_order",
    "file_md5",
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
