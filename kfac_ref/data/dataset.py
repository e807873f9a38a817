"""The Dataset container every loader returns, and the standardisation they share.

A :class:`Dataset` is a frozen pair of splits (training and validation) plus the
number of classes.  It checks itself on construction, so a model never sees a
label out of range, a NaN pixel, or an image without its label.

Shapes::

    x_train : (N_train, *input_shape)   float; images are (N, C, H, W)
    y_train : (N_train,)                int64 class indices in [0, num_classes)
    x_val   : (N_val, *input_shape)
    y_val   : (N_val,)

A reconstruction dataset (``task="reconstruction"``, :meth:`Dataset.reconstruction`) has
instead y : (N, D) float targets in [0, 1] — the flattened inputs an autoencoder reproduces
— and num_classes = D, the number of outputs.

    >>> import numpy as np
    >>> ds = Dataset("toy", np.zeros((4, 1, 2, 2)), np.array([0, 1, 0, 1]),
    ...              np.ones((2, 1, 2, 2)), np.array([1, 0]), num_classes=2)
    >>> ds.input_shape, ds.flat().input_shape
    ((1, 2, 2), (4,))
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from kfac_ref.backend import device_of, get_xp


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A classification dataset: a training split, a validation split, K classes (or D outputs)."""

    name: str  # e.g. "digits", "mnist", "cifar10"
    x_train: object  # (N_train, *input_shape) float array (NumPy or CuPy)
    y_train: object  # (N_train,) integer labels
    x_val: object  # (N_val, *input_shape) float array
    y_val: object  # (N_val,) integer labels
    num_classes: int  # K: labels lie in [0, K); reconstruction: D, the outputs per sample
    task: str = "classification"  # or "reconstruction": y (N, D) in [0, 1]

    def __post_init__(self):
        who = f"Dataset {self.name!r}"
        if not isinstance(self.num_classes, (int, np.integer)) or self.num_classes < 1:
            raise ValueError(f"{who}: num_classes must be a positive integer, got {self.num_classes!r}")
        if self.task not in TASKS:
            raise ValueError(f"{who}: task must be one of {TASKS}, got {self.task!r}")
        check = _check_split if self.task == "classification" else _check_reconstruction
        for split in ("train", "val"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            check(who, split, x, y, self.num_classes)
        if self.x_train.shape[0] == 0:
            raise ValueError(
                f"{who}: the training split has no samples (x_train of shape {tuple(self.x_train.shape)}), "
                f"expected at least one"
            )
        if self.x_train.shape[1:] != self.x_val.shape[1:]:
            raise ValueError(
                f"{who}: x_val has per-sample shape {tuple(self.x_val.shape[1:])}, "
                f"expected {tuple(self.x_train.shape[1:])} like x_train"
            )

    # ---- sizes ---------------------------------------------------------------
    @property
    def input_shape(self) -> tuple:
        """Shape of one sample, e.g. (1, 8, 8) or (64,)."""
        return tuple(self.x_train.shape[1:])

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_val(self) -> int:
        return int(self.x_val.shape[0])

    @property
    def device(self) -> str:
        """'cpu' (NumPy arrays) or 'gpu' (CuPy arrays)."""
        return device_of(self.x_train)

    # ---- new datasets from this one (the original is never modified) ---------
    def flat(self) -> Dataset:
        """The same data with each sample flattened: x (N, C, H, W) -> (N, C·H·W)."""
        return replace(
            self,
            x_train=self.x_train.reshape(self.n_train, -1),  # (N_train, D)
            x_val=self.x_val.reshape(self.n_val, -1),
        )  # (N_val, D)

    def astype(self, dtype) -> Dataset:
        """The same data with x (and reconstruction targets) cast to a floating dtype (labels stay int64)."""
        dtype = check_float_dtype(dtype, f"Dataset {self.name!r}.astype")
        cast = {f"x_{s}": getattr(self, f"x_{s}").astype(dtype, copy=False) for s in ("train", "val")}
        if self.task == "reconstruction":
            cast.update({f"y_{s}": getattr(self, f"y_{s}").astype(dtype, copy=False) for s in ("train", "val")})
        return replace(self, **cast)

    def reconstruction(self) -> Dataset:
        """The autoencoding task on this data: targets y = the flattened inputs, (N, D), in [0, 1].

        The inputs must already lie in [0, 1] (Bernoulli means: load the pixels unstandardised,
        e.g. ``load_dataset(name, ..., standardise_pixels=False)``).  Named "<name>-autoencoder".
        """
        if self.task != "classification":
            raise ValueError(f"Dataset {self.name!r} is already a {self.task} dataset")
        flat = self.flat()
        return Dataset(
            f"{self.name}-autoencoder",
            flat.x_train,
            flat.x_train,
            flat.x_val,
            flat.x_val,
            num_classes=int(flat.input_shape[0]),
            task="reconstruction",
        )

    def to(self, device: str) -> Dataset:
        """The same data on 'cpu' (NumPy) or 'gpu' (CuPy)."""
        from kfac_ref.backend import to_device

        return replace(
            self,
            x_train=to_device(self.x_train, device),
            y_train=to_device(self.y_train, device),
            x_val=to_device(self.x_val, device),
            y_val=to_device(self.y_val, device),
        )

    def subset(self, n_train: int | None = None, n_val: int | None = None) -> Dataset:
        """The first n_train training and n_val validation samples (None keeps all).

        Deterministic: the loaders already shuffle (or fix) the order, so "the
        first n" is a reproducible small dataset for quick runs.
        """
        n_train = self.n_train if n_train is None else _check_count("n_train", n_train, self.n_train, self.name)
        n_val = self.n_val if n_val is None else _check_count("n_val", n_val, self.n_val, self.name)
        return replace(
            self,
            x_train=self.x_train[:n_train],
            y_train=self.y_train[:n_train],
            x_val=self.x_val[:n_val],
            y_val=self.y_val[:n_val],
        )

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={tuple(self.x_train.shape)}, val={tuple(self.x_val.shape)}, "
            f"num_classes={self.num_classes}, dtype={self.x_train.dtype}, device={self.device!r})"
        )


TASKS = ("classification", "reconstruction")


def _check_reconstruction(who: str, split: str, x, y, num_outputs: int) -> None:
    """Validate one split of a reconstruction dataset: y (N, D) floating, finite, in [0, 1]."""
    if getattr(x, "ndim", 0) < 2 or getattr(y, "ndim", None) != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{who}: x_{split} must be (N, ...) and y_{split} (N, D) with the same N, "
            f"got {getattr(x, 'shape', None)} and {getattr(y, 'shape', None)}"
        )
    if y.shape[1] != num_outputs or x.dtype.kind != "f" or y.dtype.kind != "f":
        raise ValueError(
            f"{who}: y_{split} must be a floating (N, {num_outputs}) array and x_{split} floating, "
            f"got y {y.dtype} {tuple(y.shape)}, x {x.dtype}"
        )
    xp = get_xp(x, y)
    n_bad = int(xp.count_nonzero(~((y >= 0) & (y <= 1)))) + int(xp.count_nonzero(~xp.isfinite(x)))
    if n_bad:
        raise ValueError(f"{who}: {n_bad} non-finite inputs or targets outside [0, 1] in the {split} split")


def _check_split(who: str, split: str, x, y, num_classes: int) -> None:
    """Validate one split: lengths, label dtype and range, finite inputs."""
    xp = get_xp(x, y)
    if getattr(x, "ndim", 0) < 2:
        raise ValueError(
            f"{who}: x_{split} must have shape (N, ...) with at least 2 dimensions, "
            f"got shape {getattr(x, 'shape', type(x).__name__)}"
        )
    if getattr(y, "ndim", None) != 1:
        raise ValueError(f"{who}: y_{split} must have shape (N,), got shape {getattr(y, 'shape', type(y).__name__)}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{who}: x_{split} has {x.shape[0]} samples but y_{split} has {y.shape[0]}")
    if x.dtype.kind != "f":
        raise ValueError(f"{who}: x_{split} must be a floating array, got dtype {x.dtype}")
    if y.dtype.kind not in "iu":
        raise ValueError(f"{who}: y_{split} must hold integer class indices, got dtype {y.dtype}")
    if y.shape[0] > 0:
        bad = int(xp.count_nonzero((y < 0) | (y >= num_classes)))
        if bad:
            raise ValueError(
                f"{who}: y_{split} has {bad} labels outside [0, {num_classes}) (min {int(y.min())}, max {int(y.max())})"
            )
    n_bad = int(xp.count_nonzero(~xp.isfinite(x)))
    if n_bad:
        raise ValueError(f"{who}: x_{split} has {n_bad} non-finite values (NaN or Inf), expected none")


def _check_count(field: str, n, available: int, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= available:
        raise ValueError(f"Dataset {name!r}.subset: {field}={n!r} must be an integer in [0, {available}]")
    return int(n)


def check_float_dtype(dtype, who: str) -> np.dtype:
    """Return np.dtype(dtype), or raise naming `who` if it is not a floating type."""
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise ValueError(f"{who}: dtype must be floating (float32 or float64), got {dt}")
    return dt


def constant_threshold(mu, n: int):
    """τ = n·ε·abs(μ): a σ at or below this is rounding noise, not variation (ε = float64's machine epsilon).

    The mean of n float64 numbers, summed one after another, is off by at most
    (n − 1)·u·mean abs(x) with u = ε/2 (Higham, *Accuracy and Stability of Numerical
    Algorithms*, §4.2); pairwise summation does better.  For a feature constant
    at c, mean abs(x) = abs(c) = abs(μ), and σ computed about that inexact μ is just
    abs(c − μ̂) ≤ (n − 1)·u·abs(μ): about 1e-17 for c = 0.1 and n = 1,000, never 0 in
    general.  τ = n·ε·abs(μ) is twice that bound (measured: such σ stay below
    0.2·n·u·abs(μ) up to n = 10⁶).  A feature that really varies has σ orders of
    magnitude above τ: even a relative spread of 1e-9 at n = 10⁶ is 4,500 τ.
    """
    return n * np.finfo(np.float64).eps * np.abs(mu)


def standardise(x_train: np.ndarray, x_val: np.ndarray, axis) -> tuple[np.ndarray, np.ndarray]:
    """Standardise both splits with the TRAINING mean and standard deviation.

        x ← (x − μ) / σ,   μ, σ computed over `axis` of x_train only

    so that no statistic of the validation set leaks into training.  A feature
    that is constant over the training set — σ = 0, or σ at the level of
    rounding noise, σ ≤ τ = n·ε·abs(μ) (:func:`constant_threshold`) — is divided by
    1 instead: its training values become 0 (up to the rounding of μ, ≤ τ) and
    its validation values x − μ, finite and on the data's own scale (dividing
    by a σ of 1e-17 would blow them up to 1e17).

    axis: None for one scalar μ, σ (MNIST); 0 for one per input coordinate
    (digits); (0, 2, 3) for one per channel of (N, C, H, W) images (CIFAR).
    Returns new arrays of x_train's dtype; the inputs are not modified.
    Raises ValueError for a training split without samples (no statistics).
    """
    if x_train.shape[0] == 0:
        raise ValueError(
            f"standardise: the training split has no samples (x_train of shape {tuple(x_train.shape)}); "
            f"its mean and standard deviation need at least one"
        )
    mu = x_train.mean(axis=axis, keepdims=True, dtype=np.float64)  # broadcastable to x
    sigma = x_train.std(axis=axis, keepdims=True, dtype=np.float64)
    n = x_train.size // mu.size  # samples behind each statistic
    sigma = np.where(sigma > constant_threshold(mu, n), sigma, 1.0)
    mu, sigma = mu.astype(x_train.dtype), sigma.astype(x_train.dtype)
    sigma[sigma == 0] = 1  # a σ > τ that underflows in float32 (|x| < 1e-38): keep it finite
    out_train = x_train - mu  # new array; divided in place to keep peak memory low
    out_train /= sigma
    out_val = x_val - mu
    out_val /= sigma
    return out_train, out_val
