"""The Fisher matrices of the article, exact and approximate, in θ's order (docs/math.md §3–8).

Every function names the Fisher *kind* — ``"exact"``, ``"mc"`` or ``"empirical"``
(:mod:`.seeds`) — because the word "Fisher" alone is ambiguous.

- :func:`dense`           F (P, P)
- :func:`block_diagonal`  its layer blocks, zeros elsewhere (P, P)
- :func:`kfac_factors`    [(A, G)] per layer ((Ω, Γ) for Conv2d)
- :func:`kfac_dense`      ⊕_l G_l ⊗ A_l as (P, P) in θ's order
- :func:`fvp`, :func:`quadratic_form`   F v and vᵀ F w without forming F
- :func:`dense_solve`, :func:`woodbury_solve`   (F + λI)⁻¹ g, two ways
- :mod:`.kron`            damped Kronecker inverses (factored π, exact eigen)
- :mod:`.inverses`        dense (P, P) views of the damped inverses (K-FAC, EKFAC, block-tridiagonal, blockwise)
- :func:`kfac_tridiag_dense`, :class:`TridiagInverse`   block-tridiagonal K-FAC [MG15 §4.3] (docs/math.md §11)
- :func:`ekfac_dense`, :class:`EKFACInverse`   K-FAC's eigenbasis, refitted diagonal [GLBV18] (docs/math.md §12)
- :mod:`.metrics`         relative Frobenius errors, angles
- :mod:`.curvature`       the protocol every structure implements (update, refresh, apply, to_dense, …):
  :class:`Dense`, :class:`BlockDiagonal`, :class:`Diagonal`, :class:`Kronecker`, :class:`EKFAC`,
  :class:`BlockTridiagonal`, :class:`Identity` — the ``curvature`` of the optimizers
"""

from .curvature import Curvature, Identity
from .dense import BlockDiagonal, Dense, block_diagonal, blocks_to_dense, dense, layer_blocks
from .diagonal import Diagonal
from .ekfac import EKFAC, EKFACInverse, eigenbasis, eigenbasis_scalings, ekfac_dense, ekfac_layers
from .inverses import blockwise_inverse, ekfac_inverse, kfac_damped, kfac_inverse, tridiag_inverse
from .kfac import Kronecker, factors_to_dense, kfac_dense, kfac_factors
from .kron import EigenInverse, FactoredInverse, factored_damping, kron_solve, pi_factor
from .memory import DEFAULT_MAX_BYTES, check_dense_size
from .metrics import angle_degrees, kfac_angle, layer_errors, rel_frobenius_error
from .products import fvp, quadratic_form
from .seeds import KINDS, fisher_seeds
from .solve import dense_solve, woodbury_solve, woodbury_solve_vectors
from .tridiag import (
    BlockTridiagonal,
    TridiagInverse,
    cross_factors_from_stats,
    kfac_tridiag_dense,
    tridiag_factors,
    tridiag_to_dense,
)
from .vectors import fisher_stats, fisher_vectors

__all__ = [
    "DEFAULT_MAX_BYTES",
    "EKFAC",
    "BlockDiagonal",
    "BlockTridiagonal",
    "Curvature",
    "Dense",
    "Diagonal",
    "Identity",
    "Kronecker",
    "EKFACInverse",
    "EigenInverse",
    "FactoredInverse",
    "KINDS",
    "TridiagInverse",
    "angle_degrees",
    "block_diagonal",
    "blocks_to_dense",
    "blockwise_inverse",
    "check_dense_size",
    "cross_factors_from_stats",
    "dense",
    "dense_solve",
    "eigenbasis",
    "eigenbasis_scalings",
    "ekfac_dense",
    "ekfac_inverse",
    "ekfac_layers",
    "factored_damping",
    "factors_to_dense",
    "fisher_seeds",
    "fisher_stats",
    "fisher_vectors",
    "fvp",
    "kfac_angle",
    "kfac_damped",
    "kfac_dense",
    "kfac_factors",
    "kfac_inverse",
    "kfac_tridiag_dense",
    "kron_solve",
    "layer_blocks",
    "layer_errors",
    "pi_factor",
    "quadratic_form",
    "rel_frobenius_error",
    "tridiag_factors",
    "tridiag_inverse",
    "tridiag_to_dense",
    "woodbury_solve",
    "woodbury_solve_vectors",
]
