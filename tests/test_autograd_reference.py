"""An independent reference for block-tridiagonal K-FAC and EKFAC (docs/math.md §11–§12).

The brute-force tests (tests/test_tridiag.py, tests/test_ekfac.py) use the library's own
backpropagation.  Here the same nets are rebuilt with our weights — in PyTorch float64,
differentiated by torch autograd one sample and one label at a time (skipped where torch
is absent, as in CI), and, without torch, with complex-step derivatives of a plain NumPy
forward pass — and F̂ and F_EKFAC are built from those per-sample quantities with dense
matrices only:

- F̂: the chain of §11 written with dense blocks: F̂_{l,l} = F̃_{l,l}, F̂_{l,m} = Ψ_l F̂_{l+1,m},
  Ψ_l = F̃_{l,l+1} F̃_{l+1,l+1}⁺, F̃_{l,m} = G_{l,m} ⊗ A_{l,m} entry by entry in θ's order;
- F_EKFAC: per layer Q diag(diag(Qᵀ F_l Q)) Qᵀ, Q = U_G ⊗ U_A the eigenvectors of the
  factors, F_l = (1/N) Σ_{n,c} w_{n,c} u u ᵀ of the per-sample, per-label gradients u.

Exact kind (cross-entropy): every label c with weight p_c; empirical kind: the data label.
"""

from __future__ import annotations

import numpy as np
import pytest

from kfac_ref import fisher, nn
from kfac_ref.params import layer_slices
from tests.helpers import classification_batch, tiny_convnet, tiny_mlp

TOL = 1e-8


def _rel(a, b):
    """max |a − b| / max |b|."""
    return float(np.abs(a - b).max() / np.abs(b).max())


# --- the constructions from per-sample quantities (no kfac_ref code) -------------------------
def _index(layer):
    """(d, k) of each θ entry of a layer: the weight (d_out, K) row-major, then the bias at k = K."""
    d_out, k_in = layer.d_out, layer.d_in
    d = np.repeat(np.arange(d_out), k_in)
    k = np.tile(np.arange(k_in), d_out)
    if layer.bias is not None:
        d, k = np.concatenate([d, np.arange(d_out)]), np.concatenate([k, np.full(d_out, k_in)])
    return d, k


def _kron_theta(g, a, row_layer, col_layer):
    """G ⊗ A as a (p_row, p_col) block in θ's order: entry [(d, k), (d', k')] = G[d, d'] A[k, k']."""
    (dr, kr), (dc, kc) = _index(row_layer), _index(col_layer)
    return g[dr[:, None], dc[None, :]] * a[kr[:, None], kc[None, :]]


def _tridiag_reference(layers, abar, gs, weights):
    """F̂ (P, P) from ā_l (N, a_l) and g_l (terms, N, d_l) with weights (terms, N) — dense chain."""
    n = abar[0].shape[0]
    a = {(l, m): abar[l].T @ abar[m] / n for l in range(len(layers)) for m in (l, l + 1) if m < len(layers)}
    g = {(l, m): np.einsum("tn,tni,tnj->ij", weights, gs[l], gs[m]) / n for (l, m) in a}
    f_tilde = {(l, m): _kron_theta(g[l, m], a[l, m], layers[l], layers[m]) for (l, m) in a}
    big = len(layers)
    hat = {(big - 1, big - 1): f_tilde[big - 1, big - 1]}
    for l in range(big - 2, -1, -1):
        # F̃⁺: rcond 1e-13 drops the numerically zero directions (the last G under cross-entropy,
        # Λ1 = 0) and keeps the small real ones (down to ~1e-10 of the largest in these nets)
        psi = f_tilde[l, l + 1] @ np.linalg.pinv(f_tilde[l + 1, l + 1], rcond=1e-13, hermitian=True)
        hat[l, l] = f_tilde[l, l]
        for m in range(l + 1, big):
            hat[l, m] = psi @ hat[l + 1, m]
    sizes = [len(_index(layer)[0]) for layer in layers]
    edges = np.concatenate([[0], np.cumsum(sizes)])
    out = np.zeros((edges[-1], edges[-1]))
    for (l, m), block in hat.items():
        out[edges[l] : edges[l + 1], edges[m] : edges[m + 1]] = block
        out[edges[m] : edges[m + 1], edges[l] : edges[l + 1]] = block.T
    return out


def _ekfac_block(layer, abar, g, u, weights):
    """Q diag(diag(Qᵀ F_l Q)) Qᵀ in θ's order: ā (N, T, K̄), g (terms, N, T, d), u (terms, N, p_l)."""
    n = abar.shape[0]
    a_fac = np.einsum("nti,ntj->ij", abar, abar) / n  # the scale of A and G leaves the eigenvectors alone
    g_fac = np.einsum("sn,snti,sntj->ij", weights, g, g) / n
    _, u_a = np.linalg.eigh(a_fac)
    _, u_g = np.linalg.eigh(g_fac)
    q = _kron_theta(u_g, u_a, layer, layer)  # (p_l, p_l): Q = U_G ⊗ U_A, rows in θ's order
    f_l = np.einsum("sn,sni,snj->ij", weights, u, u) / n
    s = np.einsum("ij,jk,ki->i", q.T, f_l, q)  # diag(Qᵀ F_l Q)
    return (q * s[None, :]) @ q.T


def _terms(probs, y, kind):
    """(labels (terms, N), weights (terms, N)): every class weighted by p (exact), or the data label."""
    n, c = probs.shape
    if kind == "empirical":
        return y[None, :], np.ones((1, n))
    return np.repeat(np.arange(c)[:, None], n, axis=1), probs.T


# --- PyTorch autograd ---------------------------------------------------------------------------
def _torch_net(torch, model):
    """Our Sequential as torch modules with our weights (float64), and the indices of its param layers."""
    tnn, mods, param_idx = torch.nn, [], []
    for layer in model.layers:
        if isinstance(layer, nn.Linear):
            m = tnn.Linear(layer.d_in, layer.d_out, bias=layer.bias is not None, dtype=torch.float64)
        elif isinstance(layer, nn.Conv2d):
            m = tnn.Conv2d(
                layer.in_channels,
                layer.out_channels,
                layer.kernel_size,
                stride=layer.stride,
                padding=layer.padding,
                bias=layer.bias is not None,
                dtype=torch.float64,
            )
        elif isinstance(layer, (nn.Tanh, nn.ReLU, nn.Flatten)):
            m = {nn.Tanh: tnn.Tanh, nn.ReLU: tnn.ReLU, nn.Flatten: tnn.Flatten}[type(layer)]()
        elif isinstance(layer, nn.MaxPool2d):
            m = tnn.MaxPool2d(layer.kernel_size)
        else:
            raise TypeError(f"no torch twin for {layer!r}")
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            with torch.no_grad():
                m.weight.copy_(torch.from_numpy(layer.weight))
                if layer.bias is not None:
                    m.bias.copy_(torch.from_numpy(layer.bias))
            param_idx.append(len(mods))
        mods.append(m)
    return mods, param_idx


def _torch_per_sample(torch, model, x, y, kind):
    """Per sample n and label term t, by torch autograd: ā_l (N, T, K̄), g_l (terms, N, T, d_l), u (terms, N, P)."""
    mods, param_idx = _torch_net(torch, model)
    params = [p for i in param_idx for p in mods[i].parameters()]  # weight, bias per layer: θ's order
    xt = torch.from_numpy(x)
    with torch.no_grad():
        h = xt
        for m in mods:
            h = m(h)
        probs = torch.softmax(h, dim=1).numpy()
    np.testing.assert_allclose(h.numpy(), model(x), rtol=0, atol=1e-12)  # the twin computes our function
    labels, weights = _terms(probs, y, kind)
    n = x.shape[0]
    abar, gs, us = None, [[] for _ in param_idx], []
    for t in range(labels.shape[0]):
        g_t, u_t, a_t = [[] for _ in param_idx], [], [[] for _ in param_idx]
        for i in range(n):
            h, outs = xt[i : i + 1], []
            for j, m in enumerate(mods):
                if j in param_idx:
                    inp = h
                    if isinstance(m, torch.nn.Conv2d):  # patches (1, K, T) in the weight's (C, kh, kw) order
                        inp = torch.nn.functional.unfold(h, m.kernel_size, padding=m.padding, stride=m.stride)
                        inp = inp.transpose(1, 2)  # (1, T, K)
                    else:
                        inp = inp[:, None, :]  # (1, 1, K)
                    a_t[param_idx.index(j)].append(torch.cat([inp, torch.ones_like(inp[..., :1])], -1)[0].detach())
                h = m(h)
                if j in param_idx:
                    outs.append(h)
            loss = -torch.log_softmax(h, dim=1)[0, int(labels[t, i])]
            grads = torch.autograd.grad(loss, outs + params)
            for l, go in enumerate(grads[: len(outs)]):  # ∂ℓ/∂s_l: (1, d) or (1, d, Ho, Wo)
                g_t[l].append(go.reshape(go.shape[0], go.shape[1], -1)[0].T.numpy())  # (T, d)
            u_t.append(np.concatenate([gp.reshape(-1).numpy() for gp in grads[len(outs) :]]))
        for l in range(len(param_idx)):
            gs[l].append(np.stack(g_t[l]))
        us.append(np.stack(u_t))
        abar = [np.stack([a.numpy() for a in a_l]) for a_l in a_t]
    return abar, [np.stack(g) for g in gs], np.stack(us), weights


MLPS = {"tanh 4-5-6-3": (4, 5, 6, 3), "tanh 3-6-4-5-2": (3, 6, 4, 5, 2)}


@pytest.mark.parametrize("kind", ["exact", "empirical"])
@pytest.mark.parametrize("net", list(MLPS))
def test_tridiag_and_ekfac_match_torch_autograd_on_tanh_mlps(net, kind, rng):
    torch = pytest.importorskip("torch")
    sizes = MLPS[net]
    model, loss = tiny_mlp("tanh", sizes=sizes), nn.CrossEntropyLoss()
    x, y = classification_batch(rng, 9, (sizes[0],), sizes[-1])
    abar, gs, u, w = _torch_per_sample(torch, model, x, y, kind)
    layers = model.param_layers()
    f_hat = _tridiag_reference(layers, [a[:, 0] for a in abar], [g[:, :, 0] for g in gs], w)
    err_tri = _rel(fisher.kfac_tridiag_dense(model, loss, x, y, kind), f_hat)
    ek = np.zeros_like(f_hat)
    for layer, sl, a, g in zip(layers, layer_slices(model), abar, gs):
        ek[sl, sl] = _ekfac_block(layer, a, g, u[:, :, sl], w)
    err_ek = _rel(fisher.ekfac_dense(model, loss, x, y, kind), ek)
    print(f"{net} {kind}: tridiag {err_tri:.1e}, ekfac {err_ek:.1e}")
    assert err_tri <= TOL and err_ek <= TOL
    # the references are not the Fisher: the comparison is not between two copies of one matrix
    exact = np.einsum("sn,sni,snj->ij", w, u, u) / x.shape[0]
    assert _rel(f_hat, exact) > 1e-3 and _rel(ek, exact) > 1e-3


@pytest.mark.parametrize("kind", ["exact", "empirical"])
def test_ekfac_matches_torch_autograd_on_a_small_convnet(kind, rng):
    torch = pytest.importorskip("torch")
    model, loss = tiny_convnet(), nn.CrossEntropyLoss()
    x, y = classification_batch(rng, 5, (2, 6, 6), 3)
    abar, gs, u, w = _torch_per_sample(torch, model, x, y, kind)
    ek = np.zeros((model.num_params, model.num_params))
    for layer, sl, a, g in zip(model.param_layers(), layer_slices(model), abar, gs):
        ek[sl, sl] = _ekfac_block(layer, a, g, u[:, :, sl], w)
    err = _rel(fisher.ekfac_dense(model, loss, x, y, kind), ek)
    print(f"convnet {kind}: ekfac {err:.1e}")
    assert err <= TOL


# --- complex-step derivatives of a NumPy forward pass (no torch, no kfac_ref backprop) ------------
def _mlp_forward(ws, bs, x, shift=None):
    """Logits of the tanh MLP; shift = (l, Δ) adds Δ (N, d_l) to the pre-activation of layer l."""
    h, abar = x, []
    for l, (w, b) in enumerate(zip(ws, bs)):
        abar.append(np.hstack([h, np.ones((h.shape[0], 1))]))
        s = h @ w.T + b
        if shift is not None and shift[0] == l:
            s = s + shift[1]
        h = np.tanh(s) if l + 1 < len(ws) else s
    return h, abar


def _log_softmax(f):
    z = f - f.real.max(axis=1, keepdims=True)  # shift by a constant: the complex step passes through
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


@pytest.mark.parametrize("kind", ["exact", "empirical"])
def test_tridiag_and_ekfac_match_complex_step_derivatives(kind, rng):
    """g_l = ∂ℓ/∂s_l by the complex step Im ℓ(s_l + i h e_j) / h (exact to rounding, h = 1e-30)."""
    sizes = (4, 5, 6, 3)
    model, loss = tiny_mlp("tanh", sizes=sizes), nn.CrossEntropyLoss()
    x, y = classification_batch(rng, 9, (sizes[0],), sizes[-1])
    layers = model.param_layers()
    ws, bs = [layer.weight for layer in layers], [layer.bias for layer in layers]
    f, abar = _mlp_forward(ws, bs, x)
    p = np.exp(_log_softmax(f))
    labels, w = _terms(p, y, kind)
    n, step = x.shape[0], 1e-30
    gs = []
    for l, layer in enumerate(layers):
        g = np.zeros((labels.shape[0], n, layer.d_out))
        for j in range(layer.d_out):
            delta = np.zeros((n, layer.d_out), dtype=complex)
            delta[:, j] = 1j * step
            logp = _log_softmax(_mlp_forward(ws, bs, x.astype(complex), (l, delta))[0])
            for t in range(labels.shape[0]):
                g[t, :, j] = -logp[np.arange(n), labels[t]].imag / step
        gs.append(g)
    f_hat = _tridiag_reference(layers, abar, gs, w)
    err_tri = _rel(fisher.kfac_tridiag_dense(model, loss, x, y, kind), f_hat)
    ek = np.zeros_like(f_hat)
    for layer, sl, a, g in zip(layers, layer_slices(model), abar, gs):
        u = np.einsum("tnd,nk->tndk", g, a).reshape(g.shape[0], n, -1)  # vec(g āᵀ): (d, k) row-major
        d_idx, k_idx = _index(layer)
        u = u[:, :, d_idx * a.shape[1] + k_idx]  # … in θ's order
        ek[sl, sl] = _ekfac_block(layer, a[:, None, :], g[:, :, None, :], u, w)
    err_ek = _rel(fisher.ekfac_dense(model, loss, x, y, kind), ek)
    print(f"complex step {kind}: tridiag {err_tri:.1e}, ekfac {err_ek:.1e}")
    assert err_tri <= TOL and err_ek <= TOL
