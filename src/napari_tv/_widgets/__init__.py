"""The napari face of napari-tv: four dock widgets over the Qt-free library.

``denoise.DenoiseWidget`` ("TV denoise"), ``gradient.GradientWidget`` ("TV gradient"),
``levelsets.LevelSetsWidget`` ("Level sets") and ``sweep.SweepWidget`` ("β sweep") are
declared in ``napari.yaml``; ``_launch.open_viewer`` opens napari with all four docked.
This subpackage is the only place that imports napari and Qt; the widgets hold no maths.
"""
