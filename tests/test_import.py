"""``import napari_tv`` is Qt-free: the library must work on a server with no display."""

from __future__ import annotations

import subprocess
import sys

GUI = ["qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari", "magicgui", "vispy"]


def test_import_pulls_in_no_gui_package():
    code = (
        "import sys, napari_tv\n"
        f"bad = sorted({{m.split('.')[0] for m in sys.modules}} & set({GUI!r}))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import napari_tv imported {out.stdout.strip()}"


def test_the_library_modules_pull_in_no_gui_package():
    """Every module outside ``_widgets`` (the numerics, the command line) and every public
    name loads no GUI package either."""
    code = (
        "import importlib, pathlib, sys, napari_tv\n"
        "root = pathlib.Path(napari_tv.__file__).parent\n"
        "for path in sorted(root.rglob('*.py')):\n"
        "    parts = path.relative_to(root.parent).with_suffix('').parts\n"
        "    if '_widgets' not in parts:\n"
        "        importlib.import_module('.'.join(p for p in parts if p != '__init__'))\n"
        "[getattr(napari_tv, name) for name in napari_tv.__all__]\n"
        f"bad = sorted({{m.split('.')[0] for m in sys.modules}} & set({GUI!r}))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"the library imported {out.stdout.strip()}"


def test_public_api_is_listed_in_all():
    import napari_tv

    for name in napari_tv.__all__:
        assert callable(getattr(napari_tv, name)) or name.isupper(), name
