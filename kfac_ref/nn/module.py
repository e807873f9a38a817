"""The layer protocol: a forward that returns a cache, a backward that reads it.

Every layer is a pair of pure functions around an explicit cache (as in
cs231n's ``layers.py``)::

    out, cache = layer.forward_cached(x)        # x : (N, *in_shape)
    grad_in    = layer.backward(cache, grad_out) # grad_out : (S, N, *out_shape)

The backward pass never writes to the cache or to ``grad_out``, so any number of
backward passes (one per seed vector, S of them at once) can run on one forward
pass and give independent results (docs/style.md §8).  The leading axis S of
``grad_out`` holds several seed vectors per sample; layers broadcast their cache
over it.

Layers with parameters (:class:`~kfac_ref.nn.linear.Linear`,
:class:`~kfac_ref.nn.conv.Conv2d`) additionally expose the per-sample statistics
K-FAC needs: the homogeneous input ``a_bar`` (kept in the cache) and the
pre-activation gradient ``g`` (their ``grad_out``), both in the canonical
(N, T, features) layout of docs/math.md §4–5.
"""

from __future__ import annotations

import numpy as np

from ..backend import get_xp, to_device
from ..validate import as_rng
from .layout import columns


def float_dtype(dtype, who: str) -> np.dtype:
    """np.dtype(dtype) if it is a floating type (float32, float64), else a TypeError naming ``who``.

    Integer parameters would make every update round to nothing: training would silently do nothing.
    """
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"{who}: dtype must be a floating type (float32 or float64), got {dtype!r}") from exc
    if dt.kind != "f":
        raise TypeError(f"{who}: dtype must be a floating type (float32 or float64), got {dt}")
    return dt


class Layer:
    """Base class: a layer without parameters (activations, pooling, reshapes)."""

    has_params = False

    def __call__(self, x):
        return self.forward(x)

    def forward(self, x):
        """Outputs for inputs ``x`` (no cache kept)."""
        out, _ = self.forward_cached(x)
        return out

    def forward_cached(self, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, cache, grad_out):  # pragma: no cover - abstract
        raise NotImplementedError

    def params(self) -> list[tuple[str, object]]:
        """(name, array) pairs in docs/math.md §1 order: weight, then bias."""
        return []

    def reset_parameters(self, rng=None) -> None:
        """Re-draw the parameters (nothing to do for parameter-free layers)."""

    def to(self, device: str):
        """Move parameters to 'cpu' or 'gpu' (in place); returns self."""
        for name, value in self.params():
            setattr(self, name, to_device(value, device))
        return self

    def astype(self, dtype):
        """Cast parameters to the floating ``dtype`` (in place); returns self."""
        dtype = float_dtype(dtype, f"{self!r}.astype")
        for name, value in self.params():
            setattr(self, name, value.astype(dtype))
        return self

    def output_shape(self, in_shape: tuple) -> tuple:
        """Per-sample output shape for a per-sample input shape (no batch axis)."""
        return in_shape

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ParamLayer(Layer):
    """A layer with a weight and an optional bias: Linear or Conv2d.

    Attributes every subclass sets:

    - ``weight``, ``bias`` : arrays in PyTorch's layout (docs/math.md §1); bias may be None.
    - ``kind`` : 'linear' or 'conv'.
    - ``d_in`` : fan-in of one output unit (in_features, or C_in·kh·kw).
    - ``d_out`` : out_features or out_channels.
    """

    has_params = True
    kind = ""

    @property
    def a_dim(self) -> int:
        """Width of the homogeneous input ā = [a; 1]: d_in + 1 with a bias, else d_in."""
        return self.d_in + (self.bias is not None)

    @property
    def g_dim(self) -> int:
        """Width of the pre-activation gradient g: d_out."""
        return self.d_out

    @property
    def num_params(self) -> int:
        return self.d_out * self.a_dim

    def params(self):
        out = [("weight", self.weight)]
        if self.bias is not None:
            out.append(("bias", self.bias))
        return out

    def reset_parameters(self, rng=None) -> None:
        """PyTorch's default initialisation, drawn from an explicit generator.

        weight, bias ~ U(−1/√d_in, 1/√d_in), d_in the fan-in (what
        ``kaiming_uniform_(a=√5)`` amounts to in ``torch.nn.Linear``/``Conv2d``).
        """
        rng = as_rng(rng, type(self).__name__, default=0)  # None: seed 0
        xp, dtype = get_xp(self.weight), self.weight.dtype
        bound = 1.0 / np.sqrt(self.d_in)
        w = rng.uniform(-bound, bound, size=self.weight.shape)
        self.weight = xp.asarray(w, dtype=dtype)
        if self.bias is not None:
            self.bias = xp.asarray(rng.uniform(-bound, bound, size=self.bias.shape), dtype=dtype)

    def wbar(self):
        """W̄ = [W | b] of shape (d_out, a_dim), the matrix K-FAC preconditions."""
        xp = get_xp(self.weight)
        w = self.weight.reshape(self.d_out, self.d_in)
        if self.bias is None:
            return w
        return xp.concatenate([w, self.bias[:, None]], axis=1)  # (d_out, d_in + 1)

    def g_from_grad(self, grad_out):
        """Pre-activation gradient in canonical layout (S, N, T, d_out) from ``grad_out``."""
        raise NotImplementedError  # pragma: no cover

    def a_bar(self, cache):
        """Homogeneous input ā of shape (N, T, a_dim) from a forward cache."""
        return cache["a_bar"]

    def patch_product(self, cache, m):
        """m ā over every sample and location: m (R, a_dim) → (R, T·N), columns in (t, n) order
        (:func:`kfac_ref.nn.layout.columns`)."""
        return m @ columns(self.a_bar(cache))

    def wbar_grad_sum(self, cache, g):
        """Σ_n Σ_t g_{n,t} ā_{n,t}ᵀ: g (N, T, d_out) → (d_out, a_dim), a new array (its caller may scale it
        in place), one product over all samples and locations (g and ā read as (·, T·N) matrices:
        kfac_ref.nn.layout)."""
        return columns(g) @ columns(self.a_bar(cache)).T
