"""Shared fixtures: seeded generators and small images of every supported dimensionality."""

from __future__ import annotations

import numpy as np
import pytest

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
