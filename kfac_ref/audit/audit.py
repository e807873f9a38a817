"""Compare a researcher's K-FAC arrays with a reference bundle and name the classic mistakes.

For every key of THEIRS that the bundle defines, the audit reports agreement (relative error
‖theirs − ref‖_F / ‖ref‖_F within ``rtol``) or a mismatch.  A mismatch is *diagnosed* only when
one known mistake — or one combination of them — reproduces their array exactly: the reference
numbers are transformed as the mistake would transform them (a constant factor N, N², T, T², 2
or 4; A and G exchanged; a permuted weight layout; the homogeneous coordinate dropped or moved;
another kind of Fisher; the step recomputed with π omitted or another damping form), and their
array must equal a transformed one to ``rtol``.  A constant factor is fitted by least squares
and must then equal one of the named factors.  When no transformation fits, or when two
different explanations fit equally well, the mismatch is reported as unexplained: the audit
never forces a name.

Codes (:data:`CODES`) are stable; each names the section of docs/math.md that says what is right.
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..params import wbar_order
from .reference import KINDS, loss_from_spec, model_from_bundle

#: code: (what the mistake is, where docs/math.md states what is right)
CODES = {
    "loss-mean-scale": (
        "G (or F) built from gradients of the batch-mean loss h without undoing its 1/N: per-sample gradients "
        "must be at per-sample scale, off by N² (or N when summed)",
        "docs/math.md §1",
    ),
    "mse-half": (
        "squared error without (or with an extra) ½: ℓ = ½‖f − y‖² makes Λ = I; without it gradients double "
        "(G, F off by 2 or 4)",
        "docs/math.md §2",
    ),
    "conv-locations": (
        "Ω or Γ off by the number T of output locations (or T²): Ω sums over locations, Γ averages (KFC split)",
        "docs/math.md §5",
    ),
    "kron-order": (
        "A and G exchanged, or the block formed as A ⊗ G where row-major vec needs G ⊗ A",
        "docs/math.md §1",
    ),
    "fisher-kind": (
        "a different Fisher: exact (Λ from the model), Monte-Carlo (sampled targets) and empirical (data labels) "
        "are different matrices",
        "docs/math.md §3",
    ),
    "bias-coordinate": (
        "the homogeneous coordinate of ā = [a; 1] missing, or placed first instead of last",
        "docs/math.md §1",
    ),
    "pi-omitted": (
        "factored damping without π: (A + √λ I), (G + √λ I) instead of (A + π√λ I), (G + √λ/π I)",
        "docs/math.md §6.1",
    ),
    "damping-form": (
        "the damping in another form: λ where √λ belongs on each factor, λ on one factor only, or exact damping "
        "(G ⊗ A + λI) where factored damping was meant",
        "docs/math.md §6.1",
    ),
    "weight-layout": (
        "weights in (in, out) layout (or (kh, kw, in, out) for Conv2d) where PyTorch's (out, in[, kh, kw]) was meant",
        "docs/math.md §1",
    ),
}

RTOL = {"float64": 1e-6, "float32": 1e-3}  # default agreement tolerance, by the dtype of THEIR array
_KIND_WORDS = {"exact": "exact", "mc": "Monte-Carlo (sampled targets y_mc)", "empirical": "empirical (data labels y)"}


class AuditInputError(ValueError):
    """A bundle or THEIRS file that cannot be audited (one line, naming the file and the problem)."""


@dataclass
class Result:
    key: str
    status: str  # "ok" | "mismatch"
    rel_error: float | None  # None when the shapes differ
    diagnoses: list = field(default_factory=list)  # codes, sorted; empty: ok or unexplained
    notes: list = field(default_factory=list)  # what exactly was found, one line per code
    candidates: list = field(default_factory=list)  # when several explanations fit: each a list of codes
    shape: tuple = ()
    ref_shape: tuple = ()

    @property
    def diagnosis(self):
        """The code ("a+b" for two mistakes at once) or None (agreement, or unexplained)."""
        return "+".join(self.diagnoses) if self.diagnoses else None

    def as_dict(self) -> dict:
        return {
            "key": self.key,
            "status": self.status,
            "rel_error": None if self.rel_error is None or not math.isfinite(self.rel_error) else self.rel_error,
            "diagnosis": self.diagnosis,
            "diagnoses": self.diagnoses,
            "explanation": [f"{c}: {CODES[c][0]} ({CODES[c][1]})" for c in self.diagnoses],
            "found": self.notes,
            "candidates": self.candidates,
            "shape": list(self.shape),
            "reference_shape": list(self.ref_shape),
        }


# ---- reading the files ----------------------------------------------------------------------


def _load_npz(path, what: str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise AuditInputError(f"{what} {path}: {'is a folder' if path.is_dir() else 'does not exist'}")
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same one-line error
        raise AuditInputError(f"{what} {path}: not a readable .npz file ({type(exc).__name__}: {exc})") from None
    if not hasattr(npz, "files"):
        raise AuditInputError(f"{what} {path}: a single .npy array, expected an .npz archive of named arrays")
    out = {}
    with npz:
        for key in npz.files:
            try:
                arr = npz[key]
            except ValueError:
                raise AuditInputError(
                    f"{what} {path}: key {key!r} holds Python objects (pickled); only numeric arrays are read"
                ) from None
            if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
                raise AuditInputError(f"{what} {path}: key {key!r} has dtype {arr.dtype}, expected a numeric array")
            out[key] = arr
    return out


class Reference:
    """A bundle folder (``spec.json`` + ``bundle.npz``): its arrays, and the ones derived on demand."""

    def __init__(self, path):
        path = Path(path)
        folder = path if path.is_dir() else path.parent
        spec_path = folder / "spec.json"
        if not spec_path.is_file():
            raise AuditInputError(
                f"bundle {path}: no spec.json there (expected a folder written by kfac-ref reference)"
            )
        try:
            self.spec = json.loads(spec_path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise AuditInputError(f"bundle {spec_path}: not valid JSON ({exc})") from None
        for k in ("layers", "loss", "kind", "damping", "batch_size", "parameters"):
            if not isinstance(self.spec, dict) or k not in self.spec:
                raise AuditInputError(f"bundle {spec_path}: no {k!r} entry (not a reference bundle)")
        self.arrays = _load_npz(folder / "bundle.npz", "bundle")
        self.path = folder
        self.kind = self.spec["kind"]
        self.damping = float(self.spec["damping"])
        self.n = int(self.spec["batch_size"])
        self.loss_type = self.spec["loss"]["type"]
        self.params = self.spec["parameters"]
        self.names = [p["name"] for p in self.params]
        try:
            self.model = model_from_bundle(self.spec, self.arrays)
            self.loss_fn = loss_from_spec(self.spec)
        except (ValueError, TypeError, KeyError) as exc:
            raise AuditInputError(f"bundle {folder}: {exc}") from None
        self.layers = dict(zip(self.names, self.model.param_layers()))
        self._cache: dict = {}

    # keys the bundle defines: stored ones, F/<k>[/<l>] for every kind (from V/<k>), KFAC/<l> (G ⊗ A)
    def keys(self) -> list[str]:
        derived = [f"F/{k}" for k in KINDS] + [f"F/{k}/{nm}" for k in KINDS for nm in self.names]
        derived += [f"KFAC/{nm}" for nm in self.names]
        return list(dict.fromkeys([*self.arrays, *derived]))

    def has(self, key: str) -> bool:
        return key in self.arrays or key in self.keys()

    def get(self, key: str) -> np.ndarray:
        if key in self.arrays:
            return self.arrays[key]
        if key not in self._cache and key.startswith("KFAC/") and key[5:] in self.names:
            nm = key[5:]
            self._cache[key] = _theta_block(self.layers[nm], np.kron(self.arrays[f"G/{nm}"], self.arrays[f"A/{nm}"]))
        if key not in self._cache:
            m = re.fullmatch(r"F/(exact|mc|empirical)(?:/(\w+))?", key)
            if not m or (m.group(2) and m.group(2) not in self.names):
                raise KeyError(key)
            v = self.arrays[f"V/{m.group(1)}"]
            if m.group(2):
                lo, hi = self.param(m.group(2))["theta"]
                v = v[:, lo:hi]
            self._cache[key] = (v.T @ v) / self.n  # F = Vᵀ V / N (docs/math.md §3)
        return self._cache[key]

    def param(self, name: str) -> dict:
        return self.params[self.names.index(name)]

    def fisher_diag(self, kind: str, name: str | None = None) -> np.ndarray:
        """diag(F_kind) (or of one layer's block) = Σ_rows V² / N, without forming F."""
        v = self.arrays[f"V/{kind}"]
        if name:
            lo, hi = self.param(name)["theta"]
            v = v[:, lo:hi]
        return (v * v).sum(axis=0) / self.n

    def eig(self, key: str):
        """(eigenvalues, eigenvectors) of a stored symmetric factor, computed once."""
        ck = ("eig", key)
        if ck not in self._cache:
            self._cache[ck] = np.linalg.eigh(self.arrays[key])
        return self._cache[ck]

    def g_of(self, kind: str, name: str) -> np.ndarray:
        return self.arrays[f"G/{name}"] if kind == self.kind else self.arrays[f"kinds/{kind}/G/{name}"]

    def step_of(self, kind: str, which: str) -> np.ndarray:
        return self.arrays[which] if kind == self.kind else self.arrays[f"kinds/{kind}/{which}"]

    def locations(self, name: str) -> int:
        return int(self.param(name)["locations"])

    def stride(self, name: str) -> int:
        return int(self.spec["layers"][int(name)].get("stride", 1))

    @property
    def mse(self) -> bool:
        return self.loss_type == "SquaredErrorLoss"


# ---- the transformations ------------------------------------------------------------------


def _layout_perms(layer) -> list[tuple[str, np.ndarray]]:
    """[(layout, perm)] with their flat weight = ours[perm] for the other weight layouts of one layer."""
    w = np.arange(layer.weight.size).reshape(layer.weight.shape)
    if layer.weight.ndim == 2:
        return [("(in, out)", w.T.ravel())]
    return [
        ("(in, out, kh, kw)", w.transpose(1, 0, 2, 3).ravel()),
        ("(kh, kw, in, out)", w.transpose(2, 3, 1, 0).ravel()),
    ]


def _layer_theta_perm(layer, wperm) -> np.ndarray:
    """A layer's θ permutation: the weight permuted, the bias (after it) kept."""
    return np.concatenate([wperm, np.arange(layer.weight.size, layer.num_params)])


def _global_layout_perms(ref: Reference) -> list[tuple[str, np.ndarray]]:
    """θ permutations with every layer's weights in another layout (variant v for every layer)."""
    out = []
    for v in range(2):
        parts, notes = [], set()
        for name in ref.names:
            layer = ref.layers[name]
            lo = ref.param(name)["theta"][0]
            perms = _layout_perms(layer)
            label, wp = perms[min(v, len(perms) - 1)]
            notes.add(label)
            parts.append(lo + _layer_theta_perm(layer, wp))
        perm = np.concatenate(parts)
        label = " / ".join(sorted(notes))
        if not any(np.array_equal(perm, p) for _, p in out):
            out.append((label, perm))
    return out


def _theta_block(layer, block_wbar) -> np.ndarray:
    """A block in row-major vec(W̄) order permuted into the layer's θ order."""
    perm = wbar_order(layer)
    out = np.empty_like(block_wbar)
    out[perm[:, None], perm[None, :]] = block_wbar
    return out


def _scales(ref: Reference, family: str, name: str | None) -> list[tuple[float, tuple, str]]:
    """[(factor, codes, note)] of the constant factors a mistake multiplies this array by."""
    n = ref.n
    named = []
    if family in ("G", "F", "KFAC"):
        named.append(("loss-mean-scale", [(1 / n**2, "÷ N²"), (1 / n, "÷ N"), (n, "× N"), (n**2, "× N²")]))
        if ref.mse:
            named.append(("mse-half", [(2.0, "× 2"), (4.0, "× 4"), (0.5, "÷ 2"), (0.25, "÷ 4")]))
    if family in ("grad", "loss"):
        named.append(("loss-mean-scale", [(1 / n, "÷ N"), (n, "× N")]))
        if ref.mse:
            named.append(("mse-half", [(2.0, "× 2"), (0.5, "÷ 2")]))
    if family in ("A", "G", "KFAC") and name is not None and ref.locations(name) > 1:
        t = ref.locations(name)
        facs = [(1 / t, "÷ T"), (t, "× T"), (1 / t**2, "÷ T²"), (t**2, "× T²")]
        s2 = ref.stride(name) ** 2
        if s2 > 1:  # a strided convolution's factor scaled by stride² instead of its locations
            facs += [(1 / s2, f"÷ stride² = {s2}"), (s2, f"× stride² = {s2}")]
        named.append(("conv-locations", facs))
    where = {"loss-mean-scale": f"N = {n}", "conv-locations": f"T = {ref.locations(name) if name else 1}"}
    named = [
        (code, [(f, f"{note} ({where[code]})" if code in where else note) for f, note in facs]) for code, facs in named
    ]
    out = [(1.0, (), "")]
    for code, facs in named:
        out += [(f, (code,), note) for f, note in facs]
    for (c1, f1), (c2, f2) in itertools.combinations(named, 2):
        out += [(a * b, (c1, c2), f"{na} and {nb}") for (a, na), (b, nb) in itertools.product(f1, f2)]
    return out


@dataclass
class Candidate:
    """A transformed reference: ``array`` (or a function making it, called only when needed)."""

    codes: tuple
    array: object
    note: str
    family: str | None = None  # fit a constant factor of this family's named scales; None: compare as is
    name: str | None = None
    diag: np.ndarray | None = None  # the diagonal of a large square ``array``, to rule it out cheaply

    def value(self) -> np.ndarray:
        if callable(self.array):
            self.array = self.array()
        return self.array


def _kind_note(theirs_kind: str, meant: str) -> str:
    return f"the {_KIND_WORDS[theirs_kind]} Fisher where the {_KIND_WORDS[meant]} one was meant"


def _candidates(ref: Reference, key: str) -> list[Candidate]:
    """Every transformation of the reference a known mistake (or two) would produce for this key."""
    out: list[Candidate] = []
    m = re.fullmatch(r"(A|G|KFAC)/(\w+)", key)
    if m:
        fam, name = m.groups()
        layer = ref.layers[name]
        a, g = ref.get(f"A/{name}"), ref.get(f"G/{name}")
        others = [k for k in KINDS if k != ref.kind]
        if fam == "A":
            out.append(Candidate((), a, "", "A", name))
            out.append(Candidate(("kron-order",), g, "A/ holds G (the factors exchanged)", "G", name))
            for k in others:
                out.append(
                    Candidate(
                        ("kron-order", "fisher-kind"),
                        ref.g_of(k, name),
                        f"A/ holds G, {_kind_note(k, ref.kind)}",
                        "G",
                        name,
                    )
                )
            if layer.bias is not None:
                d = layer.d_in
                out.append(Candidate(("bias-coordinate",), a[:d, :d], "the homogeneous coordinate missing", "A", name))
                roll = np.r_[d, :d]
                out.append(
                    Candidate(
                        ("bias-coordinate",), a[np.ix_(roll, roll)], "the homogeneous coordinate first", "A", name
                    )
                )
        elif fam == "G":
            out.append(Candidate((), g, "", "G", name))
            out.append(Candidate(("kron-order",), a, "G/ holds A (the factors exchanged)", "A", name))
            for k in others:
                out.append(Candidate(("fisher-kind",), ref.g_of(k, name), _kind_note(k, ref.kind), "G", name))
        else:
            base = ref.get(key)
            out.append(Candidate((), base, "", "KFAC", name))
            out.append(
                Candidate(("kron-order",), _theta_block(layer, np.kron(a, g)), "A ⊗ G instead of G ⊗ A", "KFAC", name)
            )
            for k in others:
                gk = ref.g_of(k, name)
                out.append(
                    Candidate(
                        ("fisher-kind",), _theta_block(layer, np.kron(gk, a)), _kind_note(k, ref.kind), "KFAC", name
                    )
                )
                out.append(
                    Candidate(
                        ("fisher-kind", "kron-order"),
                        _theta_block(layer, np.kron(a, gk)),
                        f"A ⊗ G, {_kind_note(k, ref.kind)}",
                        "KFAC",
                        name,
                    )
                )
            for label, wp in _layout_perms(layer):
                p = _layer_theta_perm(layer, wp)
                for c in list(out):
                    if "weight-layout" not in c.codes:
                        out.append(
                            Candidate(
                                (*c.codes, "weight-layout"),
                                c.array[np.ix_(p, p)],
                                f"{c.note + ', ' if c.note else ''}weights {label}",
                                "KFAC",
                                name,
                            )
                        )
        return out

    m = re.fullmatch(r"F/(exact|mc|empirical)(?:/(\w+))?", key)
    if m:
        kind, name = m.groups()
        suffix = f"/{name}" if name else ""
        for k in KINDS:
            out.append(
                Candidate(
                    () if k == kind else ("fisher-kind",),
                    lambda k=k: ref.get(f"F/{k}{suffix}"),
                    "" if k == kind else _kind_note(k, kind),
                    "F",
                    diag=ref.fisher_diag(k, name),
                )
            )
        perms = (
            [(lab, _layer_theta_perm(ref.layers[name], wp)) for lab, wp in _layout_perms(ref.layers[name])]
            if name
            else _global_layout_perms(ref)
        )
        for c in list(out):
            for label, p in perms:
                out.append(
                    Candidate(
                        (*c.codes, "weight-layout"),
                        lambda c=c, p=p: c.value()[np.ix_(p, p)],
                        f"{c.note + ', ' if c.note else ''}weights {label}",
                        "F",
                        diag=c.diag[p],
                    )
                )
        return out

    if key in ("grad", "loss"):
        out.append(Candidate((), ref.get(key), "", key))
        if key == "grad":
            for label, p in _global_layout_perms(ref):
                out.append(Candidate(("weight-layout",), ref.get(key)[p], f"weights {label}", "grad"))
        return out

    m = re.fullmatch(r"(\w+)\.weight", key)
    if m and m.group(1) in ref.layers:
        w = ref.get(key)
        out.append(Candidate((), w, ""))
        axes = {"(in, out)": (1, 0), "(in, out, kh, kw)": (1, 0, 2, 3), "(kh, kw, in, out)": (2, 3, 1, 0)}
        for label, _ in _layout_perms(ref.layers[m.group(1)]):
            out.append(Candidate(("weight-layout",), w.transpose(axes[label]), f"weights {label}"))
        return out

    if key in ("kfac_step", "ngd_step") or re.fullmatch(r"kinds/\w+/(kfac_step|ngd_step)", key):
        return _step_candidates(ref, key)

    out.append(Candidate((), ref.get(key), ""))
    return out


def _layer_grads(ref: Reference, grad: np.ndarray) -> list[np.ndarray]:
    """∇_{W̄_l} h (d_out, a_dim) per layer from the flat θ-order gradient."""
    out = []
    for name in ref.names:
        layer = ref.layers[name]
        lo, hi = ref.param(name)["theta"]
        v = grad[lo:hi]
        w = v[: layer.weight.size].reshape(layer.d_out, layer.d_in)
        out.append(np.concatenate([w, v[layer.weight.size :, None]], axis=1) if layer.bias is not None else w)
    return out


def _flat(ref: Reference, mats) -> np.ndarray:
    parts = []
    for name, m in zip(ref.names, mats):
        layer = ref.layers[name]
        parts.append(m[:, : layer.d_in].ravel())
        if layer.bias is not None:
            parts.append(m[:, layer.d_in])
    return np.concatenate(parts)


def _damped_solve(a, g, v, lam: float, form: str, eig=None):
    """One layer's damped Kronecker solve, vec⁻¹[(damped G ⊗ A)⁻¹ vec(V)], in one of the damping forms.

    ``eig``: (d_A, U_A, d_G, U_G) of a and g, if known (form "exact" only).
    """
    ia, ig = np.eye(a.shape[0]), np.eye(g.shape[0])
    ta, tg = np.trace(a) / a.shape[0], np.trace(g) / g.shape[0]
    pi = math.sqrt(ta / tg) if ta > 0 and tg > 0 else 1.0
    r = math.sqrt(lam)
    if form == "exact":
        da, ua, dg, ug = eig if eig is not None else (*np.linalg.eigh(a), *np.linalg.eigh(g))
        da, dg = np.maximum(da, 0), np.maximum(dg, 0)
        return ug @ ((ug.T @ v @ ua) / (dg[:, None] * da[None, :] + lam)) @ ua.T
    ad, gd = {
        "factored": (a + pi * r * ia, g + (r / pi) * ig),
        "pi-omitted": (a + r * ia, g + r * ig),
        "lambda": (a + pi * lam * ia, g + (lam / pi) * ig),
        "lambda-pi-omitted": (a + lam * ia, g + lam * ig),
        "one-A": (a + lam * ia, g),
        "one-G": (a, g + lam * ig),
    }[form]
    return np.linalg.solve(gd, np.linalg.solve(ad.T, v.T).T)


_FORMS = {
    "factored": ((), ""),
    "pi-omitted": (("pi-omitted",), "π omitted"),
    "lambda": (("damping-form",), "λ instead of √λ on each factor"),
    "lambda-pi-omitted": (("damping-form", "pi-omitted"), "λ on each factor, π omitted"),
    "one-A": (("damping-form",), "λ on A only"),
    "one-G": (("damping-form",), "λ on G only"),
    "exact": (("damping-form",), "exact damping (G ⊗ A + λI)"),
}


def _step_candidates(ref: Reference, key: str) -> list[Candidate]:
    """kfac_step / ngd_step recomputed under each mistake (and pairs of mistakes)."""
    m = re.fullmatch(r"kinds/(\w+)/(\w+)", key)
    kind, which = (m.group(1), m.group(2)) if m else (ref.kind, key)
    grad = ref.get("grad")
    n, lam = ref.n, ref.damping
    out: list[Candidate] = []
    # (codes, note, kind used, G scale, grad scale, per-layer A scale, per-layer G scale, A rolled)
    mods = [((), "", 1.0, 1.0, None, None, False)]
    mods += [
        (("loss-mean-scale",), f"G {lab}", s, 1.0, None, None, False)
        for s, lab in ((n**-2, "÷ N²"), (1 / n, "÷ N"), (n, "× N"), (n**2, "× N²"))
    ]
    if ref.mse:
        mods += [
            (("mse-half",), f"no ½: G × {c:g}, ∇h × {gs:g}", c, gs, None, None, False)
            for c, gs in ((2, 2), (4, 2), (1, 2), (0.5, 0.5), (0.25, 0.5), (1, 0.5))
        ]
    if which == "kfac_step":
        conv = [nm for nm in ref.names if ref.locations(nm) > 1]
        if conv:
            for ea, eg in ((-1, 0), (1, 0), (0, -1), (0, 1), (-1, 1), (1, -1), (-2, 0), (2, 0), (0, -2), (0, 2)):
                sa = {nm: float(ref.locations(nm)) ** ea for nm in conv}
                sg = {nm: float(ref.locations(nm)) ** eg for nm in conv}
                mods.append((("conv-locations",), f"Ω × T^{ea}, Γ × T^{eg}", 1.0, 1.0, sa, sg, False))
        if any(ref.layers[nm].bias is not None for nm in ref.names):
            mods.append((("bias-coordinate",), "A with the homogeneous coordinate first", 1.0, 1.0, None, None, True))
    kinds = [(kind, ())] + [(k, ("fisher-kind",)) for k in KINDS if k != kind]
    for k, kcodes in kinds:
        knote = _kind_note(k, kind) if kcodes else ""
        for mcodes, mnote, gscale, gradscale, sa, sg, roll in mods:
            base_codes = tuple(dict.fromkeys(kcodes + mcodes))
            note = ", ".join(x for x in (knote, mnote) if x)
            if which == "ngd_step":
                from ..fisher import woodbury_solve_vectors

                v = ref.get(f"V/{k}") * math.sqrt(gscale)
                step = -woodbury_solve_vectors(v, gradscale * grad, lam, n)
                out.append(Candidate(base_codes, step, note))
                continue
            lgs = _layer_grads(ref, gradscale * grad)
            for form, (fcodes, fnote) in _FORMS.items():
                mats = []
                try:
                    for name, lg in zip(ref.names, lgs):
                        ca, cg = (sa or {}).get(name, 1.0), gscale * (sg or {}).get(name, 1.0)
                        gkey = f"G/{name}" if k == ref.kind else f"kinds/{k}/G/{name}"
                        a, g = ref.get(f"A/{name}") * ca, ref.get(gkey) * cg
                        (da, ua), (dg, ug) = ref.eig(f"A/{name}"), ref.eig(gkey)
                        if roll and ref.layers[name].bias is not None:
                            d = ref.layers[name].d_in
                            r = np.r_[d, :d]
                            a, ua = a[np.ix_(r, r)], ua[r]
                        eig = (ca * da, ua, cg * dg, ug) if form == "exact" else None
                        mats.append(_damped_solve(a, g, lg, lam, form, eig))
                except np.linalg.LinAlgError:
                    continue
                step = -_flat(ref, mats)
                if not np.all(np.isfinite(step)):
                    continue
                codes = tuple(dict.fromkeys(base_codes + fcodes))
                out.append(Candidate(codes, step, ", ".join(x for x in (note, fnote) if x)))
    for label, p in _global_layout_perms(ref):
        for c in list(out):
            if len(c.codes) <= 1:
                out.append(
                    Candidate(
                        (*c.codes, "weight-layout"), c.array[p], f"{c.note + ', ' if c.note else ''}weights {label}"
                    )
                )
    return out


# ---- comparing ----------------------------------------------------------------------------


def rel_error(theirs: np.ndarray, ref: np.ndarray) -> float:
    """‖theirs − ref‖_F / ‖ref‖_F (the absolute error when ref is zero); inf for non-finite input."""
    t = np.asarray(theirs, dtype=np.float64)
    if not np.all(np.isfinite(t)):
        return math.inf
    r = np.asarray(ref, dtype=np.float64)
    den = float(np.linalg.norm(r))
    num = float(np.linalg.norm(t - r))
    return num / den if den > 0 else num


def _matches(c: Candidate, theirs: np.ndarray, ref: Reference, tol: float) -> list[tuple[frozenset, str]]:
    """[(codes, note)] for each way this candidate reproduces their array within tol."""
    if c.diag is not None:  # a large square candidate: its diagonal must fit first
        if theirs.ndim != 2 or theirs.shape != (c.diag.size, c.diag.size):
            return []
        probe = Candidate(c.codes, c.diag, c.note, c.family, c.name)
        if not _matches(probe, np.diagonal(theirs), ref, tol):
            return []
    b = np.asarray(c.value(), dtype=np.float64)
    if b.shape != theirs.shape:
        return []
    if c.family is None:
        return [(frozenset(c.codes), c.note)] if rel_error(theirs, b) <= tol else []
    bb = float(np.vdot(b, b))
    if bb == 0:
        return []
    s = float(np.vdot(b, theirs)) / bb  # the least-squares constant factor
    if not s > 0 or rel_error(theirs, s * b) > tol:
        return []
    out = []
    for f, codes, note in _scales(ref, c.family, c.name):
        if abs(s - f) <= tol * f:
            allc = frozenset(c.codes + codes)
            out.append((allc, ", ".join(x for x in (c.note, note) if x)))
    return out


def audit_arrays(ref: Reference, theirs: dict, rtol: float | None = None, source: str = "THEIRS") -> list[Result]:
    """One :class:`Result` per key of ``theirs`` (every key must be one the bundle defines)."""
    unknown = [k for k in theirs if not ref.has(k)]
    if unknown:
        k = unknown[0]
        near = difflib.get_close_matches(k, ref.keys(), n=3)
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        raise AuditInputError(
            f"{source}: key {k!r} is not a key of the bundle{hint}; keys are named as in spec.json 'keys' "
            f"(layer names: {', '.join(ref.names)})"
        )
    results = []
    for key, arr in theirs.items():
        t = np.asarray(arr)
        tol = rtol if rtol is not None else RTOL["float32" if t.dtype.itemsize <= 4 else "float64"]
        t = t.astype(np.float64)
        r = ref.get(key)
        res = Result(key, "ok", None, shape=tuple(t.shape), ref_shape=tuple(r.shape))
        if t.shape == r.shape:
            res.rel_error = rel_error(t, r)
            if res.rel_error <= tol:
                results.append(res)
                continue
        res.status = "mismatch"
        if np.all(np.isfinite(t)):
            found: dict[frozenset, str] = {}
            for c in _candidates(ref, key):
                for codes, note in _matches(c, t, ref, tol):
                    if codes:
                        found.setdefault(codes, note)
            minimal = [s for s in found if not any(o < s for o in found)]
            if len(minimal) == 1:
                res.diagnoses = sorted(minimal[0])
                res.notes = [found[minimal[0]]]
            elif minimal:
                res.candidates = sorted(sorted(s) for s in minimal)
        results.append(res)
    return results


def report(results: list[Result], ref: Reference, bundle_path, theirs_path) -> dict:
    return {
        "bundle": str(bundle_path),
        "theirs": str(theirs_path),
        "kind": ref.kind,
        "damping": ref.damping,
        "rtol": RTOL,
        "results": [r.as_dict() for r in results],
        "summary": {
            "ok": sum(r.status == "ok" for r in results),
            "mismatch": sum(r.status == "mismatch" for r in results),
            "diagnosed": sum(bool(r.diagnoses) for r in results),
        },
    }


def format_results(results: list[Result]) -> str:
    """The human-readable report: one line per key, and what a diagnosed mistake is."""
    width = max((len(r.key) for r in results), default=3)
    lines = []
    for r in results:
        err = (
            "shape " + "×".join(map(str, r.shape)) + " vs " + "×".join(map(str, r.ref_shape))
            if r.rel_error is None
            else f"rel. error {r.rel_error:.2e}"
        )
        if r.status == "ok":
            lines.append(f"ok        {r.key:<{width}}  {err}")
            continue
        lines.append(f"MISMATCH  {r.key:<{width}}  {err}")
        if r.diagnoses:
            lines.append(f"          → {r.diagnosis}: {r.notes[0]}" if r.notes[0] else f"          → {r.diagnosis}")
            for c in r.diagnoses:
                lines.append(f"            {c}: {CODES[c][0]} ({CODES[c][1]})")
        elif r.candidates:
            alts = " | ".join("+".join(c) for c in r.candidates)
            lines.append(f"          → unexplained: several explanations fit equally ({alts});")
            lines.append("            a batch size N unlike every layer's T (and N² unlike T²) tells them apart")
        else:
            lines.append("          → unexplained: no known mistake reproduces it")
    ok = sum(r.status == "ok" for r in results)
    lines.append(f"{ok} of {len(results)} keys agree")
    return "\n".join(lines)


def run(bundle_path, theirs_path, rtol: float | None = None) -> tuple[list[Result], dict, Reference]:
    """Load both files (clear one-line errors), compare, and return (results, JSON report, reference)."""
    theirs = _load_npz(theirs_path, "THEIRS")
    if not theirs:
        raise AuditInputError(f"THEIRS {theirs_path}: holds no arrays")
    ref = Reference(bundle_path)
    results = audit_arrays(ref, theirs, rtol, f"THEIRS {theirs_path}")
    return results, report(results, ref, bundle_path, theirs_path), ref
