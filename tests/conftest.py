"""Shared fixtures: seeded generators and small images of every supported dimensionality."""

from __future__ import annotations

import os

import numpy as np
import pytest

# The suite runs the fused kernels, deterministically (compiled in the foreground when
# ``napari-tv warmup`` has not cached them); tests/test_compile.py covers the quick kernels and
# the automatic choice between the two.
os.environ.setdefault("NAPARI_TV_KERNELS", "fast")

SHAPES = {1: (7,), 2: (6, 5), 3: (4, 5, 3)}


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(params=[1, 2, 3], ids=["1d", "2d", "3d"])
def ndim(request):
    return request.param


@pytest.fixture
def small_image(rng, ndim):
    return rng.normal(size=SHAPES[ndim])
