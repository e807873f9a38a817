"""The [KBH19] toy of docs/math.md §10 (kfac_ref.experiments.toy) against closed forms."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from kfac_ref.experiments import plots, toy


@pytest.fixture(scope="module")
def data():
    return toy.make_toy()


def test_toy_data_follow_math_md_10(data):
    assert data.x.shape == (1000, 2) and data.y.shape == (1000, 1)
    np.testing.assert_array_equal(data.x[:, 0], 1.0)
    np.testing.assert_array_equal(data.theta_star, [2.0, 2.0])
    # θ_LS estimates θ* from 1000 unit-noise samples.
    assert np.abs(toy.least_squares(data) - data.theta_star).max() < 0.2


def test_exact_fisher_of_the_toy_is_xtx_over_n_at_every_theta(data):
    closed = data.x.T @ data.x / 1000
    for theta in toy.STARTS:
        np.testing.assert_allclose(toy.fisher(data, theta, "exact"), closed, rtol=1e-12, atol=0)


def test_empirical_fisher_is_the_residual_weighted_second_moment(data):
    for theta in toy.STARTS:
        r = data.x @ np.asarray(theta) - data.y[:, 0]  # (N,)
        closed = np.einsum("n,ni,nj->ij", r**2, data.x, data.x) / 1000
        np.testing.assert_allclose(toy.fisher(data, theta, "empirical"), closed, rtol=1e-12, atol=0)
        np.testing.assert_allclose(toy.residuals(data, theta), r, rtol=0, atol=1e-12)


def test_gradient_is_the_residual_weighted_mean_input(data):
    theta = np.array([1.0, 0.0])
    r = data.x @ theta - data.y[:, 0]
    np.testing.assert_allclose(toy.grad(data, theta), data.x.T @ r / 1000, rtol=1e-12)


def test_ngd_with_step_one_reaches_the_least_squares_solution_in_one_step(data):
    theta_ls = toy.least_squares(data)
    for start in toy.STARTS:
        path = toy.trajectory(data, "ngd", start, steps=1)
        assert np.abs(path[1] - theta_ls).max() <= 1e-8


def test_gd_with_step_one_third_decreases_the_loss_monotonically(data):
    theta_ls = toy.least_squares(data)
    for start in toy.STARTS:
        path = toy.trajectory(data, "gd", start, steps=60)
        losses = [toy.loss(data, theta) for theta in path]
        assert np.all(np.diff(losses) < 0)
        assert np.linalg.norm(path[-1] - theta_ls) < 0.05 * np.linalg.norm(path[0] - theta_ls)


def test_empirical_fisher_step_differs_from_the_natural_gradient_far_from_the_optimum(data):
    start = toy.STARTS[0]
    ngd = toy.direction(data, start, "ngd")
    emp = toy.direction(data, start, "empirical", damping=1e-8)
    cos = ngd @ emp / (np.linalg.norm(ngd) * np.linalg.norm(emp))
    assert cos < 0.99  # a visibly different direction, not just a rescaling


def test_loss_grid_matches_the_model_loss(data):
    t0, t1 = np.linspace(-1, 5, 4), np.linspace(-0.5, 5, 3)
    grid = toy.loss_grid(data, t0, t1)
    assert grid.shape == (3, 4)
    for i, b in enumerate(t1):
        for j, a in enumerate(t0):
            assert grid[i, j] == pytest.approx(toy.loss(data, (a, b)), rel=1e-12)


def test_trajectory_and_model_reject_bad_arguments(data):
    with pytest.raises(ValueError, match="unknown method"):
        toy.trajectory(data, "adam", (0, 0), 3)
    with pytest.raises(ValueError, match="shape"):
        toy.model_at([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="steps"):
        toy.trajectory(data, "gd", (0, 0), -1)


def test_ellipse_points_lie_on_the_level_set():
    m = np.array([[3.0, 1.0], [1.0, 2.0]])
    ax = Figure().subplots()  # no pyplot, no backend
    line = plots.ellipse(ax, (1.0, -1.0), m, radius=0.5)
    d = np.stack(line.get_data(), axis=1) - np.array([1.0, -1.0])  # (num, 2)
    np.testing.assert_allclose(np.einsum("ki,ij,kj->k", d, m, d), 0.25, rtol=1e-10)


def test_plot_helpers_draw_on_the_axes_they_are_given():
    m = np.array([[3.0, 1.0], [1.0, 2.0]])
    ax = Figure().subplots()
    image = plots.heatmap(ax, m, "M")
    np.testing.assert_array_equal(image.get_clim(), (-3.0, 3.0))  # symmetric about zero
    assert len(plots.eigen_arrows(ax, (0, 0), m)) == 2
    plots.loss_contours(ax, [0, 1, 2], [0, 1], np.arange(6.0).reshape(2, 3))
    plots.trajectory(ax, np.zeros((3, 2)), "path")
    plots.error_curve(ax, [1, 10, 100], [1.0, 0.3, 0.1], reference_slope=-0.5)
    assert ax.get_title() == "M" and ax.get_xscale() == "log"
    with pytest.raises(ValueError, match="matrix"):
        plots.heatmap(ax, np.zeros(3))
