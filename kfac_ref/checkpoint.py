"""Checkpoints that cannot execute code when loaded: NumPy arrays plus JSON.

A checkpoint is one ``.npz`` file (``numpy.load(..., allow_pickle=False)``):

- ``__meta__``: a JSON document (stored as UTF-8 bytes) with every scalar, list
  and string of the state, in which each array is replaced by ``{"__array__": key}``;
- one entry per array, named by its key.

It holds the parameters, the optimizer state (factors, inverses, damping,
momentum, counters), the trainer state (epoch permutation, position, records)
and the random generator's state, so that resuming gives the same trajectory as
not stopping.  It is written to a temporary file and renamed into place.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .backend import to_numpy
from .params import get_flat_params, set_flat_params

FORMAT = "kfac_ref-checkpoint-1"


def _split(obj, arrays: dict, key: str):
    """Replace arrays in a nested structure by references, collecting them in ``arrays``."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj)
    if isinstance(obj, dict):
        return {str(k): _split(v, arrays, f"{key}/{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_split(v, arrays, f"{key}/{i}") for i, v in enumerate(obj)]
    if hasattr(obj, "shape"):
        arrays[key] = np.asarray(to_numpy(obj))
        return {"__array__": key}
    raise TypeError(f"cannot checkpoint a value of type {type(obj).__name__} at {key}")


def _join(obj, arrays):
    if isinstance(obj, dict):
        if set(obj) == {"__array__"}:
            return arrays[obj["__array__"]]
        return {k: _join(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join(v, arrays) for v in obj]
    return obj


def save(path, trainer) -> Path:
    """Write the whole state of a :class:`~kfac_ref.train.Trainer` to ``path`` (.npz)."""
    path = Path(path)
    opt = trainer.opt
    state = {"format": FORMAT, "optimizer": opt.name, "hyper": opt.hyper(),
             "params": get_flat_params(opt.model), "opt_state": opt.state_dict(),
             "trainer": trainer.state_dict()}
    arrays: dict = {}
    meta = _split(state, arrays, "s")
    arrays["__meta__"] = np.frombuffer(json.dumps(meta, allow_nan=True).encode(), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read(path) -> dict:
    """The checkpoint's state as nested dicts/lists of NumPy arrays and scalars."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"{path} is not a readable kfac_ref checkpoint: {exc}") from exc
    if "__meta__" not in arrays:
        raise ValueError(f"{path} is not a kfac_ref checkpoint (no __meta__ entry)")
    meta = json.loads(io.BytesIO(arrays.pop("__meta__").tobytes()).read().decode())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown checkpoint format {meta.get('format')!r}, expected {FORMAT!r}")
    return _join(meta, arrays)


def load(path, trainer) -> None:
    """Restore a :class:`~kfac_ref.train.Trainer` (its model, optimizer, generator, records)."""
    state = read(path)
    opt = trainer.opt
    if state["optimizer"] != opt.name:
        raise ValueError(f"{path} holds a {state['optimizer']!r} run, not {opt.name!r}")
    saved, now = state["hyper"], opt.hyper()
    differ = sorted(k for k in set(saved) | set(now) if k != "damping" and saved.get(k) != now.get(k))
    if differ:  # (λ itself may have been adapted by Levenberg–Marquardt)
        raise ValueError(f"{path} was saved with other hyper-parameters: "
                         + ", ".join(f"{k}={saved.get(k)!r} (now {now.get(k)!r})" for k in differ))
    params = state["params"]
    if params.shape != (opt.model.num_params,):
        raise ValueError(f"{path} holds {params.shape[0]} parameters, the model has {opt.model.num_params}")
    set_flat_params(opt.model, params)
    opt.load_state_dict(state["opt_state"])
    trainer.load_state_dict(state["trainer"])
