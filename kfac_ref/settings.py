"""Settings files: ``{optimizer: {hyper-parameter: value}}`` in JSON or TOML, read strictly.

    # kfac.toml                              kfac.json
    [kfac]                                   {"kfac": {"lr": 0.3, "T_inv": 5},
    lr = 0.3                                  "sgd": {"momentum": 0.9}}
    T_inv = 5
    [sgd]
    momentum = 0.9

What is refused, each with the file's name and what was expected:

- a name that is not ``*.json`` or ``*.toml`` (any case: ``.TOML`` is TOML);
- a path that is missing, a folder, or not a regular file (a FIFO or a
  device is never opened: reading one would wait for ever or never end),
  and a file over :data:`MAX_BYTES`;
- text that is not valid UTF-8 JSON / TOML, a JSON object with the same key
  twice (TOML refuses that itself), and nesting deeper than Python's parsers
  can follow (reported as such, not as a RecursionError);
- anything but a table of tables, an unknown optimizer, and a value its
  optimizer cannot take (the ``parse_value`` the caller passes: the command
  line's reads each optimizer's signature).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from .optim import OPTIMIZERS

PARSERS = (".json", ".toml")  # chosen by the suffix, case-insensitively
MAX_BYTES = 1 << 20  # 1 MiB: a settings file is a few lines


def _no_duplicates(pairs):
    """json's object_pairs_hook: a dict, refusing a key given twice (the last one would win silently)."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _parse(text: str, kind: str):
    if kind == ".toml":
        import tomllib  # noqa: PLC0415  (Python ≥ 3.11; only TOML files need it)

        return tomllib.loads(text)
    return json.loads(text, object_pairs_hook=_no_duplicates)


def read_settings_file(path, parse_value=None, who: str = "--settings") -> dict:
    """{optimizer: {key: value}} from a JSON (.json) or TOML (.toml) file, checked key by key.

    ``parse_value(optimizer, key, value)`` types and checks each value; the
    command line passes its own (``kfac_ref.experiments.arguments.parse_value``, which reads the
    optimizer's signature).  Without it the values are returned as the file
    typed them and only the optimizers' names are checked.
    Raises ValueError whose message starts with ``who`` and the path.
    """
    if parse_value is None:

        def parse_value(opt, key, value):
            return value

    if str(path) == "":
        raise ValueError(f"{who}: the empty path; expected a .json or .toml file")
    path = Path(path)
    kind = path.suffix.lower()
    if kind not in PARSERS:
        raise ValueError(
            f"{who} {path}: unknown suffix {path.suffix or '(none)'!r}; expected a settings file named *.json or *.toml"
        )
    try:
        st = os.stat(path)  # follows links; never opens (a FIFO would block)
    except FileNotFoundError:
        raise ValueError(f"{who} {path}: does not exist") from None
    except OSError as exc:
        raise ValueError(f"{who} {path}: cannot be read ({exc.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ValueError(f"{who} {path}: is a folder, expected a .json or .toml file")
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{who} {path}: is not a regular file (a FIFO, socket or device); expected a settings file")
    if st.st_size > MAX_BYTES:
        raise ValueError(f"{who} {path}: {st.st_size:,} bytes, expected a settings file of at most {MAX_BYTES:,}")
    name = kind.lstrip(".").upper()
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
        if len(raw) > MAX_BYTES:
            raise ValueError(f"more than {MAX_BYTES:,} bytes, expected a small settings file")
        doc = _parse(raw.decode("utf-8"), kind)
    except ImportError:  # pragma: no cover - Python 3.10 has no tomllib
        raise ValueError(f"{who} {path}: TOML needs Python ≥ 3.11; use a .json file") from None
    except RecursionError:
        raise ValueError(
            f"{who} {path}: nested too deeply to read; expected {{optimizer: {{hyper-parameter: value}}}}"
        ) from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{who} {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except ValueError as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors; so are duplicate keys
        raise ValueError(f"{who} {path}: not valid {name}: {exc}") from None
    except OSError as exc:
        raise ValueError(f"{who} {path}: cannot be read ({exc.strerror})") from None
    if not isinstance(doc, dict) or not all(isinstance(v, dict) for v in doc.values()):
        raise ValueError(f"{who} {path}: expected {{optimizer: {{hyper-parameter: value}}}}")
    out = {}
    for opt, table in doc.items():
        if opt not in OPTIMIZERS:
            raise ValueError(f"{who} {path}: unknown optimizer {opt!r}: choose from {','.join(OPTIMIZERS)}")
        try:
            out[opt] = {key: parse_value(opt, key, v) for key, v in table.items()}
        except ValueError as exc:
            raise ValueError(f"{who} {path}: {exc}") from None
    return out
