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
import math
import zipfile
from pathlib import Path

import numpy as np

from .backend import to_numpy
from .io import atomic_write
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
    state = {
        "format": FORMAT,
        "optimizer": opt.name,
        "hyper": opt.hyper(),
        "params": get_flat_params(opt.model),
        "batch_size": trainer.batch_size,
        "opt_state": opt.state_dict(),
        "trainer": trainer.state_dict(),
    }
    arrays: dict = {}
    meta = _split(state, arrays, "s")
    arrays["__meta__"] = np.frombuffer(json.dumps(meta, allow_nan=True).encode(), dtype=np.uint8)

    def write(tmp):
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a name
            np.savez(f, **arrays)

    return atomic_write(path, write)


def read(path) -> dict:
    """The checkpoint's state as nested dicts/lists of NumPy arrays and scalars.

    Every failure to read it is a ValueError naming the file (FileNotFoundError
    if there is no file).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"checkpoint path {str(path)!r} is a directory, expected a .npz file")
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"{path} is not a readable kfac_ref checkpoint: {exc}") from exc
    if "__meta__" not in arrays:
        raise ValueError(f"{path} is not a kfac_ref checkpoint (no __meta__ entry)")
    raw = arrays.pop("__meta__")
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ValueError(f"{path}: the __meta__ entry is {raw.dtype} of shape {raw.shape}, expected UTF-8 bytes")
    try:
        meta = json.loads(io.BytesIO(raw.tobytes()).read().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: the __meta__ entry is not JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: the __meta__ entry holds a {type(meta).__name__}, expected a JSON object")
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown checkpoint format {meta.get('format')!r}, expected {FORMAT!r}")
    missing = [k for k in ("optimizer", "hyper", "params", "opt_state", "trainer") if k not in meta]
    if missing:
        raise ValueError(f"{path}: the checkpoint lacks {', '.join(missing)}")
    try:
        return _join(meta, arrays)
    except KeyError as exc:
        raise ValueError(f"{path}: __meta__ refers to the array {exc.args[0]!r}, which the file lacks") from exc
    except TypeError as exc:
        raise ValueError(f"{path}: malformed array reference in __meta__ ({exc})") from exc


# ---- validation: the whole file is checked before anything is applied ------------------
def _bad(path, where: str, what: str) -> ValueError:
    return ValueError(f"{path}: {where} is {what}")


def _int(path, where, v, low=0, high=None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(path, where, f"{v!r}, expected an integer")
    if v < low or (high is not None and v > high):
        rng = f"≥ {low}" if high is None else f"in [{low}, {high}]"
        raise _bad(path, where, f"{v}, expected an integer {rng}")
    return v


def _real(path, where, v, low=None) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _bad(path, where, f"{v!r}, expected a finite number")
    if low is not None and v < low:
        raise _bad(path, where, f"{v}, expected ≥ {low}")
    return v


def _array(path, where, v, shape=None, kind="f"):
    if not isinstance(v, np.ndarray):
        raise _bad(path, where, f"a {type(v).__name__}, expected an array")
    if v.dtype.kind not in kind:
        raise _bad(path, where, f"an array of {v.dtype}, expected {'floating' if kind == 'f' else 'integer'} values")
    if shape is not None and v.shape != tuple(shape):
        raise _bad(path, where, f"an array of shape {v.shape}, expected {tuple(shape)}")
    if kind == "f" and not np.isfinite(v).all():
        raise _bad(path, where, "an array with NaN/Inf values, expected finite values")
    return v


def _expected_shapes(model) -> dict:
    """Shapes the optimizers' known state entries must have for this model."""
    p = model.num_params
    layers = model.param_layers()
    return {
        "velocity": (p,),
        "fisher": (p, p),
        "blocks": [(lay.num_params, lay.num_params) for lay in layers],
        "factors": [[(lay.a_dim, lay.a_dim), (lay.g_dim, lay.g_dim)] for lay in layers],
        "diagonal": [(lay.g_dim, lay.a_dim) for lay in layers],
    }


def _check_like(path, where, saved, template, expected=None):
    """saved must have template's structure: same keys, arrays finite (and of the expected shape)."""
    if isinstance(template, dict):
        if not isinstance(saved, dict):
            raise _bad(path, where, f"a {type(saved).__name__}, expected a dict")
        if set(saved) != set(template):
            extra, lack = sorted(set(saved) - set(template)), sorted(set(template) - set(saved))
            raise _bad(path, where, f"a dict with unexpected keys {extra} / without {lack}")
        for k in template:
            exp = expected.get(k) if isinstance(expected, dict) else None
            _check_value(path, f"{where}[{k!r}]", saved[k], template[k], exp)
        return
    _check_value(path, where, saved, template, expected)


def _check_value(path, where, v, template, expected):
    if isinstance(template, dict):
        return _check_like(path, where, v, template)
    if v is None:
        return
    if isinstance(template, bool):
        if not isinstance(v, bool):
            raise _bad(path, where, f"{v!r}, expected True or False")
    elif isinstance(template, int) and not isinstance(template, bool):
        _int(path, where, v)
    elif isinstance(template, float):
        _real(path, where, v)
    elif isinstance(template, str):
        if not isinstance(v, str):
            raise _bad(path, where, f"{v!r}, expected a string")
    elif isinstance(template, np.ndarray):
        _array(path, where, v, template.shape if expected is None else expected, kind=template.dtype.kind)
    elif isinstance(expected, tuple):  # a buffer not created yet in the template: shape from the model
        _array(path, where, v, expected)
    elif isinstance(v, list):
        if isinstance(expected, list) and len(v) != len(expected):
            raise _bad(path, where, f"a list of {len(v)} entries, expected {len(expected)} (one per layer)")
        tpl = template if isinstance(template, list) and len(template) == len(v) else [None] * len(v)
        exps = expected if isinstance(expected, list) else [None] * len(v)
        for i, (item, t, e) in enumerate(zip(v, tpl, exps)):
            _check_value(path, f"{where}[{i}]", item, t, e)
    elif isinstance(v, dict):
        for k, item in v.items():
            _check_value(path, f"{where}[{k!r}]", item, None, None)
    elif isinstance(v, np.ndarray):
        _array(path, where, v, kind=v.dtype.kind if v.dtype.kind in "iu" else "f")
    elif isinstance(v, bool) or isinstance(v, str):
        pass
    elif isinstance(v, (int, float)):
        _real(path, where, v)
    else:
        raise _bad(path, where, f"a {type(v).__name__}, expected numbers and arrays")


def _check_records(path, records, steps: int):
    from .train import RECORD_FIELDS  # noqa: PLC0415  (train imports nothing from here)

    if not isinstance(records, list):
        raise _bad(path, "trainer['records']", f"a {type(records).__name__}, expected a list of records")
    last = -1
    for i, r in enumerate(records):
        where = f"trainer['records'][{i}]"
        if not isinstance(r, dict) or set(r) != set(RECORD_FIELDS):
            raise _bad(path, where, f"{r!r:.80}, expected a dict with keys {RECORD_FIELDS}")
        it = _int(path, f"{where}['iteration']", r["iteration"], low=max(last, 0), high=steps)
        last = it
        for k in RECORD_FIELDS[1:]:
            if r[k] is not None and (isinstance(r[k], bool) or not isinstance(r[k], (int, float))):
                raise _bad(path, f"{where}[{k!r}]", f"{r[k]!r}, expected a number or null")
    if records and last != steps:
        raise _bad(
            path,
            "trainer['records']",
            f"a history ending at iteration {last}, expected it to end at the optimizer's step {steps}",
        )


def validate(path, state: dict, trainer) -> None:
    """Raise a ValueError naming the entry unless ``state`` fits this trainer exactly."""
    opt, model = trainer.opt, trainer.opt.model
    if state["optimizer"] != opt.name:
        raise ValueError(f"{path} holds a {state['optimizer']!r} run, not {opt.name!r}")
    saved, now = state["hyper"], _split(opt.hyper(), {}, "hyper")  # as saved: tuples become lists
    if not isinstance(saved, dict):
        raise _bad(path, "hyper", f"a {type(saved).__name__}, expected a dict")
    differ = sorted(k for k in set(saved) | set(now) if k != "damping" and saved.get(k) != now.get(k))
    if differ:  # (λ itself may have been adapted by Levenberg–Marquardt)
        raise ValueError(
            f"{path} was saved with other hyper-parameters: "
            + ", ".join(f"{k}={saved.get(k)!r} (now {now.get(k)!r})" for k in differ)
        )
    params = state["params"]
    if isinstance(params, np.ndarray) and params.ndim == 1 and params.shape != (model.num_params,):
        raise ValueError(f"{path} holds {params.shape[0]} parameters, the model has {model.num_params}")
    _array(path, "params", params, (model.num_params,))
    if params.dtype != np.dtype(model.dtype):  # resuming in another precision is another run
        raise ValueError(f"{path} was saved from a {params.dtype} model; this run's model is {np.dtype(model.dtype)}")
    saved_batch = state.get("batch_size")  # (absent from checkpoints written before it was recorded)
    if saved_batch is not None and saved_batch != trainer.batch_size:
        raise ValueError(
            f"{path} was saved with batch size {saved_batch!r}; this run's batch size is {trainer.batch_size} "
            "(the mini-batches, and so the run, would differ): resume with the same batch size"
        )

    opt_state = state["opt_state"]
    _check_like(path, "opt_state", opt_state, opt.state_dict(), _expected_shapes(model))
    try:  # every entry against the model, also those a fresh optimizer holds as None
        opt.check_state(opt_state, "opt_state")
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    steps = _int(path, "opt_state['steps']", opt_state["steps"])

    tr = state["trainer"]
    _check_like(path, "trainer", tr, dict.fromkeys(trainer.state_dict()))
    n = trainer.data.n_train
    _real(path, "trainer['seconds']", tr["seconds"], low=0)
    if tr["order"] is not None:
        order = _array(path, "trainer['order']", tr["order"], (n,), kind="iu")
        if not np.array_equal(np.sort(order), np.arange(n)):
            raise _bad(path, "trainer['order']", f"not a permutation of the {n} training samples")
    _int(path, "trainer['pos']", tr["pos"], low=0, high=n)
    if tr["stopped"] is not None and not isinstance(tr["stopped"], str):
        raise _bad(path, "trainer['stopped']", f"{tr['stopped']!r}, expected a string or null")
    _check_records(path, tr["records"], steps)
    probe = type(trainer.rng.bit_generator)()
    try:  # the generator checks its own state
        probe.state = tr["rng"]
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise _bad(path, "trainer['rng']", f"not a valid {type(probe).__name__} state ({exc})") from exc


def load(path, trainer) -> None:
    """Restore a :class:`~kfac_ref.train.Trainer` (its model, optimizer, generator, records).

    The whole file is validated against the trainer first; a refused (or failed)
    load leaves the model, the optimizer and the trainer as they were.
    """
    state = read(path)
    validate(path, state, trainer)
    opt = trainer.opt
    before = (get_flat_params(opt.model), opt.state_dict(), trainer.state_dict())
    try:
        set_flat_params(opt.model, state["params"])
        opt.load_state_dict(state["opt_state"])
        trainer.load_state_dict(state["trainer"])
    except BaseException:
        set_flat_params(opt.model, before[0])
        opt.load_state_dict(before[1])
        trainer.load_state_dict(before[2])
        raise
