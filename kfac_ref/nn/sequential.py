"""Sequential: a chain of layers, the only container kfac_ref needs.

``model(x)`` runs the layers in order.  The per-layer caches that the backward
pass needs are returned by :func:`kfac_ref.backprop.forward` as a
:class:`~kfac_ref.backprop.Trace`, never stored on the model, so a model holds
only its parameters.
"""

from __future__ import annotations

import math

import numpy as np

from ..backend import device_of, get_xp
from ..validate import as_rng
from .blocks import block_count, concat_in_layout, run_blocks, sample_blocks
from .module import Layer, ParamLayer, float_dtype


class Sequential(Layer):
    """``Sequential(*layers, seed=0)``.

    Nested Sequentials are flattened.  Initialisation is seeded: with
    ``seed`` an int (default 0) every parameter layer is re-drawn, in network
    order, from ``numpy.random.default_rng(seed)``, so that the same seed gives
    the same network and two layers of one shape still differ; ``seed=None``
    keeps the parameters the layers were built with (e.g. their own ``rng=``).
    """

    def __init__(self, *layers, seed=0):
        flat: list[Layer] = []
        for layer in layers:
            if isinstance(layer, Sequential):
                flat.extend(layer.layers)
            elif isinstance(layer, Layer):
                flat.append(layer)
            else:
                raise TypeError(f"Sequential: expected kfac_ref.nn layers, got {type(layer).__name__}")
        if not flat:
            raise ValueError("Sequential: needs at least one layer")
        self.layers = flat
        self.workers = 1
        if seed is not None:
            self.reset_parameters(seed)

    @property
    def workers(self) -> int:
        """Python threads a forward/backward pass splits the batch over (default 1: none).

        k > 1: up to k contiguous blocks of samples, one per thread (:mod:`kfac_ref.backprop`), for
        k cores, fewer when the blocks would be too small to gain (:meth:`sample_blocks`); the same
        results to rounding.  Each thread calls BLAS: limit BLAS to one thread.
        """
        return self._workers

    @workers.setter
    def workers(self, k) -> None:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"Sequential.workers must be a positive integer, got {k!r}")
        self._workers = int(k)

    def __repr__(self) -> str:
        body = "\n".join(f"  ({i}) {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential(\n{body}\n)"

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i):
        return self.layers[i]

    # ---- parameters --------------------------------------------------------------
    def param_layers(self) -> list[ParamLayer]:
        """The Linear/Conv2d layers in network order: the blocks of every Fisher."""
        return [layer for layer in self.layers if isinstance(layer, ParamLayer)]

    def params(self):
        return [(f"{i}.{name}", value) for i, layer in enumerate(self.layers) for name, value in layer.params()]

    @property
    def num_params(self) -> int:
        """P, the length of the flat parameter vector θ."""
        return sum(layer.num_params for layer in self.param_layers())

    def reset_parameters(self, rng=None) -> None:
        rng = as_rng(rng, "Sequential", default=0)  # None: seed 0
        for layer in self.param_layers():
            layer.reset_parameters(rng)

    def to(self, device: str):
        for layer in self.layers:
            layer.to(device)
        return self

    def astype(self, dtype):
        """Cast every layer's parameters to the floating ``dtype`` (in place); returns self."""
        float_dtype(dtype, "Sequential.astype")
        for layer in self.layers:
            layer.astype(dtype)
        return self

    @property
    def dtype(self):
        return self.param_layers()[0].weight.dtype if self.param_layers() else np.dtype(np.float64)

    @property
    def device(self) -> str:
        layers = self.param_layers()
        return device_of(layers[0].weight) if layers else "cpu"

    def output_shape(self, in_shape):
        for layer in self.layers:
            in_shape = layer.output_shape(in_shape)
        return in_shape

    # ---- forward -------------------------------------------------------------------
    def check_input(self, x) -> None:
        """Raise a clear error for inputs that are not finite, float, batched arrays."""
        xp = get_xp(x, *(v for _, v in self.params()))
        if not hasattr(x, "ndim") or x.ndim < 2:
            raise ValueError(f"model input must be an array of shape (N, ...), got {getattr(x, 'shape', type(x))}")
        if not xp.issubdtype(x.dtype, xp.floating):
            raise TypeError(f"model input must be floating point, got dtype {x.dtype}")
        with np.errstate(over="ignore", invalid="ignore"):  # the sum's own overflow, or Inf − Inf
            total = x.sum()  # one pass: a NaN or ±Inf anywhere makes the sum non-finite
        if bool(xp.isfinite(total)):
            return  # (a finite input whose sum overflows is counted below)
        bad = int((~xp.isfinite(x)).sum())
        if bad:
            raise ValueError(f"model input contains {bad} NaN/Inf value(s) out of {x.size}")

    def forward(self, x):
        """Outputs f(x) of shape ``(N, *out_shape)``; no cache is kept.  With ``workers`` = k > 1,
        up to k blocks of samples on threads (as :func:`kfac_ref.backprop.forward`), e.g. for evaluation."""
        self.check_input(x)
        bounds = self.sample_blocks(x)
        if len(bounds) > 1:
            return concat_in_layout(run_blocks(lambda b: self._forward_block(x[b[0] : b[1]]), bounds), 0)
        return self._forward_block(x)

    def sample_blocks(self, x) -> tuple:
        """The blocks of samples ((n0, n1), ...) a pass over x runs as: up to ``workers``, each big enough
        to gain from a thread of its own (:func:`kfac_ref.nn.blocks.block_count`); ((0, N),) for one."""
        n, shape, largest = x.shape[0], tuple(x.shape[1:]), 0
        if self.workers == 1 or n < 2:
            return ((0, n),)
        for layer in self.layers:
            shape = layer.output_shape(shape)
            largest = max(largest, math.prod(shape))
        return sample_blocks(n, block_count(self.workers, n, largest))

    def _forward_block(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def forward_cached(self, x):
        self.check_input(x)
        caches = []
        for layer in self.layers:
            x, cache = layer.forward_cached(x)
            caches.append(cache)
        return x, caches

    def backward(self, caches, grad_out, input_grad: bool = True):
        """Backward through all layers (see :func:`kfac_ref.backprop.backward` for statistics)."""
        for i in range(len(self.layers) - 1, -1, -1):
            if i == 0 and not input_grad:
                return None
            grad_out = self.layers[i].backward(caches[i], grad_out)
        return grad_out
