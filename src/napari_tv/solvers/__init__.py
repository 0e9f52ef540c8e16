"""TV denoising solvers: :func:`denoise_tv` (the entry point) and the :class:`TVResult`."""

from napari_tv.solvers._result import TVResult
from napari_tv.solvers.api import denoise_tv

__all__ = ["TVResult", "denoise_tv"]
