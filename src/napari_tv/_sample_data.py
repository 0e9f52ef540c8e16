"""Synthetic microscopy-like sample data (and scikit-image's camera), for napari's "Open Sample".

The images are fluorescence-like: a dim background, diffraction-blurred spots ("blobs") and
thin curved filaments, observed with Poisson photon noise and a little Gaussian read noise.
Everything is seeded, so the same call gives the same image, and takes well under a second.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

__all__ = ["SAMPLE_3D_SCALE", "microscopy_2d", "microscopy_3d", "noisy_camera"]

#: voxel size (z, y, x) in µm of the 3-D sample: a z step larger than the pixel size, as in
#: real confocal or light-sheet stacks
SAMPLE_3D_SCALE = (2.0, 0.5, 0.5)


def _filaments(shape, rng, n_fil, samples=4000):
    """Smooth random curves rasterised as points (before blurring)."""
    img = np.zeros(shape)
    ndim = len(shape)
    t = np.linspace(0.0, 1.0, samples)[:, None]
    hi = np.asarray(shape) - 1
    for _ in range(n_fil):
        p0, p1, p2 = (rng.uniform(0, 1, size=(1, ndim)) * hi for _ in range(3))
        curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2  # quadratic Bézier
        idx = np.round(curve).astype(int)
        np.add.at(img, tuple(idx.T), 1.0 / samples * 200.0)
    return img


def _blobs(shape, rng, n_blobs):
    img = np.zeros(shape)
    idx = tuple(rng.integers(0, n, size=n_blobs) for n in shape)
    np.add.at(img, idx, rng.uniform(20.0, 60.0, size=n_blobs))
    return img


def _render(blobs, filaments, sigma, photons):
    """Blur both structures with the PSF, scale each to its own peak, add a background."""
    spots = gaussian_filter(blobs, sigma=sigma)
    lines = gaussian_filter(filaments, sigma=sigma)
    spots /= max(spots.max(), 1e-12)
    lines /= max(lines.max(), 1e-12)
    return 2.0 + photons * np.clip(spots + 0.8 * lines, 0.0, 1.0)


def _observe(clean, rng, read_noise):
    """Photon counts with Poisson statistics plus Gaussian read noise, as float32."""
    counts = rng.poisson(clean).astype(np.float64)
    return (counts + rng.normal(0.0, read_noise, size=clean.shape)).astype(np.float32)


def microscopy_2d(shape=(256, 256), seed: int = 0, *, photons: float = 20.0):
    """A noisy 2-D fluorescence-like image and its noise-free version.

    Parameters
    ----------
    shape : tuple of 2 ints
        Image size.
    seed : int
        Seed of the random generator (blob and filament positions and the noise).
    photons : float
        Peak brightness in photons; lower is noisier.

    Returns
    -------
    noisy, clean : ndarray of float32
        ``noisy = Poisson(clean) + N(0, 1)``; ``clean`` is in photons.

    Examples
    --------
    >>> noisy, clean = microscopy_2d((64, 64))
    >>> noisy.shape, noisy.dtype
    ((64, 64), dtype('float32'))
    """
    rng = np.random.default_rng(seed)
    area = shape[0] * shape[1]
    blobs = _blobs(shape, rng, max(3, area // 1500))
    filaments = _filaments(shape, rng, max(2, area // 8000))
    clean = _render(blobs, filaments, 1.5, photons)
    return _observe(clean, rng, 1.0), clean.astype(np.float32)


def microscopy_3d(shape=(32, 128, 128), seed: int = 0, *, photons: float = 20.0):
    """A noisy 3-D fluorescence-like volume (z, y, x) and its noise-free version.

    The volume is sampled with :data:`SAMPLE_3D_SCALE` (z step 2 µm, pixels 0.5 µm): the
    point-spread function is elongated along z in µm but, because of the coarse z step, spans
    fewer samples along z than along y and x.

    Parameters
    ----------
    shape : tuple of 3 ints
        Volume size (z, y, x).
    seed : int
        Seed of the random generator.
    photons : float
        Peak brightness in photons.

    Returns
    -------
    noisy, clean : ndarray of float32

    Examples
    --------
    >>> noisy, clean = microscopy_3d((8, 32, 32))
    >>> noisy.shape
    (8, 32, 32)
    """
    rng = np.random.default_rng(seed)
    vol = int(np.prod(shape))
    blobs = _blobs(shape, rng, max(4, vol // 6000))
    filaments = _filaments(shape, rng, max(2, vol // 60000), samples=8000)
    psf_um = np.array([2.0, 0.75, 0.75])  # PSF σ in µm: elongated along the optical axis
    clean = _render(blobs, filaments, psf_um / np.array(SAMPLE_3D_SCALE), photons)
    return _observe(clean, rng, 1.0), clean.astype(np.float32)


def noisy_camera(sigma: float = 20.0, seed: int = 0) -> np.ndarray:
    """scikit-image's ``camera`` (512², grey levels 0–255) with Gaussian noise of std ``sigma``.

    Raises
    ------
    ImportError
        If scikit-image is not installed.
    """
    try:
        from skimage import data
    except ImportError as err:  # pragma: no cover - exercised only without scikit-image
        raise ImportError(
            "the camera sample needs scikit-image: pip install scikit-image"
        ) from err
    rng = np.random.default_rng(seed)
    img = data.camera().astype(np.float64)
    return (img + rng.normal(0.0, sigma, size=img.shape)).astype(np.float32)


# napari "Open Sample" contributions: lists of (data, kwargs, layer type)
def napari_sample_2d():
    noisy, _ = microscopy_2d()
    return [(noisy, {"name": "microscopy 2D (noisy)", "colormap": "gray"}, "image")]


def napari_sample_3d():
    noisy, _ = microscopy_3d()
    return [
        (noisy, {"name": "microscopy 3D (noisy)", "scale": SAMPLE_3D_SCALE, "colormap": "gray"},
         "image")
    ]


def napari_sample_camera():
    return [(noisy_camera(), {"name": "camera (noisy)", "colormap": "gray"}, "image")]
