"""Fixtures for the Qt widget tests (run under ``xvfb-run -a``)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def errors(monkeypatch):
    """Capture the messages the widgets send to napari's show_error / show_warning."""
    from napari.utils import notifications

    seen: dict[str, list[str]] = {"error": [], "warning": [], "info": []}
    for kind in seen:
        monkeypatch.setattr(
            notifications, f"show_{kind}", lambda msg, kind=kind: seen[kind].append(str(msg))
        )
    return seen


@pytest.fixture
def blobs_2d():
    """A 48x40 piecewise-constant image with Gaussian noise (float64)."""
    rng = np.random.default_rng(0)
    clean = np.zeros((48, 40))
    clean[8:30, 6:22] = 1.0
    clean[20:44, 18:36] += 0.6
    return clean + 0.2 * rng.standard_normal(clean.shape)


@pytest.fixture
def blobs_3d():
    """A 6x24x20 noisy volume (float32)."""
    rng = np.random.default_rng(1)
    clean = np.zeros((6, 24, 20), np.float32)
    clean[1:5, 4:16, 3:12] = 1.0
    return (clean + 0.2 * rng.standard_normal(clean.shape)).astype(np.float32)


@pytest.fixture
def wait_done(qtbot):
    """``wait_done(runner)``: wait until a TaskRunner is idle and its result is shown."""

    def wait(runner, timeout=60_000):
        qtbot.waitUntil(lambda: not runner.running, timeout=timeout)
        qtbot.wait(20)

    return wait
