"""Kronecker factors per layer — K-FAC [MG15 §3] and KFC [GM16] — and their dense view.

Index legend: s seed, n sample, t location, k input feature (ā), d output (g).

Linear layer (T = 1), docs/math.md §4:
    A = (1/N) Σ_n ā_n ā_nᵀ                       (a_dim, a_dim)
    G = (1/N) Σ_n Σ_s g_{s,n} g_{s,n}ᵀ            (d_out, d_out)
Conv2d layer (T locations), docs/math.md §5 — the location split chosen here:
    Ω = (1/N) Σ_n Σ_t ā_{n,t} ā_{n,t}ᵀ           a *sum* over locations
    Γ = (1/(N T)) Σ_n Σ_s Σ_t g_{s,n,t} g_{s,n,t}ᵀ  a *mean* over locations

so that, with T = 1, both reduce to the Linear formulas, and under KFC's
assumptions (independence, spatial homogeneity, spatially uncorrelated
derivatives) the layer block Σ_{t,t'} E[g_t g_{t'}ᵀ] ⊗ E[ā_t ā_{t'}ᵀ] ≈ Γ ⊗ Ω.
The split matters only through π in factored damping (docs/math.md §6).

The block is approximated by G ⊗ A in the row-major vec(W̄) order (docs/math.md §1);
:func:`kfac_dense` puts every block back into θ's order so that it can be
subtracted from the exact Fisher.
"""

from __future__ import annotations

from dataclasses import asdict, replace

from ..backend import get_xp, to_device, to_numpy
from ..backprop import BlockStats
from ..nn.blocks import run_blocks
from ..nn.layout import columns
from ..params import wbar_order
from ..validate import check_allocation, check_state_array, check_state_number
from .curvature import Curvature, saved_inverse
from .dense import blocks_to_dense
from .kron import check_damping_mode, inverse_class, inverse_shapes
from .memory import check_dense_size
from .vectors import fisher_stats

SUPPORTED = ("linear", "conv")


def factor_a(a_bar):
    """A (Linear) or Ω (Conv2d): (1/N) Σ_n Σ_t ā ā ᵀ.  (N, T, a_dim) → (a_dim, a_dim)"""
    a = columns(a_bar)  # (a_dim, T·N), a view of a Conv2d's patches or of Linear's rows
    return (a @ a.T) / a_bar.shape[0]  # mean over samples, sum over locations


def factor_g(g):
    """G (Linear) or Γ (Conv2d): (1/(N T)) Σ_{s,n,t} g gᵀ.  (S, N, T, d_out) → (d_out, d_out)

    One product of g as a (d_out, T·S·N) matrix with its transpose; that matrix is a view of an
    output gradient in the image layout (kfac_ref.nn.layout) or of Linear's (S·N, d_out) rows.
    """
    _, n, t, _ = g.shape
    gm = columns(g)  # (d_out, T·S·N)
    return (gm @ gm.T) / (n * t)  # mean over samples and locations, sum over seeds


def check_supported(model) -> None:
    """K-FAC here covers Linear and Conv2d layers; anything else with parameters is refused."""
    for layer in model.param_layers():
        if layer.kind not in SUPPORTED:
            raise TypeError(
                f"K-FAC does not support {layer!r} (kind {layer.kind!r}); supported layer kinds: {SUPPORTED}"
            )


def check_factor_memory(model, who: str = "K-FAC") -> None:
    """Refuse, before anything is allocated, Kronecker factors that cannot fit in memory.

    Each layer's A (a_dim, a_dim) and G (d_out, d_out), and all of them together: a layer
    with 10⁵ inputs has an A of 10¹⁰ entries (75 GiB in float64).  MemoryError naming the layer.
    """
    entries = 0
    for l, layer in enumerate(model.param_layers()):
        for name, d in (("A", layer.a_dim), ("G", layer.g_dim)):
            check_allocation(who, (d, d), model.dtype, what=f"layer {l} ({layer!r})'s factor {name}")
            entries += d * d
    check_allocation(who, (entries,), model.dtype, what="the Kronecker factors of all layers, together")


def factors_from_stats(stats):
    """[(A, G)] per layer from per-layer statistics with Fisher seeds.

    Statistics of blocks of samples (:class:`~kfac_ref.backprop.BlockStats`, ``model.workers`` > 1):
    each block's factors on its own thread, then A = Σ_b (N_b / N) A_b and G likewise (both are
    means over samples), without merging the blocks' arrays.
    """
    if isinstance(stats, BlockStats):
        per_block = run_blocks(factors_from_stats, stats.blocks)  # [[(A_b, G_b) per layer] per block]
        shares = [blk[0].g.shape[1] for blk in stats.blocks]  # N_b
        return [
            tuple(sum(n_b / sum(shares) * f[layer][i] for n_b, f in zip(shares, per_block)) for i in (0, 1))
            for layer in range(len(per_block[0]))
        ]
    return [(factor_a(st.a_bar), factor_g(st.g)) for st in stats]


def kfac_factors(model, loss_fn, x, y, kind: str, rng=None, mc_samples: int = 1):
    """One (A, G) pair per Linear/Conv2d layer in network order ((Ω, Γ) for Conv2d)."""
    check_supported(model)
    check_factor_memory(model, "kfac_factors")
    stats, _ = fisher_stats(model, loss_fn, x, y, kind, rng, mc_samples)
    return factors_from_stats(stats)


def kron_in_param_order(layer, a, g):
    """G ⊗ A (row-major vec(W̄) order) permuted into θ's order for this layer.  (p_l, p_l)"""
    k = get_xp(a).kron(g, a)  # (d_out·a_dim, d_out·a_dim), index (o, i) ↦ o·a_dim + i
    return wbar_block_to_param_order(layer, layer, k)


def wbar_block_to_param_order(row_layer, col_layer, block):
    """A block indexed by vec(W̄_i) × vec(W̄_j) (row-major) reindexed into θ's order.  (p_i, p_j)

    ``block[r, c]`` lands at ``(perm_i[r], perm_j[c])`` with perm = :func:`~kfac_ref.params.wbar_order`.
    """
    xp = get_xp(block)
    perm_i, perm_j = xp.asarray(wbar_order(row_layer)), xp.asarray(wbar_order(col_layer))
    out = xp.empty_like(block)
    out[perm_i[:, None], perm_j[None, :]] = block  # entry (perm_i, perm_j) of θ's order
    return out


def kfac_dense(model, loss_fn, x, y, kind: str, rng=None, mc_samples: int = 1, max_bytes=None):
    """K-FAC's block-diagonal approximation as a dense (P, P) matrix in θ's order."""
    check_dense_size(model.num_params, model.dtype, max_bytes, "dense K-FAC matrix")
    factors = kfac_factors(model, loss_fn, x, y, kind, rng, mc_samples)
    return factors_to_dense(model, factors)


def factors_to_dense(model, factors):
    """Dense (P, P) view of per-layer Kronecker factors [(A, G)]."""
    return blocks_to_dense(
        model, [kron_in_param_order(layer, a, g) for layer, (a, g) in zip(model.param_layers(), factors)]
    )


# ---- the structure (protocol: .curvature) ----------------------------------------------------
class Kronecker(Curvature):
    """K-FAC / KFC: per layer F_ll ≈ G_l ⊗ A_l ([MG15] §3, [GM16]; docs/math.md §4–6).

    Its protocol calls::

        statistic  [(A, G)] per layer (:func:`factors_from_stats`), averaged with one ε_k;
        refresh    ``damping_mode="factored"``: (A + π√γ I)⁻¹, (G + √γ/π I)⁻¹  ([MG15] §6.3), or
                   ``"exact"``: eigendecompositions of A and G; O(Σ_l a_l³ + d_l³);
        apply      Δ_l = G_d⁻¹ ∇_{W̄} h A_d⁻¹ (factored) or U_G [(U_Gᵀ ∇ U_A) ⊘ (d_G d_Aᵀ + γ)] U_Aᵀ
                   (exact, follows a new γ at once); O(Σ_l d_l a_l (d_l + a_l)).
        Memory: two factors and their inverses per layer, 2 Σ_l (a_l² + d_l²).
    """

    name = "kronecker"
    averaged = ("factors",)
    symmetric = ("factors",)

    def __init__(self, model, ema_decay: float = 0.0, damping_mode: str = "factored"):
        check_supported(model)
        check_factor_memory(model, "K-FAC")
        super().__init__(model, ema_decay)
        self.damping_mode = check_damping_mode(damping_mode)
        self.exact_damping = damping_mode == "exact"
        self.inverses = None  # [FactoredInverse | EigenInverse] per layer

    def check_damping(self, damping):
        damping = super().check_damping(damping)
        if self.damping_mode == "factored" and damping == 0:
            raise ValueError("damping_mode='factored' needs damping (λ) > 0; use damping_mode='exact' for λ = 0")
        return damping

    def statistic(self, stats, n):
        return {"factors": factors_from_stats(stats)}  # [(A, G)]

    def refresh(self, damping):
        self.install([self.refresh_layer(l, damping) for l in range(len(self.factors))], damping)

    # a refresh, layer by layer (a distributed refresh computes each layer on one rank)
    def layer_shapes(self, layer) -> dict:
        """{name: shape} of the arrays :meth:`refresh_layer` returns for ``layer``."""
        return inverse_shapes(self.damping_mode, layer.a_dim, layer.g_dim)

    def refresh_layer(self, l: int, damping: float) -> dict:
        """Layer l's damped inverse as arrays ({name: array}, see :meth:`layer_shapes`)."""
        a, g = self.factors[l]
        inv = inverse_class(self.damping_mode).from_factors(a, g, damping)
        return {name: getattr(inv, name) for name in self.layer_shapes(self.model.param_layers()[l])}

    def install(self, layers: list, damping: float) -> None:
        """The inverse from every layer's :meth:`refresh_layer` arrays."""
        cls = inverse_class(self.damping_mode)
        extra = {"gamma": damping} if self.exact_damping else {}
        self.inverses = [cls(**arrays, **extra) for arrays in layers]
        self.damping = damping

    def apply(self, layer_grads, damping=None):
        gamma = self._damping_for(damping)
        return [
            (replace(inv, gamma=gamma) if self.exact_damping and inv.gamma != gamma else inv).apply(v)
            for inv, v in zip(self.inverses, layer_grads)
        ]

    def to_dense(self):
        return factors_to_dense(self.model, self.factors)

    def memory(self):
        return 2 * sum(la.a_dim**2 + la.g_dim**2 for la in self.model.param_layers())

    def refresh_cost(self):
        return sum(la.a_dim**3 + la.g_dim**3 for la in self.model.param_layers())

    def state_shapes(self):
        return {"factors": [[(la.a_dim, la.a_dim), (la.g_dim, la.g_dim)] for la in self.model.param_layers()]}

    def _check_inverse_state(self, state, where, gamma):
        """One dict per layer: the arrays of :meth:`layer_shapes` (exact damping: d ≥ 0, and γ)."""
        saved, layers = saved_inverse(state, where, gamma), self.model.param_layers()
        if saved is None:
            return
        if not isinstance(saved, list) or len(saved) != len(layers):
            raise ValueError(f"{where}['inverses'] is {saved!r:.60}, expected a list of {len(layers)} layers")
        for l, (inv, layer) in enumerate(zip(saved, layers)):
            shapes = self.layer_shapes(layer)
            keys = {*shapes, "gamma"} if self.exact_damping else set(shapes)
            if not isinstance(inv, dict) or set(inv) != keys:
                raise ValueError(f"{where}['inverses'][{l}] is {inv!r:.60}, expected a dict of {sorted(keys)}")
            for k, shape in shapes.items():
                low = 0 if k in ("d_a", "d_g") else None  # eigenvalues of PSD factors, clipped at 0
                check_state_array(f"{where}['inverses'][{l}][{k!r}]", inv[k], shape, low=low)
            if self.exact_damping:
                check_state_number(f"{where}['inverses'][{l}]['gamma']", inv["gamma"], low=0)

    def _inverse_state(self):
        if self.inverses is None:
            return {"inverses": None}
        return {
            "inverses": [
                {k: to_numpy(v) if hasattr(v, "shape") else v for k, v in asdict(inv).items()} for inv in self.inverses
            ]
        }

    def _load_inverse_state(self, state):
        dev, cls = self.model.device, inverse_class(self.damping_mode)
        saved = state["inverses"]
        self.inverses = (
            None
            if saved is None
            else [cls(**{k: to_device(v, dev) if hasattr(v, "shape") else v for k, v in d.items()}) for d in saved]
        )
