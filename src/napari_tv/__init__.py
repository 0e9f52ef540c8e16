"""napari-tv: total-variation denoising of 2-D images and 3-D microscopy volumes.

A Qt-free library (importing it loads no Qt, napari, magicgui or vispy) and a napari plugin
(``napari_tv._widgets``).  The public API:

* solving: :func:`denoise_tv` (iterative methods and the exact Darbon–Sigelle solver; a dask
  array in gives a lazy dask array out), :class:`TVResult`, :func:`tv_energy`;
* volumes larger than memory: :func:`denoise_tv_chunked` (certified chunked solves on any
  dask scheduler, state in memory or on disk, zarr out), :class:`ChunkedResult`;
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

#: where each public name lives; imported on first use (PEP 562), so that ``import
#: napari_tv`` is instant and imports nothing, not even ``importlib`` (the command line
#: installs its Ctrl-C handling right after this package's ``__init__``: a signal during an
#: import here would still meet Python's default handler, and its traceback) and loads no
#: Numba kernel module until one is needed
_WHERE = {
    "SAMPLE_3D_SCALE": "_sample_data",
    "microscopy_2d": "_sample_data",
    "microscopy_3d": "_sample_data",
    "estimate_noise_model": "beta_choice",
    "estimate_noise_sigma": "beta_choice",
    "suggest_beta": "beta_choice",
    "FIDELITIES": "fidelity",
    "fidelity_prox": "fidelity",
    "fidelity_value": "fidelity",
    "coarea_tv": "levelsets",
    "dichotomy_partition": "levelsets",
    "from_level_sets": "levelsets",
    "level_perimeters": "levelsets",
    "level_set": "levelsets",
    "level_sets": "levelsets",
    "perimeter": "levelsets",
    "difference_matrix": "operators",
    "divergence": "operators",
    "edge_weights": "operators",
    "gradient": "operators",
    "graph_tv": "operators",
    "level_grid": "operators",
    "neighbour_offsets": "operators",
    "resolve_weights": "operators",
    "tv_energy": "operators",
    "tv_gradient": "operators",
    "tv_norm": "operators",
    "TVResult": "solvers",
    "denoise_tv": "solvers",
    "ChunkedResult": "chunked",
    "denoise_tv_chunked": "chunked",
    "BetaSweep": "sweep",
    "Generation": "sweep",
    "LatestWins": "sweep",
    "beta_stack": "sweep",
    "l_curve": "sweep",
}


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'napari_tv' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"napari_tv.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_WHERE))


__version__ = "0.1.0"

__all__ = [
    "FIDELITIES",
    "SAMPLE_3D_SCALE",
    "BetaSweep",
    "ChunkedResult",
    "Generation",
    "LatestWins",
    "TVResult",
    "beta_stack",
    "coarea_tv",
    "denoise_tv",
    "denoise_tv_chunked",
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
