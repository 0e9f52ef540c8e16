"""β from the data (issue 14): how far each rule's β falls from the best one, and its cost.

On images the tests do not use (scikit-image's astronaut, brick, chelsea, coffee, grass,
rocket: 192² centre crops in [0, 1]; two unseen draws of the 3-D sample volume with its
anisotropic voxels) with Gaussian noise σ = 0.05, 0.1, 0.2, and on photon counts (peak 30):

* the **oracle** β maximises the PSNR against the clean image over 32 log-spaced values
  (warm-started along β);
* each rule's β (``suggest_beta``), its **PSNR loss** against the oracle (dB) and its time
  (seconds, kernels warm);
* scikit-image's ``calibrate_denoiser`` (J-invariant, its default stride 4) choosing the
  ``weight`` of its own ``denoise_tv_chambolle`` among 16 values around the same range, its
  loss and time, side by side.

Run: ``python benchmarks/bench_beta.py [--quick]``.  Speed is never asserted in the tests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

os.environ.setdefault("NAPARI_TV_KERNELS", "fast")

from napari_tv import denoise_tv, microscopy_3d  # noqa: E402
from napari_tv._sample_data import SAMPLE_3D_SCALE  # noqa: E402
from napari_tv.beta_choice import suggest_beta  # noqa: E402
from napari_tv.sweep import BetaSweep  # noqa: E402

IMAGES = ("astronaut", "brick", "chelsea", "coffee", "grass", "rocket")
SIGMAS = (0.05, 0.1, 0.2)


def _psnr(x, u, peak):
    return 10 * np.log10(peak**2 / float(np.mean((np.asarray(u, float) - x) ** 2)))


def _images():
    from skimage import color, data

    out = []
    for name in IMAGES:
        img = getattr(data, name)()
        if img.ndim == 3:
            img = color.rgb2gray(img)
        img = img.astype(np.float64)
        img = img / img.max() if img.max() > 1.5 else img
        cy, cx = img.shape[0] // 2, img.shape[1] // 2
        out.append((name, img[cy - 96 : cy + 96, cx - 96 : cx + 96]))
    return out


def _oracle(noisy, clean, peak, lo, hi, **kw):
    sweep = BetaSweep(noisy, tol=1e-4, **kw)
    betas = np.geomspace(lo, hi, 32)
    scores = [_psnr(clean, sweep.solve(b).u, peak) for b in betas]
    k = int(np.argmax(scores))
    return float(betas[k]), float(scores[k])


def _rules(noisy, clean, peak, rules, **kw):
    row = {}
    for rule in rules:
        t = time.perf_counter()
        beta = suggest_beta(noisy, rule=rule, **kw)
        dt = time.perf_counter() - t
        solve_kw = {k: v for k, v in kw.items() if k in ("fidelity", "spacing")}
        row[rule] = (beta, _psnr(clean, denoise_tv(noisy, beta, **solve_kw), peak), dt)
    return row


def _record(row, best, losses, times) -> list[str]:
    """Each rule's cell (β, loss against the oracle's PSNR ``best``, time); the loss and time
    also go to the summary."""
    cells = []
    for rule, (beta, p, dt) in row.items():
        losses[rule].append(best - p)
        times[rule].append(dt)
        cells.append(f"{beta:.3g}, {best - p:.2f}, {dt:.2f}")
    return cells


def _calibrate(noisy, clean, weights):
    from skimage.restoration import calibrate_denoiser, denoise_tv_chambolle

    t = time.perf_counter()
    best = calibrate_denoiser(noisy, denoise_tv_chambolle, {"weight": list(weights)})
    dt = time.perf_counter() - t
    weight = best.keywords["denoiser_kwargs"]["weight"]  # then used on the whole image
    return weight, _psnr(clean, denoise_tv_chambolle(noisy, weight=weight), 1.0), dt


def gaussian(quick: bool) -> dict:
    print("## Gaussian noise, L2 (192² crops; β, PSNR loss against the oracle β [dB], time [s])\n")
    rules = ("sure", "jinv", "discrepancy")
    head = "| image | σ | oracle β | PSNR | " + " | ".join(rules)
    head += " | skimage calibrate_denoiser |"
    print(head)
    print("|---|---:|---:|---:|" + "---|" * (len(rules) + 1))
    losses = {r: [] for r in (*rules, "calibrate")}
    times = {r: [] for r in (*rules, "calibrate")}
    rng = np.random.default_rng(2026)
    images = _images()[:2] if quick else _images()
    for name, clean in images:
        for sigma in SIGMAS:
            noisy = clean + sigma * rng.standard_normal(clean.shape)
            beta_o, best = _oracle(noisy, clean, 1.0, 0.1 * sigma, 8 * sigma)
            row = _rules(noisy, clean, 1.0, rules)
            cells = _record(row, best, losses, times)
            if not quick:
                w, p, dt = _calibrate(noisy, clean, np.geomspace(0.1 * sigma, 8 * sigma, 16))
                losses["calibrate"].append(best - p)
                times["calibrate"].append(dt)
                cells.append(f"{w:.3g}, {best - p:.2f}, {dt:.2f}")
            else:
                cells.append("-")
            print(f"| {name} | {sigma} | {beta_o:.3g} | {best:.2f} | " + " | ".join(cells) + " |",
                  flush=True)
    return {"losses": losses, "times": times}


def poisson(quick: bool) -> dict:
    print("\n## Photon counts (peak 30), Poisson fidelity (β, PSNR loss [dB], time [s])\n")
    rules = ("pure", "jinv")
    print("| image | oracle β | PSNR | " + " | ".join(rules) + " |")
    print("|---|---:|---:|" + "---|" * len(rules))
    losses = {r: [] for r in rules}
    times = {r: [] for r in rules}
    rng = np.random.default_rng(30)
    images = _images()[:2] if quick else _images()
    for name, clean01 in images:
        clean = 30.0 * clean01
        counts = rng.poisson(clean).astype(np.float64)
        beta_o, best = _oracle(counts, clean, 30.0, 0.02, 3.0, fidelity="poisson")
        row = _rules(counts, clean, 30.0, rules, fidelity="poisson")
        cells = _record(row, best, losses, times)
        print(f"| {name} | {beta_o:.3g} | {best:.2f} | " + " | ".join(cells) + " |", flush=True)
    return {"losses": losses, "times": times}


def volumes(quick: bool) -> dict:
    print("\n## 3-D volumes with anisotropic voxels (2 × 0.5 × 0.5), L2 (unseen draws of the "
          "sample; its noise is Poisson + read noise)\n")
    print("| volume | oracle β | PSNR | sure | jinv |")
    print("|---|---:|---:|---|---|")
    losses = {"sure": [], "jinv": []}
    times = {"sure": [], "jinv": []}
    for seed in (11,) if quick else (11, 12):
        noisy, clean = microscopy_3d(shape=(24, 128, 128), seed=seed)
        peak = float(clean.max())
        beta_o, best = _oracle(noisy, clean, peak, 0.05, 10.0, spacing=SAMPLE_3D_SCALE)
        row = _rules(noisy, clean, peak, ("sure", "jinv"), spacing=SAMPLE_3D_SCALE)
        cells = _record(row, best, losses, times)
        print(f"| sample, seed {seed} | {beta_o:.3g} | {best:.2f} | " + " | ".join(cells) + " |",
              flush=True)
    return {"losses": losses, "times": times}


def _summary(title, result):
    print(f"\n**{title}**: mean / worst PSNR loss [dB], median time [s]:")
    for rule, values in result["losses"].items():
        if values:
            print(f"- {rule}: {statistics.mean(values):.2f} / {max(values):.2f} dB, "
                  f"{statistics.median(result['times'][rule]):.2f} s")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two images, no scikit-image")
    args = parser.parse_args(argv)
    # compile once (not timed)
    suggest_beta(np.random.default_rng(0).random((32, 32)))
    g = gaussian(args.quick)
    p = poisson(args.quick)
    v = volumes(args.quick)
    _summary("Gaussian", g)
    _summary("Poisson, peak 30", p)
    _summary("3-D", v)


if __name__ == "__main__":
    main()
