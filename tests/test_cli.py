"""The ``napari-tv`` command line: values against the API, metadata, errors, Ctrl-C.

Most checks call ``main(argv)`` in-process (cheap); one subprocess per subcommand and per kind
of error runs the installed console script end to end (each costs an interpreter start and the
Numba imports).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_tv import _io, cli
from napari_tv.cli import main
from napari_tv.levelsets import level_sets
from napari_tv.operators import tv_gradient

SCRIPT = Path(sys.executable).with_name("napari-tv")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "napari_tv.cli"]
IJ_SPACING = (2.0, 0.5, 0.25)  # z, y, x in µm


def run_cli(*args, timeout: float = 120.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*COMMAND, *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def call(capsys, *args) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def assert_clean_error(rc, err, out: Path | None, match: str = ""):
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("napari-tv: error: "), err
    assert match.lower() in lines[0].lower(), err
    if out is not None:
        assert not out.exists()
        assert not [p for p in out.parent.iterdir() if p.name.endswith(".partial")]


@pytest.fixture
def volume(rng):
    return (rng.random((4, 12, 10)) * 50).astype(np.float32)


@pytest.fixture
def imagej_tif(tmp_path, volume):
    path = tmp_path / "vol.tif"
    z, y, x = IJ_SPACING
    tifffile.imwrite(
        path,
        volume,
        imagej=True,
        resolution=(1 / x, 1 / y),
        metadata={"axes": "ZYX", "spacing": z, "unit": "micron"},
    )
    return path


@pytest.fixture
def image_npy(tmp_path, rng):
    path = tmp_path / "img.npy"
    np.save(path, rng.integers(0, 30, size=(14, 11)).astype(np.uint16))
    return path


def read_tif(path):
    with tifffile.TiffFile(path) as tf:
        return tf.asarray(), tf.series[0].axes, tf.imagej_metadata, tf.pages.first.resolution


# ------------------------------------------------------------------ argument parsing


@pytest.mark.parametrize(
    "text, expected", [("2", 2.0), ("2,0.5,0.5", (2.0, 0.5, 0.5)), ("1 3", (1.0, 3.0))]
)
def test_spacing_argument(text, expected):
    assert cli._spacing_arg(text) == expected


@pytest.mark.parametrize("text, expected", [("16", 16), ("0,1.5,3", [0.0, 1.5, 3.0])])
def test_levels_argument(text, expected):
    assert cli._levels_arg(text) == expected


def test_help_and_version(capsys):
    rc, out, _ = call(capsys, "--version")
    assert rc == 0 and "napari-tv" in out
    rc, out, _ = call(capsys, "denoise", "--help")
    assert rc == 0 and "--beta" in out and "--channel-axis" in out


# -------------------------------------------------------------------- metadata I/O


def test_imagej_metadata_is_read(imagej_tif, volume):
    img = _io.read_image(imagej_tif)
    np.testing.assert_array_equal(img.data, volume)
    assert img.flavour == "imagej" and img.axes == "ZYX"
    assert _io.metadata_spacing(img) == pytest.approx(IJ_SPACING)


def test_ome_metadata_is_read(tmp_path, rng):
    path = tmp_path / "img.ome.tif"
    data = rng.random((3, 8, 9))
    tifffile.imwrite(
        path,
        data,
        ome=True,
        metadata={"axes": "ZYX", "PhysicalSizeX": 0.3, "PhysicalSizeY": 0.4, "PhysicalSizeZ": 1.5},
    )
    img = _io.read_image(path)
    assert img.flavour == "ome"
    assert _io.metadata_spacing(img) == pytest.approx((1.5, 0.4, 0.3))
    # a channel axis has no spacing
    img.axes = "CYX"
    assert _io.metadata_spacing(img, channel_axis=0) == pytest.approx((0.4, 0.3))


def test_gradient_in_process_keeps_imagej_metadata(capsys, imagej_tif, volume, tmp_path):
    out = tmp_path / "grad.tif"
    rc, stdout, err = call(
        capsys, "gradient", imagej_tif, out, "--kind", "anisotropic", "--eps", "0.1"
    )
    assert rc == 0, err
    expected = tv_gradient(volume, kind="anisotropic", spacing=IJ_SPACING, eps=0.1)
    got, axes, meta, res = read_tif(out)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert axes == "ZYX" and meta["spacing"] == pytest.approx(2.0) and meta["unit"] == "micron"
    assert res == pytest.approx((4.0, 2.0))  # pixels per µm along x, y
    assert "tv " in stdout


def test_explicit_spacing_overrides_the_metadata(capsys, imagej_tif, volume, tmp_path):
    out = tmp_path / "grad.npy"
    rc, _, err = call(capsys, "gradient", imagej_tif, out, "--spacing", "1")
    assert rc == 0, err
    np.testing.assert_allclose(np.load(out), tv_gradient(volume), rtol=1e-6)


def test_ome_metadata_is_written_back(capsys, tmp_path, rng):
    src, out = tmp_path / "in.ome.tif", tmp_path / "out.tif"
    data = rng.random((9, 7))
    tifffile.imwrite(
        src, data, ome=True, metadata={"axes": "YX", "PhysicalSizeX": 0.3, "PhysicalSizeY": 0.6}
    )
    rc, _, err = call(capsys, "gradient", src, out)
    assert rc == 0, err
    back = _io.read_image(out)
    assert back.flavour == "ome" and _io.metadata_spacing(back) == pytest.approx((0.6, 0.3))
    assert back.data.dtype == np.float64  # OME keeps float64
    np.testing.assert_allclose(back.data, tv_gradient(data, spacing=(0.6, 0.3)))


def test_plain_tiff_resolution_is_kept(capsys, tmp_path, rng):
    src, out = tmp_path / "in.tif", tmp_path / "levels.tif"
    data = rng.integers(0, 5, size=(6, 7)).astype(np.uint8)
    tifffile.imwrite(src, data, resolution=(300, 300), resolutionunit="INCH")
    rc, _, err = call(capsys, "levels", src, out)
    assert rc == 0, err
    got, _, meta, res = read_tif(out)
    assert meta is None and res == pytest.approx((300, 300))
    np.testing.assert_array_equal(got, level_sets(data).astype(np.uint8))


@pytest.mark.parametrize("suffix", [".npy", ".tif"])
def test_levels_in_process(capsys, imagej_tif, volume, tmp_path, suffix):
    out = tmp_path / f"levels{suffix}"
    rc, stdout, err = call(capsys, "levels", imagej_tif, out, "--levels", "6")
    assert rc == 0, err
    expected = level_sets(volume, 6).astype(np.uint8)
    got = np.load(out) if suffix == ".npy" else read_tif(out)[0]
    assert got.dtype == np.uint8 and got.shape == (5, *volume.shape)
    np.testing.assert_array_equal(got, expected)
    if suffix == ".tif":
        _, axes, meta, _ = read_tif(out)
        assert axes == "TZYX" and meta["spacing"] == pytest.approx(2.0)
    assert "5 level sets" in stdout


def test_levels_of_a_1d_signal(capsys, tmp_path):
    src, out = tmp_path / "sig.npy", tmp_path / "sig_levels.tif"
    np.save(src, np.array([3, 1, 2, 0, 3], dtype=np.int32))
    rc, _, err = call(capsys, "levels", src, out)
    assert rc == 0, err
    np.testing.assert_array_equal(
        read_tif(out)[0], level_sets(np.array([3, 1, 2, 0, 3])).astype(np.uint8)
    )


def test_npy_input_with_spacing_writes_imagej_metadata(capsys, image_npy, tmp_path):
    out = tmp_path / "grad.tif"
    rc, _, err = call(capsys, "gradient", image_npy, out, "--spacing", "0.5,0.25")
    assert rc == 0, err
    got, axes, meta, res = read_tif(out)
    assert axes == "YX" and res == pytest.approx((4.0, 2.0))
    expected = tv_gradient(np.load(image_npy), spacing=(0.5, 0.25))
    np.testing.assert_allclose(got, expected, rtol=1e-6)  # ImageJ stores float32


def test_sample_in_process(capsys, tmp_path):
    from napari_tv._sample_data import SAMPLE_3D_SCALE, microscopy_2d

    rc, _, err = call(capsys, "sample", "2d", tmp_path / "s.npy")
    assert rc == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), microscopy_2d()[0])
    rc, _, err = call(capsys, "sample", "3d", tmp_path / "s3.tif", "--clean", "--seed", "3")
    assert rc == 0, err
    img = _io.read_image(tmp_path / "s3.tif")
    assert _io.metadata_spacing(img) == pytest.approx(SAMPLE_3D_SCALE)


def test_force_overwrites(capsys, image_npy, tmp_path):
    out = tmp_path / "out.npy"
    np.save(out, np.zeros(3))
    rc, _, err = call(capsys, "levels", image_npy, out)
    assert_clean_error(rc, err, None, "exists")
    np.testing.assert_array_equal(np.load(out), np.zeros(3))  # untouched
    rc, _, err = call(capsys, "levels", image_npy, out, "--force")
    assert rc == 0, err
    np.testing.assert_array_equal(np.load(out), level_sets(np.load(image_npy)).astype(np.uint8))


# ----------------------------------------------------------------- errors in-process


def _bad_inputs(tmp_path, rng):
    garbage = tmp_path / "garbage.tif"
    garbage.write_bytes(b"this is not a TIFF file at all")
    four_d = tmp_path / "four_d.npy"
    np.save(four_d, rng.random((2, 3, 4, 5)))
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    png = tmp_path / "img.png"
    png.write_bytes(b"\x89PNG")
    return {"garbage": garbage, "four_d": four_d, "objects": objects, "png": png}


@pytest.mark.parametrize(
    "argv, match",
    [
        (["gradient", "{missing}", "{out}"], "no such file"),
        (["gradient", "{garbage}", "{out}"], "cannot read"),
        (["gradient", "{objects}", "{out}"], "cannot read"),
        (["levels", "{png}", "{out}"], "unsupported format"),
        (["gradient", "{four_d}", "{out}"], "dimensions"),
        (["levels", "{four_d}", "{out}"], "dimensions"),
        (["gradient", "{npy}", "{out}", "--kind", "cubic"], "kind"),
        (["gradient", "{npy}", "{out}", "--spacing", "1,0"], "spacing"),
        (["gradient", "{npy}", "{out}", "--spacing", "a,b"], "--spacing"),
        (["levels", "{npy}", "{out}", "--levels", "1"], "levels"),
        (["levels", "{npy}", "{tmp}/img.tif"], "exists"),
        (["levels", "{npy}", "{tmp}/img.npy", "--force"], "must not be IN"),
        (["levels", "{npy}", "{tmp}/./sub/../img.npy", "--force"], "must not be IN"),
        (["levels", "{npy}", "{tmp}/nodir/out.npy"], "no such directory"),
        (["levels", "{npy}", "{tmp}/out.png"], "unsupported format"),
        (["denoise", "{npy}", "{out}"], "--beta"),
        (["frobnicate"], "invalid choice"),
        (["view", "{missing}"], "no such file"),
    ],
)
def test_errors_are_one_line_and_write_nothing(capsys, tmp_path, rng, image_npy, argv, match):
    (tmp_path / "sub").mkdir()
    (tmp_path / "img.tif").write_bytes(b"existing output")
    paths = _bad_inputs(tmp_path, rng)
    out = tmp_path / "out.npy"
    fmt = {
        "missing": tmp_path / "missing.tif",
        "out": out,
        "npy": image_npy,
        "tmp": tmp_path,
        **paths,
    }
    rc, stdout, err = call(capsys, *[a.format(**fmt) for a in argv])
    assert_clean_error(rc, err, out, match)
    assert (tmp_path / "img.tif").read_bytes() == b"existing output"
    np.load(image_npy)  # IN untouched


def test_symlinked_output_onto_input_is_refused(capsys, tmp_path, image_npy):
    link = tmp_path / "link.npy"
    link.symlink_to(image_npy)
    before = image_npy.read_bytes()
    rc, _, err = call(capsys, "levels", image_npy, link, "--force")
    assert_clean_error(rc, err, None, "must not be IN")
    assert image_npy.read_bytes() == before


def test_keyboard_interrupt_exits_130_without_output(capsys, tmp_path, image_npy, monkeypatch):
    import napari_tv.levelsets as ls

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ls, "level_set", interrupted)
    out = tmp_path / "out.tif"
    rc, _, err = call(capsys, "levels", image_npy, out)
    assert rc == 130
    assert "interrupted" in err and "Traceback" not in err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_view_calls_the_widgets_launcher(capsys, monkeypatch, image_npy):
    calls = []
    fake = types.ModuleType("napari_tv._widgets._launch")
    fake.open_viewer = lambda path_or_array=None, **kw: calls.append((path_or_array, kw))
    monkeypatch.setitem(sys.modules, "napari_tv._widgets._launch", fake)
    monkeypatch.setenv("DISPLAY", ":99")
    assert call(capsys, "view", image_npy)[0] == 0
    assert call(capsys, "view")[0] == 0
    assert call(capsys, "view", "--sample", "2d")[0] == 0
    assert calls == [
        (str(image_npy), {"sample": "3d"}),
        (None, {"sample": "3d"}),  # the README's promise: the volume
        (None, {"sample": "2d"}),
    ]
    rc, _, err = call(capsys, "view", "--sample", "4d")
    assert_clean_error(rc, err, None, "invalid choice")


def test_view_without_a_display_says_so_in_one_line(tmp_path):
    """No DISPLAY: exit 2 and one line naming xvfb-run, before Qt is touched."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.pop("QT_QPA_PLATFORM", None)
    proc = subprocess.run(
        [sys.executable, "-m", "napari_tv.cli", "view"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "display" in lines[0] and "xvfb-run" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------- console script, end to end


def test_script_sample_levels_gradient(tmp_path):
    sample = tmp_path / "s2.tif"
    proc = run_cli("sample", "2d", sample)
    assert proc.returncode == 0, proc.stderr
    levels = tmp_path / "levels.npy"
    proc = run_cli("levels", sample, levels, "--levels", "4")
    assert proc.returncode == 0, proc.stderr
    data = tifffile.imread(sample)
    np.testing.assert_array_equal(np.load(levels), level_sets(data, 4).astype(np.uint8))
    grad = tmp_path / "grad.npy"
    proc = run_cli("gradient", sample, grad, "--scheme", "central", "--boundary", "periodic")
    assert proc.returncode == 0, proc.stderr
    expected = tv_gradient(data, scheme="central", boundary="periodic")
    np.testing.assert_allclose(np.load(grad), expected, rtol=1e-6)


@pytest.mark.parametrize(
    "case, match",
    [
        ("missing", "no such file"),
        ("garbage", "cannot read"),
        ("four_d", "dimensions"),
        ("bad_parameter", "boundary"),
        ("exists", "exists"),
        ("same", "must not be IN"),
        ("view_missing", "no such file"),
    ],
)
def test_script_errors(tmp_path, rng, image_npy, case, match):
    paths = _bad_inputs(tmp_path, rng)
    out = tmp_path / "out.npy"
    argv = {
        "missing": ["gradient", tmp_path / "nope.tif", out],
        "garbage": ["gradient", paths["garbage"], out],
        "four_d": ["gradient", paths["four_d"], out],
        "bad_parameter": ["gradient", image_npy, out, "--boundary", "mirror"],
        "exists": ["gradient", image_npy, paths["garbage"]],
        "same": ["gradient", image_npy, image_npy, "--force"],
        "view_missing": ["view", tmp_path / "nope.tif"],
    }[case]
    proc = run_cli(*argv)
    assert "Traceback" not in proc.stderr
    assert_clean_error(proc.returncode, proc.stderr, out, match)


# ------------------------------------------------------------------------- denoise


def test_denoise_in_process_matches_the_api(capsys, imagej_tif, volume, tmp_path):
    from napari_tv.solvers.api import denoise_tv

    out = tmp_path / "den.tif"
    rc, stdout, err = call(
        capsys, "denoise", imagej_tif, out, "--beta", "2", "--tol", "1e-3", "--boundary", "periodic"
    )
    assert rc == 0, err
    expected, info = denoise_tv(
        volume, 2.0, spacing=IJ_SPACING, tol=1e-3, boundary="periodic", return_info=True
    )
    got, axes, meta, res = read_tif(out)
    assert got.dtype == np.float32 and axes == "ZYX"
    assert meta["spacing"] == pytest.approx(2.0) and res == pytest.approx((4.0, 2.0))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    lines = stdout.splitlines()
    assert lines[0].startswith("energy ")
    assert float(lines[0].split()[1]) == pytest.approx(info.energy, rel=1e-6)
    assert lines[1].startswith("gap ") and "converged after" in lines[1]
    assert lines[2].startswith("time ") and lines[3] == f"wrote {out}"


def test_denoise_exact_prints_the_certificate(capsys, image_npy, tmp_path):
    from napari_tv.solvers.api import denoise_tv

    out = tmp_path / "exact.npy"
    rc, stdout, err = call(
        capsys,
        "denoise",
        image_npy,
        out,
        "--beta",
        "1.5",
        "--method",
        "exact",
        "--connectivity",
        "2",
    )
    assert rc == 0, err
    raw = np.load(image_npy)
    expected = denoise_tv(raw, 1.5, method="exact", connectivity=2)
    np.testing.assert_array_equal(np.load(out), expected)
    n_levels = int(raw.max()) - int(raw.min()) + 1  # every integer of a uint16 image
    assert f"exact: certified global minimum on {n_levels} levels" in stdout


def test_denoise_uses_the_channel_axis_of_the_file(capsys, tmp_path, rng):
    from napari_tv.solvers.api import denoise_tv

    src, out = tmp_path / "rgb.tif", tmp_path / "rgb_den.npy"
    data = rng.random((2, 9, 8)).astype(np.float32)
    tifffile.imwrite(
        src, data, imagej=True, resolution=(2.0, 4.0), metadata={"axes": "CYX", "unit": "micron"}
    )
    rc, _, err = call(
        capsys,
        "denoise",
        src,
        out,
        "--beta",
        "0.2",
        "--method",
        "primal_dual",
        "--fidelity",
        "l1",
        "--max-iter",
        "50",
    )
    assert rc == 0, err
    expected = denoise_tv(
        data,
        0.2,
        method="primal_dual",
        fidelity="l1",
        max_num_iter=50,
        channel_axis=0,
        spacing=(0.25, 0.5),
    )
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-5, atol=1e-6)


def test_denoise_library_errors_are_clean(capsys, tmp_path, rng):
    src, out = tmp_path / "neg.npy", tmp_path / "out.npy"
    np.save(src, rng.normal(size=(6, 6)))
    rc, _, err = call(
        capsys,
        "denoise",
        src,
        out,
        "--beta",
        "1",
        "--fidelity",
        "poisson",
        "--method",
        "primal_dual",
    )
    assert_clean_error(rc, err, out, "poisson")
    rc, _, err = call(capsys, "denoise", src, out, "--beta", "-1")
    assert_clean_error(rc, err, out, "beta")
    rc, _, err = call(capsys, "denoise", src, out, "--beta", "1", "--method", "magic")
    assert_clean_error(rc, err, out, "method")
    rc, _, err = call(capsys, "denoise", src, out, "--beta", "1", "--channel-axis", "5")
    assert_clean_error(rc, err, out, "channel_axis")


def test_denoise_keyboard_interrupt(capsys, monkeypatch, image_npy, tmp_path):
    import napari_tv.solvers.api as api

    def interrupted(*args, callback=None, **kwargs):
        callback({"fraction": 0.5, "iter": 3, "energy": 1.0})
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "denoise_tv", interrupted)
    out = tmp_path / "out.npy"
    rc, _, err = call(capsys, "denoise", image_npy, out, "--beta", "1")
    assert rc == 130 and err.strip().endswith("napari-tv: interrupted; no output written")
    assert not out.exists() and not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_script_denoise_matches_the_api(tmp_path, image_npy):
    from napari_tv.solvers.api import denoise_tv

    out = tmp_path / "den.tif"  # .npy in, no voxel size: a plain TIFF out
    proc = run_cli("denoise", image_npy, out, "--beta", "1.5", "--method", "exact")
    assert proc.returncode == 0, proc.stderr
    expected = denoise_tv(np.load(image_npy), 1.5, method="exact")
    got, _, meta, _ = read_tif(out)
    assert meta is None and got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)
    assert "energy " in proc.stdout and "exact: certified global minimum" in proc.stdout


def test_script_sigint_stops_cleanly(tmp_path, rng):
    src, out = tmp_path / "big.npy", tmp_path / "out.tif"
    # float32 3-D Chambolle with periodic boundaries, as in the in-process test: the same
    # Numba specialisations, so the subprocess loads them from the cache
    np.save(src, rng.normal(size=(6, 40, 40)).astype(np.float32))
    argv = [
        "denoise",
        src,
        out,
        "--beta",
        "0.5",
        "--boundary",
        "periodic",
        "--tol",
        "0",
        "--max-iter",
        "100000000",
    ]
    proc = subprocess.Popen(
        [*COMMAND, *map(str, argv)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        first = proc.stderr.readline()  # "napari-tv: denoising ..." once the solver starts
        assert "denoising" in first, first
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "napari-tv: interrupted; no output written" in stderr and "Traceback" not in stderr
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.npy"]


def test_8_bit_rgb_tiff_is_denoised_per_colour_in_float32(capsys, tmp_path, rng):
    from napari_tv.solvers.api import denoise_tv

    src, out = tmp_path / "photo.tif", tmp_path / "photo_tv.tif"
    rgb = rng.integers(0, 256, size=(20, 24, 3)).astype(np.uint8)
    tifffile.imwrite(src, rgb, photometric="rgb")
    rc, stdout, err = call(capsys, "denoise", src, out, "--beta", "20")
    assert rc == 0, err
    got = tifffile.imread(out)
    assert got.dtype == np.float32 and got.shape == rgb.shape
    expected = denoise_tv(rgb, 20.0, channel_axis=-1)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-4)
    assert "converged" in stdout and "not converged" not in stdout


def test_rgb_like_npy_warns_in_one_line_and_4d_names_the_channel_axis(capsys, tmp_path, rng):
    src, out = tmp_path / "vol.npy", tmp_path / "vol_tv.npy"
    np.save(src, rng.random((10, 12, 3)).astype(np.float32))
    rc, _, err = call(capsys, "denoise", src, out, "--beta", "0.1", "-q")
    assert rc == 0
    assert "napari-tv: warning: image of shape (10, 12, 3) is treated as a 3-D volume" in err
    assert "Traceback" not in err and "warnings.warn" not in err
    stack = tmp_path / "tzyx.npy"
    np.save(stack, rng.random((2, 3, 5, 6)).astype(np.float32))
    rc, _, err = call(capsys, "denoise", stack, tmp_path / "o.npy", "--beta", "0.1")
    assert_clean_error(rc, err, tmp_path / "o.npy", "--channel-axis")
    rc, _, err = call(
        capsys, "denoise", stack, tmp_path / "o.npy", "--beta", "0.1", "--channel-axis", "0"
    )
    assert rc == 0, err


def test_a_cold_cache_says_it_is_preparing_the_solvers(tmp_path):
    """A new install (empty Numba cache): one line while the kernels compile."""
    sample, out = tmp_path / "s.npy", tmp_path / "o.npy"
    np.save(sample, np.random.default_rng(0).random((30, 40)).astype(np.float32))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"),
               NAPARI_TV_KERNELS="auto", NAPARI_TV_BACKGROUND_COMPILE="0")
    proc = subprocess.run(
        [*COMMAND, "denoise", str(sample), str(out), "--beta", "0.1"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("preparing the solvers for this data type (first use only") == 1


def test_beta_auto_prints_the_beta_it_chose(capsys, tmp_path):
    from napari_tv import microscopy_2d
    from napari_tv.solvers.api import denoise_tv

    src, out = tmp_path / "s.npy", tmp_path / "o.npy"
    np.save(src, microscopy_2d()[0])
    rc, stdout, err = call(capsys, "denoise", src, out, "--beta", "auto")
    assert rc == 0, err
    line = next(ln for ln in stdout.splitlines() if ln.startswith("beta "))
    assert line.endswith("(chosen by J-invariance)")
    beta = float(line.split()[1])
    np.testing.assert_allclose(np.load(out), denoise_tv(np.load(src), beta), atol=1e-3)
    rc, stdout, err = call(
        capsys, "denoise", src, tmp_path / "p.npy", "--beta", "AUTO", "--beta-rule", "sure"
    )
    assert rc == 0 and "(chosen by SURE)" in stdout
    rc, _, err = call(capsys, "denoise", src, tmp_path / "q.npy", "--beta", "auto",
                      "--beta-rule", "pure")
    assert_clean_error(rc, err, tmp_path / "q.npy", "rule='pure' applies to fidelity 'poisson'")
    rc, _, err = call(capsys, "denoise", src, tmp_path / "r.npy", "--beta", "2",
                      "--beta-rule", "sure")
    assert_clean_error(rc, err, tmp_path / "r.npy", "--beta-rule goes with --beta auto")
    rc, _, err = call(capsys, "denoise", src, tmp_path / "r.npy", "--beta", "lots")
    assert_clean_error(rc, err, tmp_path / "r.npy", "expected a number or 'auto'")
