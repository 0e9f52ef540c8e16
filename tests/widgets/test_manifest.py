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


def test_widgets_sit_in_the_layers_menus(manifest, make_napari_viewer):
    """TV denoise and the β sweep under Layers > Filter, the gradient and level-set views under
    Layers > Visualize: menu ids napari accepts, and the items present in a viewer's menus."""
    from app_model.types import MenuItem
    from napari._app_model import get_app_model
    from napari._app_model.constants import MenuId

    menus = {menu_id: [item.command for item in items]
             for menu_id, items in manifest.contributions.menus.items()}  # fmt: skip
    assert menus == {
        "napari/layers/filter": ["napari-tv.denoise_widget", "napari-tv.sweep_widget"],
        "napari/layers/visualize": ["napari-tv.gradient_widget", "napari-tv.levelsets_widget"],
    }
    assert set(menus) <= set(MenuId.contributables())
    make_napari_viewer()  # registers the plugins' menu items with the app
    app = get_app_model()
    for menu_id, commands in menus.items():
        titles = {item.command.title for item in app.menus.get_menu(menu_id)
                  if isinstance(item, MenuItem)}  # fmt: skip
        for command in commands:
            title = next(c.title for c in manifest.contributions.commands if c.id == command)
            assert any(t.startswith(title) for t in titles), (menu_id, titles)


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
