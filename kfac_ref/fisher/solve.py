"""Damped natural-gradient solves (F + λI)⁻¹ g, dense and by Woodbury (docs/math.md §7).

Dense (the textbook): build F (P, P), Cholesky-factor F + λI = L Lᵀ, two
triangular solves.  Cost O(P² K) to build, O(P³/3) to factor, memory P².

Woodbury: with F = Vᵀ V / N, V (K, P) the backpropagated vectors,

    (F + λI)⁻¹ g = (1/λ) [ g − Vᵀ (N λ I_K + V Vᵀ)⁻¹ V g ]

the *same* direction from a K×K system: cost O(P K² + K³), memory P·K.
The Gram matrix V Vᵀ needs no per-sample gradients for a Linear layer:
⟨g_i ā_iᵀ, g_j ā_jᵀ⟩ = (ā_i · ā_j)(g_i · g_j); for Conv2d it is formed from the
layer's per-sample gradients.

Index legend: s seed, n sample, t location (T = 1 for Linear), d output
feature, k input feature (a_dim, with the ones coordinate).
"""

from __future__ import annotations

from ..backend import get_xp, solve_triangular
from ..linalg import CurvatureError, add_diagonal, cho_solve, cholesky
from ..params import layer_slices, wbar_to_flat
from ..validate import check_damping
from .products import seed_dots
from .vectors import fisher_stats


def dense_solve(fisher, g, damping: float):
    """(F + λI)⁻¹ g by Cholesky, F a dense (P, P) matrix.  (P,) or (P, k)"""
    shape = tuple(getattr(fisher, "shape", ()))
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"dense_solve: the Fisher has shape {shape}, expected a square (P, P) matrix")
    g_shape = tuple(getattr(g, "shape", ()))
    if len(g_shape) not in (1, 2) or g_shape[0] != shape[0]:
        raise ValueError(
            f"dense_solve: g has shape {g_shape}, expected (P,) or (P, k) with P = {shape[0]} (the Fisher's)"
        )
    return cholesky_solve(damped_cholesky(fisher, damping), g)


def damped_cholesky(fisher, damping: float):
    """L with L Lᵀ = F + λI, F a dense (p, p) matrix (a clear error for a singular undamped F).  (p, p)"""
    damping = check_damping(damping)
    try:
        return cholesky(add_diagonal(fisher, damping), "the damped Fisher F + λI")
    except CurvatureError as exc:
        if damping == 0 and "NaN/Inf" not in str(exc):
            raise CurvatureError(
                f"{exc}: damping λ = 0 leaves a singular Fisher (F = VᵀV/N has rank "
                "≤ seeds × batch size, usually < P); use damping > 0"
            ) from exc
        raise


def cholesky_solve(low, g):
    """x with L Lᵀ x = g, two triangular solves.  (p,) or (p, k)"""
    return solve_triangular(low.T, solve_triangular(low, g, lower=True), lower=False)


def woodbury_solve_vectors(v, g, damping: float, n: int):
    """(Vᵀ V / n + λI)⁻¹ g from the explicit factor V (K, P).  (P,)"""
    damping = check_damping(damping)
    if damping == 0:
        raise ValueError("the Woodbury solve needs damping (λ) > 0")
    gram = v @ v.T  # (K, K)
    inner = add_diagonal(gram, n * damping)
    return (g - v.T @ cho_solve(inner, v @ g)) / damping


def gram_from_stats(stats):
    """V Vᵀ (K, K), K = S·N, from layer statistics (no (K, P) array for Linear layers).

    Rows and columns are ordered k = s·N + n, as in V.
    """
    total = 0
    for st in stats:
        s, n, t, d = st.g.shape
        if t == 1:  # Linear: (ā_i · ā_j)(g_i · g_j)
            a = st.a_bar[:, 0]  # (N, a_dim)
            g = st.g[:, :, 0].reshape(s * n, d)  # (K, d_out)
            aa = a @ a.T  # (N, N): depends on the samples only, so it repeats over seed pairs
            gg = (g @ g.T).reshape(s, n, s, n)  # (S, N, S, N)
            total = total + (gg * aa[None, :, None, :]).reshape(s * n, s * n)  # (K, K)
        else:  # Conv2d: per-sample layer gradients Σ_t g ā ᵀ
            # = st.per_sample_wbar_grads(), written as a batched matrix product for speed
            u = st.g.transpose(0, 1, 3, 2) @ st.a_bar  # (S, N, d_out, a_dim)
            u = u.reshape(s * n, -1)  # (K, d_out·a_dim)
            total = total + u @ u.T
    return total


def _apply_vt(stats, c):
    """Vᵀ c for c (K,) as a flat (P,) vector: Σ_{s,n} c_{s,n} u_{s,n}.

    Per layer Σ_{s,n,t} c_{s,n} g_{s,n,t} ā_{n,t}ᵀ: first sum the seeds, h = Σ_s c g,
    then one matrix product over (n, t).
    """
    xp = get_xp(c)
    s, n = stats[0].g.shape[:2]
    cm = c.reshape(s, n)
    parts = []
    for st in stats:
        h = xp.einsum("sn,sntd->ntd", cm, st.g)  # (N, T, d_out)
        m = h.reshape(-1, st.g.shape[-1]).T @ st.a_bar.reshape(-1, st.a_bar.shape[-1])  # (d_out, a_dim)
        parts.append(wbar_to_flat(st.layer, m))
    return xp.concatenate(parts)


def woodbury_solve_from_stats(stats, g, damping: float, n: int, slices):
    """(F + λI)⁻¹ g from Fisher-seed statistics, never forming (P, P) (docs/math.md §7).  (P,)"""
    damping = check_damping(damping)
    if damping == 0:
        raise ValueError("the Woodbury solve needs damping (λ) > 0")
    gram = gram_from_stats(stats)  # (K, K)
    vg = seed_dots(stats, slices, g).reshape(-1)  # (K,)  V g
    coef = cho_solve(add_diagonal(gram, n * damping), vg)
    return (g - _apply_vt(stats, coef)) / damping


def woodbury_solve(model, loss_fn, x, y, g, damping: float, kind: str, rng=None, mc_samples: int = 1):
    """(F + λI)⁻¹ g for the Fisher of ``kind`` on the batch, by Woodbury.  (P,)"""
    if getattr(g, "shape", None) != (model.num_params,):
        raise ValueError(f"g has shape {getattr(g, 'shape', type(g))}, expected ({model.num_params},)")
    stats, _ = fisher_stats(model, loss_fn, x, y, kind, rng, mc_samples)
    return woodbury_solve_from_stats(stats, g, damping, x.shape[0], layer_slices(model))
