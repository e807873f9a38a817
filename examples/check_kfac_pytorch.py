"""Check a PyTorch K-FAC against a kfac_ref reference bundle, end to end.

    kfac-ref reference --out ref                      # a network, a batch, every reference quantity
    python examples/check_kfac_pytorch.py ref         # PyTorch: rebuild, compute, write ref/THEIRS.npz, audit

The script (1) rebuilds the bundle's network as a ``torch.nn.Sequential`` from spec.json and loads
the weights with ``load_state_dict``; (2) computes the K-FAC factors with forward and backward
hooks, the gradient, the dense Fisher from per-sample Jacobians (``torch.func``), the K-FAC step
with factored damping and the damped natural-gradient step; (3) writes them to THEIRS.npz under
the bundle's key names; (4) runs ``kfac-ref audit`` on the pair and exits with its code (0: every
key agrees).  ``--mistake NAME`` makes one of the classic mistakes on purpose, to see the audit
name it.  Needs torch; kfac_ref itself does not.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as tfun
from torch import nn

MISTAKES = {
    "none": "the textbook K-FAC of the bundle (every key should agree)",
    "empirical": "G from the data labels, whatever the bundle's kind (fisher-kind)",
    "mean-loss": "G from backpropagating the batch-mean loss: gradients 1/N too small (loss-mean-scale)",
    "kron-order": "the dense K-FAC block formed as A ⊗ G (kron-order)",
    "locations": "Ω averaged over the output locations instead of summed (conv-locations)",
    "bias-first": "the homogeneous coordinate placed first in A (bias-coordinate)",
    "no-pi": "factored damping without π (pi-omitted)",
    "damping-lambda": "λ instead of √λ on each factor (damping-form)",
    "weight-layout": "flat vectors with the weights stored (in, out) (weight-layout)",
}


# ---- 1. the network and the batch -----------------------------------------------------------


def build_model(layers: list[dict]) -> nn.Sequential:
    """torch.nn.Sequential from spec.json's layers: each dict is a constructor's keyword arguments."""
    mods = []
    for d in layers:
        kwargs = {k: v for k, v in d.items() if k != "type"}
        mods.append(getattr(nn, d["type"])(**kwargs))
    return nn.Sequential(*mods)


def load(bundle: Path, dtype=torch.float64):
    spec = json.loads((bundle / "spec.json").read_text())
    arrays = np.load(bundle / "bundle.npz", allow_pickle=False)
    model = build_model(spec["layers"]).to(dtype)
    state = {k: torch.from_numpy(arrays[k]).to(dtype) for k in model.state_dict()}
    model.load_state_dict(state)  # PyTorch's names and layouts: nothing to transpose
    batch = {k: torch.from_numpy(arrays[k]) for k in ("x", "y", "y_mc")}
    batch["x"] = batch["x"].to(dtype)
    if spec["loss"]["type"] == "SquaredErrorLoss":
        batch["y"], batch["y_mc"] = batch["y"].to(dtype), batch["y_mc"].to(dtype)
    return spec, model, batch


# ---- 2. the loss and the Fisher seeds -------------------------------------------------------


def mean_loss(spec, f, y):
    """h = (1/N) Σ_n ℓ_n: cross-entropy, or ½‖f − y‖² (with the ½)."""
    if spec["loss"]["type"] == "CrossEntropyLoss":
        return tfun.cross_entropy(f, y)
    return 0.5 * ((f - y) ** 2).sum(dim=1).mean()


def label_grad(spec, f, y):
    """∂ℓ_n/∂f_n at per-sample scale.  (N, C)"""
    if spec["loss"]["type"] == "CrossEntropyLoss":
        return torch.softmax(f, dim=1) - tfun.one_hot(y, f.shape[1]).to(f.dtype)
    return f - y


def seeds(spec, f, batch, kind):
    """(S, N, C) output vectors whose backpropagation gives the Fisher of ``kind``."""
    if kind == "exact":  # the columns of S_n with S_n S_nᵀ = Λ_n
        if spec["loss"]["type"] == "CrossEntropyLoss":
            p = torch.softmax(f, dim=1)
            eye = torch.eye(f.shape[1], dtype=f.dtype)
            s = (eye[None] - p[:, :, None]) * p.sqrt()[:, None, :]  # [n, :, c] = √p_c (e_c − p)
            return s.permute(2, 0, 1)
        return torch.eye(f.shape[1], dtype=f.dtype)[:, None, :].expand(-1, f.shape[0], -1)
    labels = batch["y_mc"] if kind == "mc" else batch["y"]  # mc: the bundle's drawn targets
    return label_grad(spec, f, labels)[None]


# ---- 3. K-FAC with hooks ----------------------------------------------------------------------


def kfac_factors(model, spec, batch, kind, mistake="none"):
    """{name: (A, G)} per Linear/Conv2d layer; for Conv2d (Ω, Γ): Ω sums, Γ averages over locations."""
    layers = {name: m for name, m in model.named_children() if isinstance(m, (nn.Linear, nn.Conv2d))}
    inputs, outputs = {}, {}
    hooks = []
    for name, m in layers.items():
        hooks.append(m.register_forward_hook(lambda mod, inp, out, name=name: inputs.__setitem__(name, inp[0])))
        hooks.append(m.register_forward_hook(lambda mod, inp, out, name=name: outputs.__setitem__(name, out)))
    f = model(batch["x"])
    for h in hooks:
        h.remove()
    n = f.shape[0]
    e = seeds(spec, f.detach(), batch, "empirical" if mistake == "empirical" else kind)
    if mistake == "mean-loss":
        e = e / n  # what backpropagating h = (1/N) Σ ℓ_n gives
    outs = list(outputs.values())
    out = {}
    grads = {name: [] for name in layers}
    for s in range(e.shape[0]):
        gs = torch.autograd.grad(f, outs, grad_outputs=e[s], retain_graph=True)
        for name, g in zip(layers, gs):
            grads[name].append(g.detach())
    for name, m in layers.items():
        a = inputs[name].detach()
        if isinstance(m, nn.Conv2d):
            a = tfun.unfold(a, m.kernel_size, padding=m.padding, stride=m.stride).transpose(1, 2)  # (N, T, d_in)
            g = torch.stack(grads[name]).flatten(3).transpose(2, 3)  # (S, N, T, C_out)
        else:
            a = a[:, None, :]
            g = torch.stack(grads[name])[:, :, None, :]
        t = a.shape[1]
        if m.bias is not None:
            ones = torch.ones(*a.shape[:2], 1, dtype=a.dtype)
            a = torch.cat([ones, a] if mistake == "bias-first" else [a, ones], dim=2)
        a2 = a.reshape(-1, a.shape[-1])
        big_a = a2.T @ a2 / n  # Ω: mean over samples, sum over locations
        if mistake == "locations" and t > 1:
            big_a = big_a / t
        g2 = g.reshape(-1, g.shape[-1])
        big_g = g2.T @ g2 / (n * t)  # Γ: mean over samples and locations, sum over seeds
        out[name] = (big_a, big_g)
    return out


def layer_grad_matrix(m):
    """∇_{W̄} h = [∇W reshaped (out, -1) | ∇b]  (d_out, a_dim)."""
    gw = m.weight.grad.reshape(m.weight.shape[0], -1)
    return torch.cat([gw, m.bias.grad[:, None]], dim=1) if m.bias is not None else gw


def to_theta(m, mat):
    """[W | b] → weight raveled (PyTorch layout), then bias."""
    w = mat[:, : m.weight[0].numel()].reshape(m.weight.shape)
    parts = [w.reshape(-1)] + ([mat[:, -1]] if m.bias is not None else [])
    return torch.cat(parts)


def kfac_step(model, factors, lam, mistake="none"):
    """−(⊕ (G + √λ/π I) ⊗ (A + π√λ I))⁻¹ ∇h, flat in parameters_to_vector order."""
    parts = []
    for name, m in model.named_children():
        if name not in factors:
            continue
        a, g = factors[name]
        pi = math.sqrt((torch.trace(a) / a.shape[0]) / (torch.trace(g) / g.shape[0]))
        if mistake == "no-pi":
            pi = 1.0
        d = lam if mistake == "damping-lambda" else math.sqrt(lam)
        ad = a + pi * d * torch.eye(a.shape[0], dtype=a.dtype)
        gd = g + d / pi * torch.eye(g.shape[0], dtype=g.dtype)
        v = layer_grad_matrix(m)
        parts.append(to_theta(m, -torch.linalg.solve(gd, torch.linalg.solve(ad, v.T).T)))
    return torch.cat(parts)


def dense_fisher(model, spec, batch, kind):
    """F = (1/N) Σ_n J_nᵀ (Σ_s e_{s,n} e_{s,n}ᵀ) J_n from per-sample Jacobians (torch.func)."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def f_one(p, x):
        return torch.func.functional_call(model, p, (x[None],))[0]

    jac = torch.func.vmap(torch.func.jacrev(f_one), in_dims=(None, 0))(params, batch["x"])
    j = torch.cat([jac[k].flatten(2) for k in params], dim=2)  # (N, C, P), parameters_to_vector order
    with torch.no_grad():
        e = seeds(spec, model(batch["x"]), batch, kind)  # (S, N, C)
    u = torch.einsum("snc,ncp->snp", e, j).reshape(-1, j.shape[2])
    return u.T @ u / batch["x"].shape[0]


def weight_layout_in_out(model, flat):
    """A θ vector with every weight stored (in, out[, kh, kw]): what the weight-layout mistake writes."""
    parts, i = [], 0
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            for p in (m.weight, m.bias):
                if p is None:
                    continue
                v = flat[i : i + p.numel()].reshape(p.shape)
                parts.append(v.transpose(0, 1).reshape(-1) if p is m.weight else v)
                i += p.numel()
    return torch.cat(parts)


def theirs(bundle: Path, mistake: str = "none", dtype=torch.float64) -> dict[str, np.ndarray]:
    """Every quantity of the bundle's kind, computed by PyTorch, under the bundle's key names."""
    spec, model, batch = load(bundle, dtype)
    kind, lam = spec["kind"], spec["damping"]
    factors = kfac_factors(model, spec, batch, kind, mistake)
    model.zero_grad()
    mean_loss(spec, model(batch["x"]), batch["y"]).backward()
    grad = torch.nn.utils.parameters_to_vector(p.grad for p in model.parameters())
    step = kfac_step(model, factors, lam, mistake)
    f = dense_fisher(model, spec, batch, kind)
    ngd = -torch.linalg.solve(f + lam * torch.eye(f.shape[0], dtype=f.dtype), grad)
    out = {"grad": grad, "kfac_step": step, "ngd_step": ngd, f"F/{kind}": f}
    for name, (a, g) in factors.items():
        out[f"A/{name}"], out[f"G/{name}"] = a, g
        if mistake == "kron-order":
            m = dict(model.named_children())[name]
            nw, d_out = m.weight.numel(), m.weight.shape[0]
            idx = torch.arange(nw + d_out)
            perm = torch.cat([idx[:nw].reshape(d_out, -1), idx[nw:, None]], dim=1).reshape(-1)  # vec(W̄) ↦ θ
            k = torch.kron(a, g)
            block = torch.empty_like(k)
            block[perm[:, None], perm[None, :]] = k
            out[f"KFAC/{name}"] = block
    if mistake == "weight-layout":
        out = {k: weight_layout_in_out(model, out[k]) for k in ("grad", "kfac_step", "ngd_step")}
    return {k: v.detach().numpy() for k, v in out.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", type=Path, help="a folder written by kfac-ref reference")
    p.add_argument("--out", type=Path, help="THEIRS.npz to write (default: BUNDLE/THEIRS.npz)")
    p.add_argument("--mistake", choices=MISTAKES, default="none", help="make one classic mistake on purpose")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    args = p.parse_args(argv)
    out = args.out or args.bundle / "THEIRS.npz"
    arrays = theirs(args.bundle, args.mistake, getattr(torch, args.dtype))
    np.savez(out, **arrays)
    print(f"wrote {out} ({', '.join(arrays)}); mistake: {MISTAKES[args.mistake]}")
    cmd = [
        sys.executable,
        "-m",
        "kfac_ref",
        "audit",
        str(args.bundle),
        str(out),
        "--json",
        str(out.with_suffix(".json")),
    ]
    return subprocess.run(cmd, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
