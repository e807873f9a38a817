"""A network as a list of layers named and parameterised as PyTorch's constructors name them::

    [{"type": "Conv2d", "in_channels": 1, "out_channels": 8, "kernel_size": 3, "stride": 1, "padding": 1,
      "bias": true}, {"type": "ReLU"}, {"type": "MaxPool2d", "kernel_size": 2, "stride": 2, "padding": 0},
     {"type": "Flatten"}, {"type": "Linear", "in_features": 128, "out_features": 32, "bias": true}, ...]

Entry i is layer i of ``torch.nn.Sequential(*layers)``, so the parameter names are those of its
``state_dict``: ``"<i>.weight"`` (PyTorch's layout: (out, in) or (out, in, kh, kw)) and
``"<i>.bias"``.  :func:`layers_to_spec` and :func:`spec_to_model` convert between a kfac_ref
:class:`~kfac_ref.nn.Sequential` and this list; :func:`state_dict` and :func:`load_state_dict`
move the weights (docs/math.md §1 fixes the layout and θ's order).
"""

from __future__ import annotations

import numpy as np

from .. import nn
from ..params import get_flat_params, set_flat_params

_ACTIVATIONS = {"ReLU": nn.ReLU, "Tanh": nn.Tanh, "Sigmoid": nn.Sigmoid}
_POOLS = {"MaxPool2d": nn.MaxPool2d, "AvgPool2d": nn.AvgPool2d}
TYPES = ("Linear", "Conv2d", *_ACTIVATIONS, *_POOLS, "Flatten")


def layer_to_dict(layer) -> dict:
    """One kfac_ref layer as PyTorch's constructor arguments, ``{"type": ..., ...}``."""
    if isinstance(layer, nn.Linear):
        return {
            "type": "Linear",
            "in_features": layer.in_features,
            "out_features": layer.out_features,
            "bias": layer.bias is not None,
        }
    if isinstance(layer, nn.Conv2d):
        return {
            "type": "Conv2d",
            "in_channels": layer.in_channels,
            "out_channels": layer.out_channels,
            "kernel_size": layer.kernel_size,
            "stride": layer.stride,
            "padding": layer.padding,
            "bias": layer.bias is not None,
        }
    for name, cls in {**_ACTIVATIONS, **_POOLS}.items():
        if type(layer) is cls:
            if name in _POOLS:
                return {
                    "type": name,
                    "kernel_size": layer.kernel_size,
                    "stride": layer.stride,
                    "padding": layer.padding,
                }
            return {"type": name}
    if isinstance(layer, nn.Flatten):
        return {"type": "Flatten"}
    raise TypeError(f"no PyTorch name for the layer {layer!r}: supported types are {', '.join(TYPES)}")


def layers_to_spec(model) -> list[dict]:
    """The layers of a kfac_ref Sequential, in order, as PyTorch constructor dicts."""
    return [layer_to_dict(layer) for layer in model.layers]


def _int(d: dict, key: str, where: str, default=None) -> int:
    v = d.get(key, default)
    if isinstance(v, (list, tuple)) and len(v) == 2 and v[0] == v[1]:
        v = v[0]  # PyTorch allows (k, k)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{where}: {key!r} must be an integer, got {v!r}")
    return v


def dict_to_layer(d: dict, where: str = "layer"):
    """A kfac_ref layer from ``{"type": ..., ...}`` (PyTorch's constructor names)."""
    if not isinstance(d, dict) or "type" not in d:
        raise ValueError(f"{where}: expected an object with a 'type', got {d!r}")
    t = d["type"]
    where = f"{where} ({t})"
    if t == "Linear":
        return nn.Linear(_int(d, "in_features", where), _int(d, "out_features", where), bias=bool(d.get("bias", True)))
    if t == "Conv2d":
        return nn.Conv2d(
            _int(d, "in_channels", where),
            _int(d, "out_channels", where),
            _int(d, "kernel_size", where),
            stride=_int(d, "stride", where, 1),
            padding=_int(d, "padding", where, 0),
            bias=bool(d.get("bias", True)),
        )
    if t in _ACTIVATIONS:
        return _ACTIVATIONS[t]()
    if t in _POOLS:
        k = _int(d, "kernel_size", where)
        stride = d.get("stride")
        return _POOLS[t](
            k, stride=None if stride is None else _int(d, "stride", where), padding=_int(d, "padding", where, 0)
        )
    if t == "Flatten":
        return nn.Flatten()
    raise ValueError(f"{where}: unknown layer type {t!r}; supported: {', '.join(TYPES)}")


def spec_to_model(layers: list[dict], dtype=np.float64) -> nn.Sequential:
    """A kfac_ref Sequential from PyTorch constructor dicts (parameters zero until loaded)."""
    if not isinstance(layers, list) or not layers:
        raise ValueError(f"the network must be a non-empty list of layers, got {layers!r}")
    built = [dict_to_layer(d, f"layer {i}") for i, d in enumerate(layers)]
    return nn.Sequential(*built, seed=0).astype(dtype)


def param_names(model) -> list[tuple[str, tuple]]:
    """[(state_dict name, shape)] in θ's order: ``"<i>.weight"`` then ``"<i>.bias"`` per layer."""
    return [(name, tuple(value.shape)) for name, value in model.params()]


def param_layer_names(model) -> list[str]:
    """The state_dict index of every Linear/Conv2d layer, in network order: ``["0", "3", ...]``."""
    return [str(i) for i, layer in enumerate(model.layers) if isinstance(layer, nn.ParamLayer)]


def state_dict(model) -> dict[str, np.ndarray]:
    """{"<i>.weight": (out, in[, kh, kw]), "<i>.bias": (out,)} as NumPy arrays, PyTorch's names and layouts."""
    return {name: np.asarray(value) for name, value in model.params()}


def load_state_dict(model, weights: dict, where: str = "weights") -> None:
    """Write PyTorch-named weights into the model: θ = concat of the arrays in state_dict order.

    Every name must be present with PyTorch's shape; the dtype follows the model.
    """
    parts = []
    for name, shape in param_names(model):
        if name not in weights:
            raise ValueError(f"{where}: missing {name!r} (expected shape {shape})")
        w = np.asarray(weights[name])
        if tuple(w.shape) != shape:
            raise ValueError(f"{where}: {name!r} has shape {tuple(w.shape)}, expected {shape} (PyTorch's layout)")
        parts.append(w.ravel())
    theta = np.concatenate(parts).astype(get_flat_params(model).dtype)
    set_flat_params(model, theta)
