"""The full Fisher → block-diagonal → K-FAC figure (kfac_ref.experiments.fisher_plot).

What is proved: F_bd is F's diagonal blocks; step 3 (the inverse from the factors)
equals the dense inverse; the errors are Pythagorean, so K-FAC is never closer to F
than F_bd (a guarantee, since both agree on — or live on — the same blocks); the
oracle N = 1 makes step 2 exact; the CLI writes all its files or none.  The
block-tridiagonal K-FAC and EKFAC panels show exactly the library's dense matrices of
the same batch, their inverses are the dense inverses of the damped matrices, and a
ConvNet's figure leaves the block-tridiagonal column out with a note.
"""

from __future__ import annotations

import numpy as np
import pytest

from kfac_ref import fisher, nn
from kfac_ref.experiments import fisher_plot, sizes
from kfac_ref.io import write_together
from kfac_ref.params import layer_slices, wbar_order

from . import brute_force
from .helpers import classification_batch, tiny_mlp

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _case(n=12, kind="exact", damping=1e-2, damping_mode="factored", sizes_=(4, 5, 3)):
    model = tiny_mlp("tanh", sizes_, seed=0)
    x, y = classification_batch(np.random.default_rng(0), n, (sizes_[0],), sizes_[-1])
    loss_fn = nn.CrossEntropyLoss()
    m = fisher_plot.fisher_matrices(model, loss_fn, x, y, kind, damping, damping_mode, seed=3)
    return model, loss_fn, x, y, m


def _rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def test_block_diagonal_is_the_diagonal_blocks_of_the_fisher_and_zero_elsewhere():
    model, *_, m = _case()
    f, f_bd = m["exact"], m["block_diagonal"]
    mask = np.zeros_like(f, dtype=bool)
    for sl in layer_slices(model):
        assert _rel(f_bd[sl, sl], f[sl, sl]) < 1e-12
        mask[sl, sl] = True
    assert not f_bd[~mask].any()
    assert not m["kfac"][~mask].any()
    assert m["boundaries"] == [sl.start for sl in layer_slices(model)[1:]]


def test_block_diagonal_inverse_is_the_inverse_of_damped_block_diagonal():
    model, loss_fn, x, y, m = _case()
    damped = m["block_diagonal"] + m["damping"] * np.eye(m["p"])
    assert _rel(m["block_diagonal_inv"], np.linalg.inv(damped)) < 1e-10
    # the exact inverse against a Fisher built from per-sample label gradients (no Fisher seeds)
    f = brute_force.fisher_from_grads(brute_force.weighted_label_grads(model, loss_fn, x, y, "exact"))
    assert np.abs(m["exact_inv"] @ (f + m["damping"] * np.eye(m["p"])) - np.eye(m["p"])).max() < 1e-8


@pytest.mark.parametrize("mode", fisher_plot.DAMPING_MODES)
def test_kfac_inverse_from_the_factors_equals_the_dense_inverse_of_damped_kfac(mode):
    _, _, _, _, m = _case(damping_mode=mode)
    assert _rel(m["kfac_inv"], np.linalg.inv(m["kfac_damped"])) < 1e-8
    assert m["errors"]["kron_identity"] < 1e-8


def test_factored_inverse_block_is_the_kronecker_product_of_the_inverted_damped_factors():
    model, *_, m = _case()
    for layer, sl, (a, g) in zip(model.param_layers(), layer_slices(model), m["factors"]):
        pi = np.sqrt((np.trace(a) / len(a)) / (np.trace(g) / len(g)))
        root = np.sqrt(m["damping"])
        a_d, g_d = a + pi * root * np.eye(len(a)), g + root / pi * np.eye(len(g))
        perm = wbar_order(layer)  # θ order → row-major vec(W̄) order
        block = m["kfac_inv"][sl, sl][np.ix_(perm, perm)]
        assert _rel(block, np.kron(np.linalg.inv(g_d), np.linalg.inv(a_d))) < 1e-10


def test_exact_damping_inverse_is_inverse_of_kfac_plus_lambda_identity():
    _, _, _, _, m = _case(damping_mode="exact")
    p = m["p"]
    assert _rel(m["kfac_inv"], np.linalg.inv(m["kfac"] + m["damping"] * np.eye(p))) < 1e-8


@pytest.mark.parametrize("kind", fisher.KINDS)
def test_errors_are_pythagorean_so_kfac_is_never_closer_to_F_than_block_diagonal(kind):
    _, _, _, _, m = _case(kind=kind)
    f, f_bd, k = m["exact"], m["block_diagonal"], m["kfac"]
    # K − F_bd lives on the diagonal blocks, F_bd − F off them: orthogonal in Frobenius.
    lhs = np.linalg.norm(k - f) ** 2
    rhs = np.linalg.norm(k - f_bd) ** 2 + np.linalg.norm(f_bd - f) ** 2
    assert abs(lhs - rhs) <= 1e-10 * lhs
    e = m["errors"]
    assert e["block_diagonal"]["overall"] <= e["kfac"]["overall"]
    assert e["kfac"]["layers"] == pytest.approx(e["kfac_vs_block_diagonal"]["layers"], rel=1e-10)


def test_all_errors_and_angles_are_finite_and_nonnegative():
    _, _, _, _, m = _case()
    e = m["errors"]
    values = [e["kron_identity"], *e["angles"].values()]
    for key in ("block_diagonal", "kfac", "kfac_vs_block_diagonal", "block_diagonal_inv", "kfac_inv"):
        values += [e[key]["overall"], *e[key]["layers"]]
    assert all(np.isfinite(v) and v >= 0 for v in values)
    assert all(0 <= a <= 180 for a in e["angles"].values())


def test_one_sample_with_exact_seeds_makes_step_two_exact():
    # docs/math.md §8.1: N = 1, exact seeds → every K-FAC block equals the exact Fisher block.
    _, _, _, _, m = _case(n=1)
    assert m["errors"]["kfac_vs_block_diagonal"]["overall"] < 1e-12


def test_exact_damping_angle_agrees_with_fisher_kfac_angle():
    model, loss_fn, x, y, m = _case(damping_mode="exact")
    expected = fisher.kfac_angle(model, loss_fn, x, y, m["damping"], "exact")
    assert m["errors"]["angles"]["kfac"] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("damping", [0.0, -1.0, float("nan"), float("inf"), "x"])
def test_damping_must_be_a_finite_positive_number(damping):
    model, loss_fn, x, y, _ = _case()
    with pytest.raises(ValueError, match="damping"):  # the strict check, before any matrix is built
        fisher_plot.fisher_matrices(model, loss_fn, x, y, damping=damping)


def test_storage_and_cost_of_alexnet_matches_the_sizes_table():
    rows = sizes.layer_sizes("alexnet")
    c, t = sizes.storage_and_cost(rows), sizes.totals(rows)
    assert c["full_entries"] == t["full_fisher_entries"] == 62_378_344**2
    assert (c["block_entries"], c["factor_entries"]) == (t["fisher_entries"], t["factor_entries"])
    assert c["factor_flops"] < c["block_flops"] < c["full_flops"]


def test_the_figure_uses_the_one_inverse_helpers_and_keeps_no_aliases():
    # they live in fisher.inverses and experiments.sizes; the figure imports them under their own names
    assert fisher_plot.kfac_damped is fisher.kfac_damped and fisher_plot.blockwise_inverse is fisher.blockwise_inverse
    for alias in ("_blockwise_inverse", "kfac_inverse", "format_storage_and_cost", "storage_and_cost"):
        assert not hasattr(fisher_plot, alias), alias
    assert "| K-FAC factors | Σ (d_in² + d_out²) = " in sizes.format_storage_and_cost(sizes.layer_sizes("alexnet"), "A")


def test_plot_fisher_writes_a_png_and_refuses_an_unknown_format_before_drawing(tmp_path):
    _, _, _, _, m = _case()
    written = fisher_plot.plot_fisher(m, tmp_path / "f.png", scale="log")
    assert [p.name for p in written] == ["f.png"]
    assert (tmp_path / "f.png").read_bytes()[:8] == PNG_SIGNATURE
    with pytest.raises(ValueError, match="format"):
        fisher_plot.plot_fisher(m, tmp_path / "g.jpeg", svg=True)
    assert [p.name for p in tmp_path.iterdir()] == ["f.png"]


def test_failed_write_leaves_no_partial_outputs_and_no_new_folder(tmp_path):
    out = tmp_path / "new" / "folder"

    def fail(tmp):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_together([(out / "a.md", lambda tmp: open(tmp, "w").write("a")), (out / "b.md", fail)])
    assert list(tmp_path.iterdir()) == []


def test_main_trains_plots_and_writes_png_svg_and_table(tmp_path, capsys):
    # a 64 → 4 → 10 MLP (P = 310) keeps this fast; the default (P = 910) runs in notebook 03
    assert fisher_plot.main(["--out", str(tmp_path / "out"), "--arch", "mlp", "--hidden", "4"]) == 0
    out = capsys.readouterr().out
    assert "block-diagonal" in out and "P = 310" in out
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["fisher.png", "fisher.svg", "fisher_errors.md"]
    assert (tmp_path / "out" / "fisher.png").read_bytes()[:8] == PNG_SIGNATURE
    assert b"<svg" in (tmp_path / "out" / "fisher.svg").read_bytes()[:1000]
    assert "| step 1: block-diagonal F_bd |" in (tmp_path / "out" / "fisher_errors.md").read_text(encoding="utf-8")


def test_main_bad_kind_exits_nonzero(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        fisher_plot.main(["--kind", "fancy", "--out", str(tmp_path / "out")])
    assert exc.value.code != 0
    assert "kfac-ref fisher-plot: error:" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_main_bad_damping_is_one_line_on_stderr_and_writes_nothing(tmp_path, capsys):
    assert fisher_plot.main(["--damping", "-1", "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("kfac-ref fisher-plot: error: damping (λ)") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_default_network_is_small_enough_to_draw_every_entry():
    model = fisher_plot.build_network()
    assert model.num_params <= fisher_plot.MAX_DRAWN_ROWS
    assert fisher_plot.pool_digits(np.zeros((3, 64))).shape == (3, 16)


def test_figure_draws_small_matrices_with_layer_and_bias_lines_labels_and_a_colour_bar_per_panel():
    from matplotlib.lines import Line2D

    model, *_, m = _case(sizes_=(4, 5, 3))  # θ = [W1 (20), b1 (5), W2 (15), b2 (3)]: P = 43
    fig = fisher_plot._figure(m, None, "linear")
    panels = [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
    assert len(panels) == 10  # 5 columns (exact, bd, K-FAC, tridiagonal, EKFAC) × (matrix, inverse)
    for ax in panels:
        rows, cols = ax.images[0].get_array().shape
        assert rows == cols == m["p"] <= fisher_plot.MAX_DRAWN_ROWS
        # a horizontal and a vertical line at every layer boundary and every weight/bias split (pixel edges)
        lines = [ln for ln in ax.get_lines() if isinstance(ln, Line2D)]
        horizontal = {round(ln.get_ydata()[0] + 0.5) for ln in lines if ln.get_ydata()[0] == ln.get_ydata()[1]}
        assert {25} <= horizontal  # layer 2 starts at 25
        assert {20, 40} <= horizontal  # the biases start at 20 and 40
        assert [t.get_text() for t in ax.get_xticklabels()] == ["W1", "b1", "W2", "b2"]
        assert ax.images[0].colorbar is not None  # one colour bar per panel
    assert m["layout"]["boundaries"] == m["boundaries"] == [25]


# ---- block-tridiagonal K-FAC and EKFAC ---------------------------------------------------------
def _panels(fig):
    """{title's first line: the (P, P) array drawn} for every heatmap of the figure."""
    return {
        ax.get_title().split("\n")[0]: np.asarray(ax.images[0].get_array())
        for ax in fig.axes
        if ax.images and ax.get_label() != "<colorbar>"
    }


def test_new_panels_are_the_library_matrices_of_the_same_batch_and_their_damped_inverses():
    model, loss_fn, x, y, m = _case(n=10, kind="mc", sizes_=(4, 5, 3, 3))  # three Linear layers: two pairs
    lam, rng = m["damping"], lambda: np.random.default_rng(3)  # fisher_matrices(seed=3): the same MC labels
    panels = _panels(fisher_plot._figure(m, None, "linear"))
    tri = fisher.kfac_tridiag_dense(model, loss_fn, x, y, "mc", rng())
    ek = fisher.ekfac_dense(model, loss_fn, x, y, "mc", rng())
    np.testing.assert_array_equal(panels["block-tridiagonal K-FAC $\\hat F$"], tri)
    ekfac_title = "EKFAC $\\oplus_l\\,(U_G \\otimes U_A)\\,\\mathrm{diag}(s_l)\\,(\\cdot)^T$"
    np.testing.assert_array_equal(panels[ekfac_title], ek)
    # the inverses, built by applying the optimizers' inverses, against dense inverses of the damped matrices
    diag, cross = fisher.tridiag_factors(model, loss_fn, x, y, "mc", rng())
    tri_damped = fisher.tridiag_to_dense(model, diag, cross, lam)
    assert _rel(panels["$\\hat F_\\lambda^{-1}$ (factored damping)"], np.linalg.inv(tri_damped)) < 1e-9
    ek_inv = np.zeros_like(ek)
    for sl in layer_slices(model):  # EKFAC damps exactly: (F_EKFAC,l + λI)⁻¹ block by block
        ek_inv[sl, sl] = np.linalg.inv(ek[sl, sl] + lam * np.eye(sl.stop - sl.start))
    assert _rel(panels["EKFAC $\\oplus_l\\,(F_{EKFAC,l} + \\lambda I)^{-1}$"], ek_inv) < 1e-9


def test_new_panels_are_titled_with_their_relative_frobenius_errors_and_angles():
    model, loss_fn, x, y, m = _case(sizes_=(4, 5, 3, 3))
    fig = fisher_plot._figure(m, None, "linear")
    titles = [ax.get_title() for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
    f, f_inv = m["exact"], m["exact_inv"]
    for key, ref in (("kfac_tridiag", f), ("ekfac", f), ("kfac_tridiag_inv", f_inv), ("ekfac_inv", f_inv)):
        error = fisher_plot._fmt(_rel(m[key], ref))
        assert sum(f"error {error}" in t for t in titles) >= 1, (key, error)
        if key.endswith("_inv"):
            angle = fisher.angle_degrees(m[key] @ m["grad"], f_inv @ m["grad"])
            assert any(f"error {error}, angle {angle:.0f}°" in t for t in titles)
    table = fisher_plot.format_errors(m)
    assert "| block-tridiagonal K-FAC F̂ | F |" in table and "| EKFAC inverse" in table


def test_block_tridiagonal_kfac_keeps_kfacs_diagonal_blocks():
    # [MG15] §4.3: F̂ agrees with K-FAC on the diagonal blocks, so the per-layer errors are K-FAC's
    _, _, _, _, m = _case(sizes_=(4, 5, 3, 3))
    e = m["errors"]
    assert e["kfac_tridiag"]["layers"] == pytest.approx(e["kfac"]["layers"], rel=1e-10)
    for sl in layer_slices(_case(sizes_=(4, 5, 3, 3))[0]):
        np.testing.assert_allclose(m["kfac_tridiag"][sl, sl], m["kfac"][sl, sl], rtol=1e-10, atol=1e-14)


def test_a_convnet_figure_leaves_the_block_tridiagonal_panels_out_with_a_note():
    model = fisher_plot.build_network("convnet", hidden=(4,), seed=0)
    x, y = classification_batch(np.random.default_rng(0), 4, (1, 8, 8), 10)
    m = fisher_plot.fisher_matrices(model, nn.CrossEntropyLoss(), x, y, "empirical", 1e-2)
    assert m["kfac_tridiag"] is None and m["kfac_tridiag_inv"] is None and "kfac_tridiag" not in m["errors"]
    assert len(m["notes"]) == 1 and "left out" in m["notes"][0]
    fig = fisher_plot._figure(m, None, "linear")
    assert len(_panels(fig)) == 8 and not any("tridiagonal" in t for t in _panels(fig))
    assert m["notes"][0] in fig.get_supxlabel()
    assert m["notes"][0] in fisher_plot.format_errors(m)
    np.testing.assert_array_equal(m["ekfac"], fisher.ekfac_dense(model, nn.CrossEntropyLoss(), x, y, "empirical"))


def test_columns_draws_only_the_chosen_approximations_in_that_order_and_refuses_unknown_ones():
    from matplotlib.figure import Figure

    *_, m = _case(sizes_=(4, 5, 3))
    axes = fisher_plot.draw_fisher(Figure(), m, columns=("kfac", "exact"))
    assert axes.shape == (2, 2)
    for ax, key in zip(axes.ravel(), ("kfac", "exact", "kfac_inv", "exact_inv")):
        np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), m[key])
    with pytest.raises(ValueError, match="columns must be a non-empty subset"):
        fisher_plot.draw_fisher(Figure(), m, columns=("kfac", "hessian"))
