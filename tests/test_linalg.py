"""Cholesky solves and inverses against NumPy's general solver (sizes past one BLAS block)."""

import numpy as np
import pytest

from kfac_ref.backend import to_device, to_numpy
from kfac_ref.linalg import cho_solve, spd_inverse


@pytest.mark.parametrize("n", [1, 7, 129, 300])
def test_cholesky_solve_and_inverse_match_a_general_solve(n, device, rng):
    a = rng.standard_normal((n, n + 3))
    m = a @ a.T / n + 0.1 * np.eye(n)
    b = rng.standard_normal((n, 2))
    x = to_numpy(cho_solve(to_device(m, device), to_device(b, device)))
    np.testing.assert_allclose(x, np.linalg.solve(m, b), rtol=1e-9, atol=1e-12)
    inv = to_numpy(spd_inverse(to_device(m, device)))
    np.testing.assert_allclose(inv @ m, np.eye(n), atol=1e-9)


def test_cholesky_refuses_an_indefinite_matrix():
    with pytest.raises(np.linalg.LinAlgError):
        cho_solve(np.diag([1.0, -1.0]), np.ones(2))
