"""The command line under faults: a full disk, a read-only or racing OUT, signals, odd levels,
damaged files. Every case ends in one ``napari-tv: ...`` line, exit status 2 (130 for Ctrl-C,
143 for SIGTERM), no traceback and nothing left behind (docs/cli.md, "Promises")."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_tv import _io
from napari_tv.cli import main

SCRIPT = Path(sys.executable).with_name("napari-tv")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "napari_tv.cli"]


def call(capsys, *args):
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def one_line_error(rc, err, match):
    """Exit 2 and one error line, the last (a progress note such as ``napari-tv: denoising
    ...`` may come first when the error happens after the work)."""
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert rc == 2, err
    errors = [ln for ln in lines if ln.startswith("napari-tv: error") or "Error" in ln]
    assert errors == lines[-1:], err
    assert lines[-1].startswith("napari-tv: error:") and match in lines[-1], err
    assert "Traceback" not in err


def leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.startswith(".napari-tv-")]


@pytest.fixture
def image_npy(tmp_path):
    path = tmp_path / "img.npy"
    np.save(path, np.random.default_rng(0).random((40, 48)).astype(np.float32))
    return path


@pytest.fixture
def tiny_disk(tmp_path):
    """A 600 KiB tmpfs (root only: mount)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "tiny"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)],
                          capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def run(*args, **kw):
    return subprocess.run([*COMMAND, *map(str, args)], capture_output=True, text=True,
                          timeout=300, **kw)


# ------------------------------------------------------------------------- the disk


def test_full_disk_levels_and_denoise_say_so_and_leave_nothing(tiny_disk, tmp_path):
    vol = tmp_path / "vol.npy"
    np.save(vol, np.random.default_rng(1).random((16, 64, 64)).astype(np.float32))
    for args in (("levels", vol, tiny_disk / "out.npy", "--levels", "8"),
                 ("levels", vol, tiny_disk / "out.tif", "--levels", "8"),
                 ("denoise", vol, tiny_disk / "out.tif", "--beta", "0.1", "-q")):
        proc = run(*args)
        one_line_error(proc.returncode, proc.stderr, "not enough space")
        assert list(tiny_disk.iterdir()) == []


def test_disk_filling_up_while_writing_is_an_error_not_a_crash(tiny_disk, tmp_path):
    """Space checked at the start, then taken by someone else: the .npy is allocated before
    it is memory-mapped (ENOSPC, not SIGBUS)."""
    vol = tmp_path / "vol.npy"
    np.save(vol, np.random.default_rng(1).random((4, 64, 64)).astype(np.float32))
    code = (
        "import shutil, sys\n"
        "from napari_tv import _io\n"
        "_io._check_space = lambda out, n: None  # the check passes; the disk is full\n"
        "from napari_tv.cli import main\n"
        f"sys.exit(main(['levels', {str(vol)!r}, {str(tiny_disk / 'o.npy')!r}, '--levels', '64']))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    one_line_error(proc.returncode, proc.stderr, "no space left on the device")
    assert list(tiny_disk.iterdir()) == []


def test_no_space_checked_before_the_work(capsys, monkeypatch, image_npy, tmp_path):
    monkeypatch.setattr(_io.shutil, "disk_usage", lambda p: type("U", (), {"free": 10})())
    rc, _, err = call(capsys, "denoise", image_npy, tmp_path / "o.tif", "--beta", "0.1")
    one_line_error(rc, err, "not enough space")
    assert leftovers(tmp_path) == [] and not (tmp_path / "o.tif").exists()


def test_a_write_error_removes_the_partial_file(capsys, monkeypatch, image_npy, tmp_path):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_io.np, "save", full)
    rc, _, err = call(capsys, "denoise", image_npy, tmp_path / "o.npy", "--beta", "0.1")
    one_line_error(rc, err, "no space left on the device")
    assert leftovers(tmp_path) == [] and not (tmp_path / "o.npy").exists()


def test_read_only_directory_and_long_name_fail_before_the_work(capsys, image_npy, tmp_path):
    rc, _, err = call(capsys, "denoise", image_npy, tmp_path / ("x" * 300 + ".npy"), "--beta",
                      "1")
    one_line_error(rc, err, "the file name is longer than")
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(ro)],
                              capture_output=True)
        if proc.returncode != 0:
            pytest.skip("cannot mount a read-only tmpfs here")
    else:
        ro.chmod(0o555)
    try:
        rc, _, err = call(capsys, "denoise", image_npy, ro / "o.npy", "--beta", "1")
        one_line_error(rc, err, "cannot write")
        assert "read-only" in err or "permission denied" in err
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(ro)], check=False)


# ------------------------------------------------------------------- OUT appearing


def test_out_created_during_the_run_is_not_replaced(capsys, monkeypatch, image_npy, tmp_path):
    import napari_tv.solvers.api as api

    out = tmp_path / "o.npy"
    real = api.denoise_tv

    def racing(*args, **kwargs):
        out.write_bytes(b"someone else's")
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "denoise_tv", racing)
    rc, _, err = call(capsys, "denoise", image_npy, out, "--beta", "0.1")
    one_line_error(rc, err, "appeared while it was being computed; it was not replaced")
    assert out.read_bytes() == b"someone else's" and leftovers(tmp_path) == []
    rc, _, err = call(capsys, "denoise", image_npy, out, "--beta", "0.1", "--force")
    assert rc == 0 and np.load(out).shape == (40, 48)


# ---------------------------------------------------------------------- levels


def test_one_level_grids_are_refused_in_one_line(capsys, tmp_path):
    const = tmp_path / "c.npy"
    np.save(const, np.full((8, 8), 5.0))
    img = tmp_path / "i.npy"
    np.save(img, np.arange(64.0).reshape(8, 8))
    for args in ((const, tmp_path / "o.npy"), (const, tmp_path / "o.tif", "-q"),
                 (img, tmp_path / "o.npy", "--levels", "5,5")):
        rc, out, err = call(capsys, "levels", *args)
        one_line_error(rc, err, "a single level")
        assert leftovers(tmp_path) == [] and not (tmp_path / "o.npy").exists()


def test_levels_counts_are_whole_numbers(capsys, image_npy, tmp_path):
    rc, out, err = call(capsys, "levels", image_npy, tmp_path / "o.npy", "--levels", "1e2")
    assert rc == 0, err
    assert np.load(tmp_path / "o.npy").shape == (99, 40, 48) and "wrote" in out
    rc, _, err = call(capsys, "levels", image_npy, tmp_path / "p.npy", "--levels", "2.5")
    one_line_error(rc, err, "a number of levels must be a whole number")


def test_levels_refuse_a_huge_stack_unless_allowed(capsys, tmp_path):
    img = tmp_path / "twelve_bit.npy"
    np.save(img, (np.arange(320 * 256) % 4096).reshape(320, 256).astype(np.uint16))
    rc, _, err = call(capsys, "levels", img, tmp_path / "o.npy")
    one_line_error(rc, err, "the stack would take 319.9 MiB (4095 levels x 81920 voxels)")
    assert not (tmp_path / "o.npy").exists()
    rc, out, err = call(capsys, "levels", img, tmp_path / "o.npy", "--levels", "64",
                        "--max-bytes", "5M")
    assert rc == 0 and "(4.9 MiB)" in out


# ----------------------------------------------------------------------- signals


def test_ctrl_c_during_start_up_is_one_line(tmp_path, image_npy):
    for delay in (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.45, 0.6):  # Python, numpy, numba, ...
        out = tmp_path / f"o{delay}.npy"  # a run that finished before the signal wrote its own
        proc = subprocess.Popen([*COMMAND, "denoise", str(image_npy), str(out), "--beta", "0.1"],
                                stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        if "Traceback" in err:  # only from Python's own handler, before the first line of ours
            assert proc.returncode == -signal.SIGINT, (proc.returncode, err)
            assert "_console.py" not in err and "cli.py" not in err, err
            continue
        assert proc.returncode in (130, -signal.SIGINT, 0), (proc.returncode, err)
        if proc.returncode == 130:
            assert err.strip().splitlines()[-1] == "napari-tv: interrupted; no output written"
            assert not out.exists()
        assert leftovers(tmp_path) == []


def test_sigterm_while_writing_leaves_no_partial_file(tmp_path):
    vol = tmp_path / "vol.npy"
    np.save(vol, np.random.default_rng(2).random((32, 256, 256)).astype(np.float32))
    proc = subprocess.Popen([*COMMAND, "levels", str(vol), str(tmp_path / "o.npy"),
                             "--levels", "250", "--max-bytes", "4G"],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    def partial():
        return [name for name in leftovers(tmp_path) if name.endswith(".partial")]

    while not partial() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert partial(), "the partial file never appeared"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "terminated; no output written" in err and "Traceback" not in err
    assert leftovers(tmp_path) == [] and not (tmp_path / "o.npy").exists()


def test_ctrl_c_during_an_exact_round_ends_at_once(tmp_path):
    vol = tmp_path / "vol.npy"
    rng = np.random.default_rng(3)
    np.save(vol, (rng.random((128, 128, 128)) * 255).astype(np.uint8))
    proc = subprocess.Popen([*COMMAND, "denoise", str(vol), str(tmp_path / "o.npy"), "--beta",
                             "20", "--method", "exact"], stderr=subprocess.PIPE, text=True,
                            bufsize=1)  # fmt: skip
    seen = threading.Event()
    err_lines: list[str] = []

    def read() -> None:
        for line in proc.stderr:
            err_lines.append(line)
            if "denoising" in line:  # the first round is done, the second is running
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert seen.wait(120), "".join(err_lines)
    time.sleep(0.05)
    if proc.poll() is not None:
        pytest.skip("the solve finished before the signal")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    elapsed = time.monotonic() - t0
    reader.join(10)
    err = "".join(err_lines)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    assert elapsed < 0.5, elapsed  # it waited for the running max-flow round before (3.3 s)
    assert leftovers(tmp_path) == [] and not (tmp_path / "o.npy").exists()


# ------------------------------------------------------------------- the rest


def test_damaged_tiff_is_one_line(capsys, tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00" + (8).to_bytes(4, "little") + b"\x05\x00" + b"\xff" * 60)
    rc, _, err = call(capsys, "denoise", bad, tmp_path / "o.npy", "--beta", "1")
    one_line_error(rc, err, "cannot read")
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, np.zeros((16, 16), np.float32))
    (tmp_path / "cut.tif").write_bytes(good.read_bytes()[:100])
    rc, _, err = call(capsys, "denoise", tmp_path / "cut.tif", tmp_path / "o.npy", "--beta", "1")
    one_line_error(rc, err, "cannot read")


def test_view_without_a_qt_binding_is_one_line(capsys, monkeypatch):
    import types

    fake = types.ModuleType("napari_tv._widgets._launch")

    def no_qt(**kwargs):
        raise ImportError("No Qt bindings could be found")

    fake.open_viewer = no_qt
    monkeypatch.setitem(sys.modules, "napari_tv._widgets._launch", fake)
    monkeypatch.setenv("DISPLAY", ":99")
    rc, _, err = call(capsys, "view")
    one_line_error(rc, err, "cannot start napari: No Qt bindings")


def test_iteration_options(capsys, image_npy, tmp_path):
    rc, _, err = call(capsys, "denoise", image_npy, tmp_path / "o.npy", "--beta", "1",
                      "--max-iter", "0")
    one_line_error(rc, err, "must be >= 1")
    rc, _, err = call(capsys, "denoise", image_npy, tmp_path / "o.npy", "--beta", "0.3",
                      "--method", "exact", "--tol", "1e-6")
    assert rc == 0 and "--tol and --max-iter do not apply to --method exact" in err
