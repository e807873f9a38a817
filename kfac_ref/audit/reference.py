"""A reference bundle: a network, a batch and every K-FAC quantity of docs/math.md §1–6, in float64.

``build_bundle(model, loss_fn, x, y, kind, damping)`` returns the spec (a JSON-able dict, see
:mod:`.spec` for the layers) and the arrays; :func:`write_bundle` writes ``spec.json`` and
``bundle.npz``.  Keys (``<l>`` is a Linear/Conv2d layer's index in the Sequential, as in ``state_dict``)::

    <l>.weight, <l>.bias      PyTorch's names and layouts
    x, y, y_mc                the batch and the Monte-Carlo targets drawn (one per sample, M = 1)
    loss                      h = (1/N) Σ_n ℓ_n, 0-d
    grad                      ∇h (P,), θ's order (PyTorch's ``parameters_to_vector`` order)
    A/<l>, G/<l>              K-FAC factors of the bundle's kind (Ω, Γ for Conv2d), docs/math.md §4–5
    F/<kind>                  the dense Fisher (P, P) of the bundle's kind, where P ≤ max_dense; its layer
                              blocks are F[lo:hi, lo:hi] with (lo, hi) = spec.json parameters[·].theta
    V/<k>                     for every kind k: rows u_{s,n} = J_nᵀ e_{s,n}, F_k = Vᵀ V / N  (K, P)
    kfac_step                 −(⊕_l (G_l + √λ/π_l I) ⊗ (A_l + π_l √λ I))⁻¹ ∇h   (docs/math.md §6.1)
    ngd_step                  −(F + λ I)⁻¹ ∇h   (docs/math.md §3)
    kinds/<k>/G/<l>, kinds/<k>/kfac_step, kinds/<k>/ngd_step   the same for the other kinds k

The audit also accepts the keys ``F/<k>`` and ``F/<k>/<l>`` for every kind (Vᵀ V / N and its blocks)
and ``KFAC/<l>`` (G ⊗ A permuted into the layer's θ order), derived from the stored arrays.

Every quantity comes from the library's public functions (``fisher.kfac_factors``,
``fisher.fisher_vectors``, ``fisher.FactoredInverse``, ``fisher.dense_solve``,
``grads.loss_and_grad``).  The Monte-Carlo kind is computed as the empirical one with the drawn
targets ``y_mc`` as labels, which is what ``kind="mc"`` does with M = 1 (docs/math.md §3), so that
anyone holding ``y_mc`` reproduces it exactly.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .. import fisher, nn
from ..grads import loss_and_grad
from ..io import write_together
from ..params import wbar_to_flat
from .spec import layers_to_spec, load_state_dict, param_layer_names, spec_to_model, state_dict

FORMAT = "kfac_ref reference bundle 1"
KINDS = fisher.KINDS  # ("exact", "mc", "empirical")
DEFAULT_DAMPING = 1e-2
DEFAULT_MAX_DENSE = 4096  # the dense (P, P) Fisher is stored up to this P (P = 4096: 128 MiB)

LOSSES = {
    "CrossEntropyLoss": (
        nn.CrossEntropyLoss,
        "ℓ(f, y) = −log softmax(f)_y, h = (1/N) Σ_n ℓ_n: torch.nn.CrossEntropyLoss() (reduction='mean'); "
        "y integer labels (N,)",
    ),
    "SquaredErrorLoss": (
        nn.SquaredErrorLoss,
        "ℓ(f, y) = ½ ‖f − y‖² (with the ½, so Λ = I), h = (1/N) Σ_n ℓ_n = 0.5 · C · torch.nn.MSELoss()(f, y); "
        "y (N, C) real targets; Monte-Carlo targets ŷ = f + ε, ε ~ N(0, I)",
    ),
}

CONVENTIONS = {
    "theta": "θ lists the Linear/Conv2d layers in network order; within a layer the weight raveled in C order "
    "(PyTorch's (out, in) or (out, in, kh, kw) layout), then the bias: torch.nn.utils.parameters_to_vector "
    "order. Every flat vector and every dense (P, P) or (p_l, p_l) matrix is in this order.",
    "A": "A/<l> = (1/N) Σ_n Σ_t ā_{n,t} ā_{n,t}ᵀ, ā = [a; 1] with the homogeneous coordinate LAST "
    "(a_dim = d_in + 1; d_in = C_in·kh·kw for Conv2d, patches unfolded channel-major as torch.nn.functional.unfold "
    "does). For Conv2d (Ω) this is a SUM over the T output locations.",
    "G": "G/<l> = (1/(N T)) Σ_n Σ_s Σ_t g_{s,n,t} g_{s,n,t}ᵀ with g = ∂ℓ_n/∂s at per-sample scale (the gradient of "
    "one sample's loss ℓ_n, not of the batch-mean loss h). For Conv2d (Γ) this is a MEAN over the T locations. "
    "T = 1 for Linear. KFC location split: Ω sums, Γ averages (docs/math.md §5). For the squared error, ℓ = ½‖f − y‖² "
    "WITH the ½: the output gradient is f − y and Λ = I (without the ½, G doubles for the exact kind and "
    "quadruples for the mc and empirical kinds).",
    "seeds": "exact: the C columns of S_n, S_n S_nᵀ = Λ_n (Λ = diag(p) − p pᵀ for cross-entropy, I for the squared "
    "error with the ½); mc: the gradient of ℓ(f_n, y_mc_n) (one draw per sample, M = 1); empirical: the gradient "
    "of ℓ(f_n, y_n) (docs/math.md §3).",
    "F": "F/<kind> = (1/N) Σ_n Σ_s u_{s,n} u_{s,n}ᵀ = Vᵀ V / N, u = J_nᵀ e_{s,n} (docs/math.md §3); F/<kind>/<l> its "
    "diagonal block of layer l.",
    "KFAC": "KFAC/<l> = G ⊗ A, the Kronecker product in row-major vec([W | b]) order (index o·a_dim + i), permuted "
    "into the layer's θ order (weight then bias); column-major write-ups call the same matrix A ⊗ G.",
    "kfac_step": "kfac_step = −⊕_l vec⁻¹[(G_l + (√λ/π_l) I)⁻¹ ∇_{W̄_l} h (A_l + π_l √λ I)⁻¹], "
    "π_l = sqrt((tr A_l / dim A_l) / (tr G_l / dim G_l)) (factored Tikhonov damping, docs/math.md §6.1), "
    "the update at learning rate 1, flat in θ's order.",
    "ngd_step": "ngd_step = −(F + λ I)⁻¹ ∇h with the dense Fisher of the bundle's kind (docs/math.md §3).",
    "names": "<l> is the layer's index in the nn.Sequential (as in state_dict), e.g. A/0, G/0, 0.weight.",
}


def locations(model, input_shape) -> dict[str, int]:
    """T (output locations) of every Linear/Conv2d layer: H_out·W_out for Conv2d, 1 for Linear."""
    out, shape = {}, tuple(input_shape)
    for i, layer in enumerate(model.layers):
        shape = layer.output_shape(shape)
        if isinstance(layer, nn.ParamLayer):
            out[str(i)] = math.prod(shape[1:]) if layer.kind == "conv" else 1
    return out


def loss_name(loss_fn) -> str:
    for name, (cls, _) in LOSSES.items():
        if type(loss_fn) is cls:
            return name
    raise TypeError(f"unsupported loss {loss_fn!r}: expected one of {', '.join(LOSSES)}")


def _kind_quantities(model, loss_fn, x, y, y_mc, kind, damping, layer_grads, grad, dense):
    """factors, V, F (or None), kfac_step and ngd_step for one kind."""
    labels, as_kind = {"exact": (y, "exact"), "mc": (y_mc, "empirical"), "empirical": (y, "empirical")}[kind]
    factors = fisher.kfac_factors(model, loss_fn, x, labels, as_kind)
    v = fisher.fisher_vectors(model, loss_fn, x, labels, as_kind)  # (K, P)
    n = x.shape[0]
    f = (v.T @ v) / n if dense else None  # the 1/N of F = (1/N) Σ_n … (docs/math.md §3)
    layers = model.param_layers()
    kfac_step = -np.concatenate(
        [
            wbar_to_flat(layer, fisher.FactoredInverse.from_factors(a, g, damping).apply(lg))
            for layer, (a, g), lg in zip(layers, factors, layer_grads)
        ]
    )
    if f is not None:
        ngd_step = -fisher.dense_solve(f, grad, damping)
    else:
        ngd_step = -fisher.woodbury_solve_vectors(v, grad, damping, n)
    return factors, v, f, kfac_step, ngd_step


def build_bundle(
    model,
    loss_fn,
    x,
    y,
    kind: str = "exact",
    damping: float = DEFAULT_DAMPING,
    seed: int = 0,
    max_dense: int = DEFAULT_MAX_DENSE,
) -> tuple[dict, dict]:
    """(spec, arrays) for a kfac_ref Sequential and a batch; every array float64 (labels int64).

    The model is copied into float64 through its PyTorch-named spec and weights, so what the
    bundle describes is exactly what ``spec.json`` and the weights rebuild.  ``seed`` draws
    the Monte-Carlo targets ``y_mc`` from ``numpy.random.default_rng(seed)``.
    """
    fisher.seeds.check_kind(kind)
    if not (isinstance(damping, (int, float)) and damping > 0 and math.isfinite(damping)):
        raise ValueError(f"damping must be a positive number (factored damping needs λ > 0), got {damping!r}")
    name = loss_name(loss_fn)
    layers = layers_to_spec(model)
    weights = {k: np.asarray(v, dtype=np.float64) for k, v in state_dict(model).items()}
    ref = spec_to_model(layers, np.float64)
    load_state_dict(ref, weights)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    y = y.astype(np.float64) if np.issubdtype(y.dtype, np.floating) else y.astype(np.int64)
    n = x.shape[0]
    input_shape = tuple(int(d) for d in x.shape[1:])
    t_of = locations(ref, input_shape)

    res = loss_and_grad(ref, loss_fn, x, y)
    f_out = ref(x)
    y_mc = loss_fn.sample(f_out, np.random.default_rng(seed), 1)[0]  # (N,) or (N, C): one draw per sample
    p = ref.num_params
    dense = p <= max_dense
    names = param_layer_names(ref)
    player = ref.param_layers()

    arrays = {**weights, "x": x, "y": y, "y_mc": y_mc, "loss": np.asarray(res.loss), "grad": res.grad}
    for k in KINDS:
        factors, v, f, kstep, nstep = _kind_quantities(
            ref, loss_fn, x, y, y_mc, k, damping, res.layer_grads, res.grad, dense and k == kind
        )
        arrays[f"V/{k}"] = v
        if k != kind:
            for nm, (_, g) in zip(names, factors):
                arrays[f"kinds/{k}/G/{nm}"] = g
            arrays[f"kinds/{k}/kfac_step"] = kstep
            arrays[f"kinds/{k}/ngd_step"] = nstep
            continue
        for nm, (a, g) in zip(names, factors):
            arrays[f"A/{nm}"], arrays[f"G/{nm}"] = a, g
        if f is not None:
            arrays[f"F/{k}"] = f
        arrays["kfac_step"], arrays["ngd_step"] = kstep, nstep

    params = []
    start = 0
    for nm, layer in zip(names, player):
        d = {
            "name": nm,
            "type": "Conv2d" if layer.kind == "conv" else "Linear",
            "weight": list(layer.weight.shape),
            "bias": None if layer.bias is None else list(layer.bias.shape),
            "a_dim": layer.a_dim,
            "d_out": layer.d_out,
            "locations": t_of[nm],
            "theta": [start, start + layer.num_params],
        }
        start += layer.num_params
        params.append(d)
    spec = {
        "format": FORMAT,
        "layers": layers,
        "input_shape": list(input_shape),
        "num_outputs": int(f_out.shape[1]),
        "loss": {"type": name, "definition": LOSSES[name][1]},
        "kind": kind,
        "damping": float(damping),
        "batch_size": n,
        "mc_samples": 1,
        "seed": int(seed),
        "num_params": p,
        "parameters": params,
        "conventions": CONVENTIONS,
        "keys": {k: list(np.shape(v)) for k, v in arrays.items()},
    }
    return spec, arrays


def write_bundle(out, spec: dict, arrays: dict) -> list[Path]:
    """Write ``out/spec.json`` and ``out/bundle.npz`` (uncompressed, no pickles), both or neither."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    text = json.dumps(spec, indent=1, ensure_ascii=False)  # encoded before any file is made

    def write_npz(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    return write_together(
        [(out / "spec.json", lambda tmp: tmp.write_text(text, encoding="utf-8")), (out / "bundle.npz", write_npz)]
    )


def model_from_bundle(spec: dict, arrays) -> nn.Sequential:
    """The float64 kfac_ref model a bundle describes, weights loaded."""
    model = spec_to_model(spec["layers"], np.float64)
    load_state_dict(model, {name: arrays[name] for name, _ in model.params()}, "bundle.npz")
    return model


def loss_from_spec(spec: dict):
    name = spec.get("loss", {}).get("type") if isinstance(spec.get("loss"), dict) else None
    if name not in LOSSES:
        raise ValueError(f"spec.json: unknown loss {name!r}: expected one of {', '.join(LOSSES)}")
    return LOSSES[name][0]()
