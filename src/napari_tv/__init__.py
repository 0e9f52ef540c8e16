"""napari-tv: total-variation denoising of 2-D images and 3-D microscopy volumes.

A Qt-free library (importing it loads no Qt, napari, magicgui or vispy) and a napari plugin
(``napari_tv._widgets``).  The public API:

* solving: :func:`denoise_tv` (iterative methods and the exact Darbon–Sigelle solver),
  :class:`TVResult`, :func:`tv_energy`;
* the discrete operators: :func:`gradient`, :func:`divergence`, :func:`difference_matrix`,
  :func:`tv_norm`, :func:`tv_gradient`;
* graph TV and level sets: :func:`neighbour_offsets`, :func:`edge_weights`,
  :func:`resolve_weights`, :func:`graph_tv`, :func:`level_grid`, :func:`level_sets`,
  :func:`level_set`, :func:`from_level_sets`, :func:`perimeter`, :func:`level_perimeters`,
  :func:`coarea_tv`, :func:`dichotomy_partition`;
* choosing β: :func:`suggest_beta` (SURE, PURE, J-invariance, discrepancy; module
  :mod:`napari_tv.beta_choice`), :func:`estimate_noise_sigma`, :func:`estimate_noise_model`,
  :class:`BetaSweep`, :class:`LatestWins`, :class:`Generation`, :func:`beta_stack`,
  :func:`l_curve`;
* sample data: :func:`microscopy_2d`, :func:`microscopy_3d`.
"""

from ._sample_data import SAMPLE_3D_SCALE, microscopy_2d, microscopy_3d
from .beta_choice import estimate_noise_model
from .fidelity import FIDELITIES, fidelity_prox, fidelity_value
from .levelsets import (
    coarea_tv,
    dichotomy_partition,
    from_level_sets,
    level_perimeters,
    level_set,
    level_sets,
    perimeter,
)
from .operators import (
    difference_matrix,
    divergence,
    edge_weights,
    gradient,
    graph_tv,
    level_grid,
    neighbour_offsets,
    resolve_weights,
    tv_energy,
    tv_gradient,
    tv_norm,
)
from .solvers import TVResult, denoise_tv
from .sweep import (
    BetaSweep,
    Generation,
    LatestWins,
    beta_stack,
    estimate_noise_sigma,
    l_curve,
    suggest_beta,
)

__version__ = "0.1.0"

__all__ = [
    "FIDELITIES",
    "SAMPLE_3D_SCALE",
    "BetaSweep",
    "Generation",
    "LatestWins",
    "TVResult",
    "beta_stack",
    "coarea_tv",
    "denoise_tv",
    "dichotomy_partition",
    "difference_matrix",
    "divergence",
    "edge_weights",
    "estimate_noise_model",
    "estimate_noise_sigma",
    "fidelity_prox",
    "fidelity_value",
    "from_level_sets",
    "gradient",
    "graph_tv",
    "l_curve",
    "level_grid",
    "level_perimeters",
    "level_set",
    "level_sets",
    "microscopy_2d",
    "microscopy_3d",
    "neighbour_offsets",
    "perimeter",
    "resolve_weights",
    "suggest_beta",
    "tv_energy",
    "tv_gradient",
    "tv_norm",
]
