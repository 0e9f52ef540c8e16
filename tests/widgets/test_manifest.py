"""The npe2 manifest: valid, every python_name importable, sample data that loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

MANIFEST = Path(__file__).resolve().parents[2] / "napari.yaml"


@pytest.fixture(scope="module")
def manifest():
    from npe2 import PluginManifest

    return PluginManifest.from_file(MANIFEST)


def test_manifest_validates_and_imports(manifest):
    from npe2.manifest.utils import import_python_name

    assert manifest.name == "napari-tv"
    manifest.validate_imports()  # what `npe2 validate --imports` does
    for command in manifest.contributions.commands:  # and each one explicitly
        assert callable(import_python_name(command.python_name)), command.id


def test_widgets_and_samples_point_at_commands(manifest):
    ids = {c.id: c.python_name for c in manifest.contributions.commands}
    widgets = {w.display_name: ids[w.command] for w in manifest.contributions.widgets}
    assert widgets == {
        "TV denoise": "napari_tv._widgets.denoise:DenoiseWidget",
        "TV gradient": "napari_tv._widgets.gradient:GradientWidget",
        "Level sets": "napari_tv._widgets.levelsets:LevelSetsWidget",
        "β sweep": "napari_tv._widgets.sweep:SweepWidget",
    }
    assert {s.key for s in manifest.contributions.sample_data} >= {"microscopy_2d", "microscopy_3d"}


def test_installed_distribution_uses_this_manifest(manifest):
    from npe2 import PluginManifest

    installed = PluginManifest.from_distribution("napari-tv")
    assert [c.id for c in installed.contributions.commands] == [
        c.id for c in manifest.contributions.commands
    ]


@pytest.mark.parametrize("key", ["microscopy_2d", "microscopy_3d"])
def test_sample_data_commands_return_layer_data(manifest, key):
    from npe2.manifest.utils import import_python_name

    from napari_tv._sample_data import SAMPLE_3D_SCALE

    ids = {c.id: c.python_name for c in manifest.contributions.commands}
    sample = next(s for s in manifest.contributions.sample_data if s.key == key)
    layers = import_python_name(ids[sample.command])()
    assert len(layers) >= 1
    data, kwargs, layer_type = layers[0]
    assert layer_type == "image"
    data = np.asarray(data)
    assert data.ndim == (2 if key.endswith("2d") else 3)
    assert np.issubdtype(data.dtype, np.floating) and np.isfinite(data).all()
    assert data.std() > 0
    if key.endswith("3d"):
        assert tuple(kwargs["scale"]) == tuple(SAMPLE_3D_SCALE)
