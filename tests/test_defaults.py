"""The defaults are part of the product: a first run converges, on the samples and on real
images, at the intensity scale they come in."""

from __future__ import annotations

import numpy as np
import pytest

from napari_tv import SAMPLE_3D_SCALE, denoise_tv, microscopy_2d, microscopy_3d
from napari_tv.solvers.api import DEFAULT_METHOD


def _images():
    data = pytest.importorskip("skimage.data")
    rng = np.random.default_rng(0)
    camera = np.clip(data.camera() + rng.normal(0, 20, (512, 512)), 0, 255).astype(np.uint8)
    return [
        ("2-D sample", microscopy_2d()[0], None),
        ("3-D sample", microscopy_3d()[0], SAMPLE_3D_SCALE),
        ("camera, uint8", camera, None),
        ("cell, uint8", data.cell(), None),
    ]


@pytest.mark.parametrize("fraction", [0.03, 0.1, 0.3])
def test_the_default_call_converges(fraction):
    """β from 3 % (light) to 30 % (heavy smoothing) of the data's range."""
    assert DEFAULT_METHOD == "primal_dual"
    for name, image, spacing in _images():
        beta = fraction * (float(image.max()) - float(image.min()))
        u, info = denoise_tv(image, beta, spacing=spacing, return_info=True)
        assert info.converged and info.gap < 1e-4, (name, info)
        assert u.dtype == np.float32  # 8-bit and float32 data stay float32


def test_the_default_call_converges_on_16_bit_data():
    """A 16-bit stack (camera counts around 10^4): the same iterations as the data in [0, 1]."""
    v = microscopy_3d()[0]
    v16 = np.round((v - v.min()) / np.ptp(v) * 60000).astype(np.uint16)
    unit = v16 / 60000.0
    _, info16 = denoise_tv(v16, 0.05 * 60000, spacing=SAMPLE_3D_SCALE, return_info=True)
    _, info1 = denoise_tv(unit, 0.05, spacing=SAMPLE_3D_SCALE, return_info=True)
    assert info16.converged and info1.converged
    assert abs(info16.n_iter - info1.n_iter) <= 10
