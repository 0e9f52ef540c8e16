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


def test_public_api_is_listed_in_all():
    import napari_tv

    for name in napari_tv.__all__:
        assert callable(getattr(napari_tv, name)) or name.isupper(), name
