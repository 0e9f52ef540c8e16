"""napari-tv: total-variation denoising of 2-D images and 3-D microscopy volumes.

A Qt-free library (importing it loads no Qt, napari, magicgui or vispy) and a napari plugin
(``napari_tv._widgets``).  See ``docs/`` and the README.
"""

from .fidelity import FIDELITIES, fidelity_prox, fidelity_value
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

__version__ = "0.1.0"

__all__ = [
    "FIDELITIES",
    "difference_matrix",
    "divergence",
    "edge_weights",
    "fidelity_prox",
    "fidelity_value",
    "gradient",
    "graph_tv",
    "level_grid",
    "neighbour_offsets",
    "resolve_weights",
    "tv_energy",
    "tv_gradient",
    "tv_norm",
]
