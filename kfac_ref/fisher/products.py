"""Fisher-vector products and quadratic forms without forming F (docs/math.md §6–7).

With u_{s,n} the backpropagated gradients of :mod:`.seeds`,

    F v    = (1/N) Σ_{s,n} (u_{s,n} · v) u_{s,n}
    vᵀ F w = (1/N) Σ_{s,n} (u_{s,n} · v)(u_{s,n} · w)

and, per layer, u · v = Σ_t g_tᵀ V ā_t with V = v reshaped to W̄'s shape, so
only the layer statistics (ā, g) are needed: no (K, P) or (P, P) array.
"""

from __future__ import annotations

from ..backend import get_xp
from ..params import flat_to_wbar, layer_slices, slices_for, wbar_to_flat
from .vectors import fisher_stats


def seed_dots(stats, slices, v):
    """c_{s,n} = u_{s,n} · v for every seed and sample.  (S, N)"""
    xp = get_xp(v)
    total = 0
    for st, sl in zip(stats, slices):
        vm = flat_to_wbar(st.layer, v[sl])  # (d_out, a_dim)
        av = st.a_bar @ vm.T  # (N, T, d_out): V ā_t
        total = total + xp.einsum("sntd,ntd->sn", st.g, av)
    return total


def fvp_from_stats(stats, v, n: int, slices=None):
    """F v (P,) from Fisher-seed statistics (see module docstring)."""
    xp = get_xp(v)
    if slices is None:
        slices = slices_for(st.layer for st in stats)
    c = seed_dots(stats, slices, v)  # (S, N)
    parts = []
    for st in stats:
        cg = c[:, :, None, None] * st.g  # (S, N, T, d_out)
        m = xp.einsum("sntd,ntk->dk", cg, st.a_bar)  # Σ_{s,n,t} c g āᵀ
        parts.append(wbar_to_flat(st.layer, m))
    return xp.concatenate(parts) / n  # the 1/N of F


def _check_vector(model, v, name="v"):
    if getattr(v, "shape", None) != (model.num_params,):
        raise ValueError(f"{name} has shape {getattr(v, 'shape', type(v))}, expected ({model.num_params},)")


def fvp(model, loss_fn, x, y, v, kind: str, rng=None, mc_samples: int = 1):
    """F v for the Fisher of ``kind`` on the batch, without forming F.  (P,)"""
    _check_vector(model, v)
    stats, _ = fisher_stats(model, loss_fn, x, y, kind, rng, mc_samples)
    return fvp_from_stats(stats, v, x.shape[0], layer_slices(model))


def quadratic_form(model, loss_fn, x, y, v, w, kind: str, rng=None, mc_samples: int = 1) -> float:
    """vᵀ F w for the Fisher of ``kind`` on the batch, without forming F."""
    _check_vector(model, v, "v")
    _check_vector(model, w, "w")
    stats, _ = fisher_stats(model, loss_fn, x, y, kind, rng, mc_samples)
    return float(quadratic_form_from_stats(stats, [v, w], x.shape[0])[0, 1])  # a float, as promised


def quadratic_form_from_stats(stats, vectors, n: int):
    """The Gram matrix M_ij = v_iᵀ F v_j for a few vectors (e.g. [Δ, δ₀] of [MG15] §7).  (k, k)"""
    xp = get_xp(vectors[0])
    slices = slices_for(st.layer for st in stats)
    c = xp.stack([seed_dots(stats, slices, v).reshape(-1) for v in vectors])  # (k, S·N)
    return xp.asarray(c @ c.T / n)
