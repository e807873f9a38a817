"""Reference bundles and the audit that checks another K-FAC implementation against them.

- :mod:`.spec`       a network as PyTorch constructor dicts ↔ a kfac_ref Sequential; state_dict names
- :mod:`.reference`  the bundle: network, batch and every K-FAC quantity in float64 (docs/math.md §1–6)
- :mod:`.audit`      compare THEIRS with a bundle; name the classic mistakes (:data:`~.audit.CODES`)
- :mod:`.commands`   ``kfac-ref reference`` and ``kfac-ref audit``
"""

from .audit import CODES, AuditInputError, Reference, Result, audit_arrays, run
from .reference import build_bundle, model_from_bundle, write_bundle
from .spec import layers_to_spec, load_state_dict, spec_to_model, state_dict

__all__ = [
    "CODES",
    "AuditInputError",
    "Reference",
    "Result",
    "audit_arrays",
    "build_bundle",
    "layers_to_spec",
    "load_state_dict",
    "model_from_bundle",
    "run",
    "spec_to_model",
    "state_dict",
    "write_bundle",
]
