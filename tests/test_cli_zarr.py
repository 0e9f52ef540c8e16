"""``napari-tv denoise`` with zarr and OME-Zarr: lazy input, chunked solve, streamed output.

Plain zarr arrays (format 2 and 3) and OME-Zarr images (OME-NGFF 0.4 and 0.5) in and out,
keeping the axes and the voxel size; ``--chunks``; TIFF <-> zarr; the promises of
docs/cli.md for a directory output (no partial OUT on Ctrl-C, no replacement without
``--force``, one-line errors); ``--scheduler`` with a ``dask.distributed`` cluster.  Volumes
are small (24 x 40 x 40): the chunked solve is exact to the in-memory primal-dual iterates.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from napari_tv.cli import main

SCRIPT = Path(sys.executable).with_name("napari-tv")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "napari_tv.cli"]
SHAPE = (24, 40, 40)
CHUNKS = (12, 20, 20)
SPACING = (2.0, 0.5, 0.5)  # z, y, x in micrometer
BETA = "1"


def call(capsys, *args):
    rc = main([str(a) for a in args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def one_line_error(rc, err, match):
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("napari-tv: error: "), err
    assert match in lines[0], err


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".napari-tv-"))


@pytest.fixture(scope="module")
def volume():
    rng = np.random.default_rng(7)
    v = np.zeros(SHAPE, np.float32)
    v[6:18, 10:30, 8:25] = 10.0
    v[2:8, 25:38, 20:36] = 5.0
    return v + rng.normal(size=SHAPE).astype(np.float32)


def reference(v, spacing=None, **kwargs):
    from napari_tv import denoise_tv

    return denoise_tv(v, float(BETA), method="primal_dual", spacing=spacing, **kwargs)


def plain_zarr(path, data, fmt, chunks=CHUNKS):
    z = zarr.create_array(store=str(path), shape=data.shape, chunks=chunks, dtype=data.dtype,
                          zarr_format=fmt)  # fmt: skip
    z[...] = data
    return path


def ome_zarr(path, data, version, axes, scale, top_scale=None, chunks=None):
    """An OME-Zarr image written by hand (zarr only): level 0 at "0" plus a 2x level."""
    fmt = 2 if version == "0.4" else 3
    names = [a["name"] for a in axes]
    chunks = chunks or tuple(1 if a["type"] != "space" else c
                             for a, c in zip(axes, (1,) * (len(axes) - 3) + CHUNKS,
                                             strict=True))  # fmt: skip
    ms = {
        "axes": axes,
        "datasets": [
            {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": list(scale)}]},
            {"path": "1", "coordinateTransformations": [
                {"type": "scale", "scale": [s * (2 if a["name"] in "yx" else 1)
                                            for s, a in zip(scale, axes, strict=True)]}]},
        ],
    }  # fmt: skip
    if top_scale is not None:
        ms["coordinateTransformations"] = [{"type": "scale", "scale": list(top_scale)}]
    if version == "0.4":
        attrs = {"multiscales": [{"version": "0.4", **ms}]}
    else:
        attrs = {"ome": {"version": "0.5", "multiscales": [ms]}}
    group = zarr.open_group(str(path), mode="w", zarr_format=fmt, attributes=attrs)
    kw = {"chunk_key_encoding": {"name": "v2", "separator": "/"}} if fmt == 2 else {
        "dimension_names": names}  # fmt: skip
    level0 = group.create_array("0", shape=data.shape, chunks=chunks, dtype=data.dtype, **kw)
    level0[...] = data
    half = data[..., ::2, ::2]
    level1 = group.create_array("1", shape=half.shape, chunks=chunks, dtype=data.dtype, **kw)
    level1[...] = half
    return path


def multiscale(path):
    attrs = dict(zarr.open_group(str(path), mode="r").attrs)
    if "ome" in attrs:
        return attrs["ome"]["version"], attrs["ome"]["multiscales"][0]
    return attrs["multiscales"][0]["version"], attrs["multiscales"][0]


SPACE = [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"]


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("fmt", [2, 3])
def test_plain_zarr_round_trip(capsys, tmp_path, volume, fmt):
    src = plain_zarr(tmp_path / "in.zarr", volume, fmt)
    out = tmp_path / "out.zarr"
    rc, stdout, err = call(capsys, "denoise", src, out, "--beta", BETA)
    assert rc == 0, err
    u = zarr.open(str(out), mode="r")
    assert isinstance(u, zarr.Array) and u.metadata.zarr_format == fmt
    assert u.shape == SHAPE and u.chunks == CHUNKS and u.dtype == np.float32
    np.testing.assert_allclose(u[...], reference(volume), atol=1e-4)  # the same iterates
    assert "in chunks of 12x20x20" in err
    assert "converged after" in stdout and "rounds, tol 0.0001)" in stdout
    assert f"wrote {out}" in stdout and leftovers(tmp_path) == []


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_round_trip_keeps_axes_and_voxel_size(capsys, tmp_path, volume, version):
    """Two channels (c axis: each solved on its own, written into its slice), a top-level
    scale combined with level 0's: the voxel size used is (2, 0.5, 0.5)."""
    axes = [{"name": "c", "type": "channel"}, *SPACE]
    data = np.stack([volume, 2 * volume[:, ::-1]])
    src = ome_zarr(tmp_path / "in.zarr", data, version, axes, (1.0, 1.0, 0.25, 0.25),
                   top_scale=(1.0, 2.0, 2.0, 2.0))  # fmt: skip
    out = tmp_path / "out.zarr"
    rc, stdout, err = call(capsys, "denoise", src, out, "--beta", BETA)
    assert rc == 0, err
    assert "spacing (2.0, 0.5, 0.5)" in err
    got_version, ms = multiscale(out)
    assert got_version == version and ms["axes"] == axes
    group = zarr.open_group(str(out), mode="r")
    assert group.metadata.zarr_format == (2 if version == "0.4" else 3)
    level0 = group[ms["datasets"][0]["path"]]
    assert level0.shape == data.shape and level0.chunks == (1, *CHUNKS)
    scale0 = ms["datasets"][0]["coordinateTransformations"][0]["scale"]
    top = ms.get("coordinateTransformations", [{"scale": [1.0] * 4}])[0]["scale"]
    assert np.multiply(scale0, top).tolist() == [1.0, 2.0, 0.5, 0.5]
    if version == "0.5":
        assert level0.metadata.dimension_names == ("c", "z", "y", "x")
    for c in range(2):
        np.testing.assert_allclose(level0[c], reference(data[c], spacing=SPACING), atol=1e-4)


def test_ome_zarr_time_axis_is_a_batch_axis_and_the_pyramid_is_written(capsys, tmp_path, volume):
    """t, z, y, x: every time point solved on its own; with chunks smaller than the plane,
    2x in-plane means as the lower levels (scale doubled in y and x)."""
    axes = [{"name": "t", "type": "time", "unit": "second"}, *SPACE]
    data = np.stack([volume[:, :, :], volume[::-1]])[:, :, :40, :40]
    src = ome_zarr(tmp_path / "in.zarr", data, "0.5", axes, (3.0, *SPACING))
    out = tmp_path / "out.zarr"
    rc, _, err = call(capsys, "denoise", src, out, "--beta", BETA, "--chunks", "12,16,16")
    assert rc == 0, err
    _, ms = multiscale(out)
    paths = [d["path"] for d in ms["datasets"]]
    assert paths == ["0", "1", "2"]  # 40 -> 20 -> 10 in-plane
    scales = [d["coordinateTransformations"][0]["scale"] for d in ms["datasets"]]
    assert scales == [[3.0, *SPACING], [3.0, 2.0, 1.0, 1.0], [3.0, 2.0, 2.0, 2.0]]
    group = zarr.open_group(str(out), mode="r")
    u0, u1 = group["0"][...], group["1"][...]
    assert group["0"].chunks == (1, 12, 16, 16) and u1.shape == (2, 24, 20, 20)
    np.testing.assert_allclose(u0[1], reference(data[1], spacing=SPACING), atol=1e-4)
    np.testing.assert_allclose(
        u1, u0.reshape(2, 24, 20, 2, 20, 2).mean(axis=(3, 5)), rtol=1e-5, atol=1e-5
    )


def test_chunks_option_sets_the_output_chunks(capsys, tmp_path, volume):
    src = plain_zarr(tmp_path / "in.zarr", volume, 3)
    rc, _, err = call(capsys, "denoise", src, tmp_path / "a.zarr", "--beta", BETA, "--chunks",
                      "24,40,20", "-q")  # fmt: skip
    assert rc == 0 and err == ""
    a = zarr.open(str(tmp_path / "a.zarr"), mode="r")
    assert a.chunks == (24, 40, 20)
    rc, _, err = call(capsys, "denoise", src, tmp_path / "b.zarr", "--beta", BETA, "--chunks",
                      "16", "-q")  # one size for every spatial axis  # fmt: skip
    assert rc == 0, err
    b = zarr.open(str(tmp_path / "b.zarr"), mode="r")
    assert b.chunks == (16, 16, 16)
    np.testing.assert_allclose(a[...], b[...], atol=1e-4)  # the chunking changes nothing


def test_tiff_in_zarr_out_and_zarr_in_tiff_out(capsys, tmp_path, volume):
    tif = tmp_path / "in.tif"
    tifffile.imwrite(tif, volume, imagej=True, resolution=(2.0, 2.0),
                     metadata={"axes": "ZYX", "spacing": 2.0, "unit": "micron"})  # fmt: skip
    expected = reference(volume, spacing=SPACING)
    # TIFF in, zarr out with --chunks: the chunked solve
    rc, _, err = call(capsys, "denoise", tif, tmp_path / "a.zarr", "--beta", BETA, "--chunks",
                      "12,20,20")  # fmt: skip
    assert rc == 0, err
    a = zarr.open(str(tmp_path / "a.zarr"), mode="r")
    assert a.chunks == CHUNKS
    np.testing.assert_allclose(a[...], expected, atol=1e-4)
    # TIFF in, zarr out without --chunks: solved in memory, written in chunks
    rc, _, err = call(capsys, "denoise", tif, tmp_path / "b.ome.zarr", "--beta", BETA)
    assert rc == 0, err
    version, ms = multiscale(tmp_path / "b.ome.zarr")  # *.ome.zarr: an OME-Zarr image
    assert version == "0.5" and [a["name"] for a in ms["axes"]] == ["z", "y", "x"]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == list(SPACING)
    b = zarr.open_group(str(tmp_path / "b.ome.zarr"), mode="r")["0"]
    np.testing.assert_allclose(b[...], expected, atol=1e-4)
    # OME-Zarr in, TIFF out: streamed into an OME-TIFF with the voxel size
    src = ome_zarr(tmp_path / "in.zarr", volume, "0.4", SPACE, SPACING)
    rc, _, err = call(capsys, "denoise", src, tmp_path / "c.tif", "--beta", BETA)
    assert rc == 0, err
    with tifffile.TiffFile(tmp_path / "c.tif") as tf:
        assert tf.is_ome
        got = tf.asarray()
        pixels = tifffile.xml2dict(tf.ome_metadata)["OME"]["Image"]["Pixels"]
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert (pixels["PhysicalSizeZ"], pixels["PhysicalSizeX"]) == (2.0, 0.5)
    # plain zarr in, .npy out
    plain = plain_zarr(tmp_path / "plain.zarr", volume, 2)
    rc, _, err = call(capsys, "denoise", plain, tmp_path / "d.npy", "--beta", BETA)
    assert rc == 0, err
    np.testing.assert_allclose(np.load(tmp_path / "d.npy"), reference(volume), atol=1e-4)
    assert leftovers(tmp_path) == []


def test_beta_auto_is_chosen_on_a_central_crop(capsys, tmp_path, volume):
    src = plain_zarr(tmp_path / "in.zarr", volume, 3)
    rc, stdout, err = call(capsys, "denoise", src, tmp_path / "o.zarr", "--beta", "auto")
    assert rc == 0, err
    assert "beta auto (chosen from a central crop)" in err
    line = stdout.splitlines()[0]
    assert line.startswith("beta ") and "(chosen by J-invariance on a central crop)" in line
    assert float(line.split()[1]) > 0


@pytest.mark.parametrize("share", [1.0, 0.0])  # fits and is solved at once / passes
def test_exact_on_zarr_is_certified(capsys, tmp_path, volume, monkeypatch, share):
    from napari_tv import _exact_chunked, denoise_tv
    from napari_tv.operators import tv_energy

    monkeypatch.setattr(_exact_chunked, "IN_MEMORY_SHARE", share)
    small = np.round(volume[:8, :16, :16]).astype(np.int16)
    src = plain_zarr(tmp_path / "in.zarr", small, 3, chunks=(4, 8, 8))
    rc, stdout, err = call(capsys, "denoise", src, tmp_path / "o.zarr", "--beta", "2",
                           "--method", "exact", "--connectivity", "2")  # fmt: skip
    assert rc == 0, err
    assert "exact: certified global minimum on" in stdout
    how = "solved at once: it fits in memory" if share else "passes over the blocks"
    assert how in stdout
    got = zarr.open(str(tmp_path / "o.zarr"), mode="r")
    ref = denoise_tv(small, 2.0, method="exact", connectivity=2)
    v = small.astype(np.float32)
    assert tv_energy(got[...], v, 2.0, connectivity=2) == pytest.approx(
        tv_energy(ref, v, 2.0, connectivity=2), rel=1e-9)
    assert got.chunks == (4, 8, 8)


def test_exact_not_certified_is_an_error_and_writes_nothing(capsys, tmp_path, monkeypatch):
    """A plateau larger than the blocks, no memory to solve it at once: refused."""
    from napari_tv import _exact_chunked

    v = np.random.default_rng(4).normal(size=(36, 36)).astype(np.float32)
    v[4:32, 4:32] += 6.0
    src = plain_zarr(tmp_path / "in.zarr", v, 2, chunks=(9, 9))
    monkeypatch.setattr(_exact_chunked, "DEFAULT_OVERLAP", 1)
    monkeypatch.setattr(_exact_chunked, "available_bytes", lambda: 0)
    rc, _, err = call(capsys, "denoise", src, tmp_path / "o.zarr", "--beta", "3",
                      "--method", "exact", "--levels", "48", "--quiet")  # fmt: skip
    one_line_error(rc, err, "the exact solve is not certified: ")
    assert "voxels undecided" in err
    assert not (tmp_path / "o.zarr").exists() and leftovers(tmp_path) == []


def test_an_image_too_large_for_memory_is_solved_in_chunks(capsys, tmp_path, volume, monkeypatch):
    """TIFF/.npy in, the memory guard's estimate over the budget: the chunked solve (its
    state on disk) instead of an error, the same result."""
    np.save(tmp_path / "in.npy", volume)
    expected = reference(volume)
    monkeypatch.setenv("NAPARI_TV_MEMORY_LIMIT", str(1 << 20))
    rc, stdout, err = call(capsys, "denoise", tmp_path / "in.npy", tmp_path / "o.tif", "--beta",
                           BETA)  # fmt: skip
    assert rc == 0, err
    assert "the in-memory solve would need about" in err and "chunk by chunk" in err
    assert "rounds" in stdout
    np.testing.assert_allclose(tifffile.imread(tmp_path / "o.tif"), expected, atol=1e-4)
    # exact too: solved chunk by chunk, certified
    rc, stdout, err = call(capsys, "denoise", tmp_path / "in.npy", tmp_path / "e.zarr",
                           "--beta", BETA, "--method", "exact", "--levels", "64")  # fmt: skip
    assert rc == 0, err
    assert "chunk by chunk" in err and "exact: certified global minimum on 64 levels" in stdout
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------- promises


def test_no_space_is_found_before_the_work(capsys, tmp_path, volume, monkeypatch):
    from napari_tv import _io

    src = plain_zarr(tmp_path / "in.zarr", volume, 3)
    monkeypatch.setattr(_io.shutil, "disk_usage", lambda p: type("U", (), {"free": 10})())
    for out in ("o.zarr", "o.tif"):
        rc, _, err = call(capsys, "denoise", src, tmp_path / out, "--beta", BETA)
        one_line_error(rc, err, "not enough space")
        assert not (tmp_path / out).exists() and leftovers(tmp_path) == []


def test_existing_out_is_not_replaced_without_force(capsys, tmp_path, volume):
    src = plain_zarr(tmp_path / "in.zarr", volume, 3)
    out = tmp_path / "out.zarr"
    old = plain_zarr(out, np.zeros((4, 4), np.float32), 3, chunks=(4, 4))
    rc, _, err = call(capsys, "denoise", src, out, "--beta", BETA)
    one_line_error(rc, err, "exists; use --force")
    assert zarr.open(str(old), mode="r").shape == (4, 4) and leftovers(tmp_path) == []
    empty = tmp_path / "empty.zarr"
    empty.mkdir()  # os.rename would replace an empty directory: refused all the same
    rc, _, err = call(capsys, "denoise", src, empty, "--beta", BETA)
    one_line_error(rc, err, "exists; use --force")
    rc, _, err = call(capsys, "denoise", src, out, "--beta", BETA, "--force", "-q")
    assert rc == 0, err
    new = zarr.open(str(out), mode="r")
    assert new.shape == SHAPE and not (out / "c" / "0" / "0" / "0" / "0").exists()
    assert leftovers(tmp_path) == []


def test_out_appearing_during_the_run_is_not_replaced(capsys, tmp_path, volume, monkeypatch):
    import napari_tv.chunked as chunked

    src = plain_zarr(tmp_path / "in.zarr", volume, 3)
    out = tmp_path / "out.zarr"
    real = chunked.denoise_tv_chunked

    def racing(*args, **kwargs):
        out.mkdir()  # someone else's (empty) directory
        (out / "theirs").write_text("keep me")
        return real(*args, **kwargs)

    monkeypatch.setattr(chunked, "denoise_tv_chunked", racing)
    rc, _, err = call(capsys, "denoise", src, out, "--beta", BETA, "-q")
    one_line_error(rc, err, "appeared while it was being computed; it was not replaced")
    assert (out / "theirs").read_text() == "keep me" and leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "value, match",
    [("0", "argument --chunks: chunk sizes must be >= 1, got '0'"),
     ("a,b", "argument --chunks: expected whole numbers"),
     ("12,20", "--chunks needs 1, 3 (the spatial axes) or 3 (every axis) sizes")],
)  # fmt: skip
def test_bad_chunks_is_a_one_line_error(capsys, tmp_path, volume, value, match):
    src = plain_zarr(tmp_path / "in.zarr", volume, 3)
    rc, _, err = call(capsys, "denoise", src, tmp_path / "o.zarr", "--beta", BETA, "--chunks",
                      value)  # fmt: skip
    one_line_error(rc, err, match)
    assert not (tmp_path / "o.zarr").exists() and leftovers(tmp_path) == []


def test_other_zarr_errors_are_one_line(capsys, tmp_path, volume, monkeypatch):
    from napari_tv import cli

    monkeypatch.setattr(cli, "CONNECT_TIMEOUT", 1)  # nobody listens on port 9
    src = plain_zarr(tmp_path / "in.zarr", volume, 3)
    group = tmp_path / "group.zarr"
    zarr.open_group(str(group), mode="w").create_array("a", shape=(4,), dtype="f4")
    not_zarr = tmp_path / "junk.zarr"
    not_zarr.mkdir()
    (not_zarr / "x.txt").write_text("hello")
    cases = [
        (["denoise", tmp_path / "missing.zarr", tmp_path / "o.zarr"], "no such file"),
        (["denoise", group, tmp_path / "o.zarr"], "without OME-Zarr multiscales"),
        (["denoise", not_zarr, tmp_path / "o.zarr"], "not a zarr array or group"),
        (["denoise", src, tmp_path / "o.zarr", "--beta", "auto", "--beta-rule", "sure"],
         "--beta-rule is not available when solving chunk by chunk"),
        (["denoise", src, tmp_path / "o.zarr", "--method", "exact", "--boundary", "periodic"],
         "method='exact' does not support boundary='periodic'"),
        (["denoise", src, tmp_path / "o.zarr", "--option", "rho=2"],
         "--option is not available when solving chunk by chunk"),
        (["denoise", src, tmp_path / "o.zarr", "--scheduler", "nonsense"],
         "argument --scheduler: expected threads, processes, synchronous"),
        (["denoise", src, tmp_path / "o.zarr", "--scheduler", "127.0.0.1:9"],
         "--scheduler tcp://127.0.0.1:9: cannot connect"),
        (["levels", src, tmp_path / "o.npy"], "zarr is read by denoise and view only"),
        (["gradient", tmp_path / "x.npy", tmp_path / "o.zarr"], "unsupported format '.zarr'"),
    ]  # fmt: skip
    np.save(tmp_path / "x.npy", volume[0])
    for argv, match in cases:
        if "--beta" not in argv and argv[0] == "denoise":
            argv = [*argv, "--beta", BETA]
        rc, _, err = call(capsys, *argv)
        one_line_error(rc, err, match)
        assert not (tmp_path / "o.zarr").exists() and leftovers(tmp_path) == []


def test_sigint_mid_run_leaves_no_partial_output(tmp_path):
    """A long chunked solve (tol 0) interrupted once the temporary directory beside OUT has
    chunks in it: exit 130, one line, no OUT, no temporary directory."""
    rng = np.random.default_rng(1)
    src = plain_zarr(tmp_path / "in.zarr", rng.normal(size=(32, 64, 64)).astype(np.float32), 3,
                     chunks=(16, 32, 32))  # fmt: skip
    out = tmp_path / "out.zarr"
    proc = subprocess.Popen(
        [*COMMAND, "denoise", str(src), str(out), "--beta", "0.5", "--tol", "0", "--max-iter",
         "100000000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        first = proc.stderr.readline()  # "napari-tv: denoising ..." once the solve runs
        assert "denoising" in first, first + proc.stderr.read()
        deadline = time.monotonic() + 60
        while not leftovers(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert leftovers(tmp_path), "the temporary directory never appeared"
        time.sleep(0.5)
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "napari-tv: interrupted; no output written", err
    assert "Traceback" not in err
    assert not out.exists() and leftovers(tmp_path) == []


# ------------------------------------------------------------------------- schedulers


@pytest.mark.slow  # a two-process cluster, and a round trip to it per round: ~15 s
def test_distributed_scheduler_equals_threads(capsys, tmp_path, volume):
    distributed = pytest.importorskip("distributed")
    two = np.stack([volume[:12], volume[12:]])  # two channels: each written into its slice
    src = ome_zarr(tmp_path / "in.zarr", two, "0.5",
                   [{"name": "c", "type": "channel"}, *SPACE], (1.0, *SPACING))  # fmt: skip
    tol = ["--tol", "1e-3"]  # fewer rounds
    rc, _, err = call(capsys, "denoise", src, tmp_path / "threads.zarr", "--beta", BETA, *tol,
                      "-q")  # fmt: skip
    assert rc == 0, err
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster:  # fmt: skip
        rc, stdout, err = call(capsys, "denoise", src, tmp_path / "cluster.zarr", "--beta",
                               BETA, *tol, "--scheduler", cluster.scheduler_address)  # fmt: skip
    assert rc == 0, err
    assert f"scheduler {cluster.scheduler_address}" in err and "converged" in stdout
    a = zarr.open_group(str(tmp_path / "threads.zarr"), mode="r")["0"][...]
    b = zarr.open_group(str(tmp_path / "cluster.zarr"), mode="r")["0"][...]
    np.testing.assert_array_equal(a, b)
    assert leftovers(tmp_path) == []


@pytest.mark.slow  # two spawned worker processes importing the solvers: ~8 s
def test_processes_and_synchronous_schedulers_equal_threads(capsys, tmp_path, volume):
    src = plain_zarr(tmp_path / "in.zarr", volume[:12], 3)
    results = []
    for name in ("threads", "synchronous", "processes"):
        out = tmp_path / f"{name}.zarr"
        rc, _, err = call(capsys, "denoise", src, out, "--beta", BETA, "--scheduler", name, "-q")
        assert rc == 0, err
        results.append(zarr.open(str(out), mode="r")[...])
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])
