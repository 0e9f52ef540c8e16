"""The synthetic sample data: seeded, the right shapes, and the noise model it claims."""

from __future__ import annotations

import numpy as np
import pytest

from napari_tv._sample_data import (
    SAMPLE_3D_SCALE,
    microscopy_2d,
    microscopy_3d,
    napari_sample_2d,
    napari_sample_3d,
    napari_sample_camera,
)


@pytest.mark.parametrize("make,shape", [(microscopy_2d, (96, 80)), (microscopy_3d, (12, 40, 48))])
def test_seeded_shapes_and_dtype(make, shape):
    noisy, clean = make(shape, seed=3)
    again, _ = make(shape, seed=3)
    other, _ = make(shape, seed=4)
    assert noisy.shape == clean.shape == shape
    assert noisy.dtype == clean.dtype == np.float32
    np.testing.assert_array_equal(noisy, again)
    assert not np.array_equal(noisy, other)
    assert clean.min() >= 2.0 - 1e-6 and clean.max() <= 22.0 + 1e-5  # background 2, peak 20


def test_noise_is_poisson_plus_unit_read_noise():
    noisy, clean = microscopy_2d((256, 256), seed=1)
    resid = (noisy - clean).astype(np.float64)
    assert abs(resid.mean()) < 0.05
    # Var[Poisson(c) + N(0, 1)] = c + 1: the standardised residual has unit variance
    z = resid / np.sqrt(clean + 1.0)
    assert z.var() == pytest.approx(1.0, abs=0.03)


def test_napari_sample_contributions():
    (data2, meta2, kind2), = napari_sample_2d()
    (data3, meta3, kind3), = napari_sample_3d()
    assert kind2 == kind3 == "image"
    assert data2.ndim == 2 and data3.ndim == 3
    assert meta3["scale"] == SAMPLE_3D_SCALE and SAMPLE_3D_SCALE[0] > SAMPLE_3D_SCALE[1]
    pytest.importorskip("skimage")
    (cam, _, _), = napari_sample_camera()
    assert cam.shape == (512, 512)
