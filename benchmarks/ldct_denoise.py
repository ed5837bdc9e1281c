"""Low-dose CT denoising without CT-number shift (issue 22): every method on the same simulated scans.

For each dose I0 (photons per detector bin) and each of ``--slices`` evenly spaced slices of the test patient
(256^2, 180-view parallel beam, Poisson counts: the ``ct-lowdose`` task), one measurement is simulated and
reconstructed by: FBP (Hann), BM3D on the FBP image (the ``bm3d`` package; sigma = c x the wavelet-MAD noise
estimate of the FBP image, c chosen on training slices with ``--tune-bm3d``), ADMM-TV (the task's default), PaDIS
fast with the bundled patch prior, and the low-dose translators given with ``--translator NAME=CKPT``
(ldct-metric: unsupervised with the metric loss; ldct-gan: the same without it; ldct-supervised: trained on pairs)
and optionally the score prior trained on noisy data (``--noisy-prior CKPT``, Wu et al.: DPS-free
``wavelet-langevin`` reconstruction, see docs/results.md section 9).

Figures per method: PSNR / SSIM (unit scale, HU window [-1000, 1000]), the mean over tissue ROIs of |mean HU error|
and of the error std (wavepatch.metrics.hu: lung, fat, soft tissue, bone by thresholds on the reference), and the
HU-histogram W1 distance inside the body, and the error's noise power spectrum (nps.png). Resumable: the results
file of the run's dose set is rewritten after each reconstruction; the table (results.md), the figure
(``--figure``, default examples.png: give another name to keep a published one) and nps.png are made from every
results_*.json in --out, so doses can run in parallel processes.

    python benchmarks/ldct_denoise.py --tune-bm3d                      # BM3D's c on 4 training slices
    python benchmarks/ldct_denoise.py --translator ldct-metric=RUN1/ldct.safetensors ... --out DIR
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from wavepatch.bench import load_slices
from wavepatch.io import unit_to_hu
from wavepatch.io.atomic import atomic_write_bytes
from wavepatch.metrics import image_metrics
from wavepatch.metrics.hu import TISSUES, hu_metrics, tissue_rois
from wavepatch.run import simulate_measurement, solve
from wavepatch.tasks import TaskOptions

DOSES = (1e4, 2.5e3)
NORMAL_DOSE = 2e5  # the normal-dose reference: FBP of the same slice at this I0 (as ldct_data's normal-dose images)
PUBLISHED = Path("benchmarks/results/ldct")  # the published run; its bm3d_tuning.json serves other --out folders
BM3D_C_GRID = (4.0, 8.0, 12.0, 16.0, 24.0, 32.0)


def bm3d_denoise(fbp: np.ndarray, c: float) -> np.ndarray:
    """BM3D (white-noise profile) of an FBP image (H, W) with sigma = c x its wavelet-MAD noise estimate."""
    import bm3d
    from skimage.restoration import estimate_sigma

    sigma = c * float(estimate_sigma(fbp))
    return np.asarray(bm3d.bm3d(fbp.astype(np.float64), sigma_psd=max(sigma, 1e-6)), np.float32)


def figures(recon: np.ndarray, truth: np.ndarray, normal: np.ndarray | None = None) -> dict:
    """PSNR / SSIM and CT-number figures of ``recon`` against the clean slice ``truth``; with ``normal`` (the
    normal-dose FBP image of the same slice) also the ROI bias against it ('_nd' keys), in the ROIs of ``truth``."""
    t = torch.from_numpy(truth)[None, None]
    r = torch.from_numpy(np.asarray(recon, np.float32))[None, None]
    m = image_metrics(r, t)
    rec_hu = unit_to_hu(np.clip(recon, 0, 1))
    hu = hu_metrics(rec_hu, unit_to_hu(truth))
    out = {"psnr": m["psnr"], "ssim": m["ssim"], "roi_bias_hu": hu["roi_mean_abs_error_hu"],
           "roi_noise_hu": hu["roi_noise_std_hu"], "w1_hu": hu["histogram_w1_hu"],
           "rois": {k: v["mean_error_hu"] for k, v in hu["rois"].items() if v["pixels"] >= 50},
           "nps_f": hu["nps_frequency_cycles_per_px"], "nps": hu["nps_hu2"]}
    if normal is not None:
        nd_hu = unit_to_hu(np.clip(normal, 0, 1))
        rois = {k: v for k, v in tissue_rois(unit_to_hu(truth)).items() if v.sum() >= 50}
        bias = {k: float((rec_hu - nd_hu)[v].mean()) for k, v in rois.items()}
        out.update({"rois_nd": bias, "roi_bias_nd_hu": float(np.mean([abs(b) for b in bias.values()]))})
    return out


def run_method(name: str, spec: str | None, task, y, x, fbp: np.ndarray, bm3d_c: float) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    if name == "fbp":
        rec = fbp
    elif name == "bm3d":
        rec = bm3d_denoise(fbp, bm3d_c)
    elif name == "admm-tv":
        rec = solve(task, y, "admm-tv", truth=x).recon[0, 0].numpy()
    elif name == "padis-fast":
        rec = solve(task, y, "padis", fast=True, truth=x).recon[0, 0].numpy()
    elif name == "noisy-prior":
        rec = solve(task, y, "wavelet-langevin", prior=spec, truth=x).recon[0, 0].numpy()
    else:  # a translator checkpoint, optionally with ",guard=W"
        path, *params = spec.split(",")
        overrides = dict(p.split("=", 1) for p in params)
        rec = solve(task, y, "ldct-metric", overrides, prior=path, truth=x).recon[0, 0].numpy()
    return rec, time.perf_counter() - t0


def tune_bm3d(data: list[str], slices: int) -> dict:
    """Mean PSNR of BM3D for each c of BM3D_C_GRID on ``slices`` training slices at both doses."""
    imgs = load_slices(data, 256)
    picks = [imgs[i] for i in np.linspace(8, len(imgs) - 9, slices).round().astype(int)]
    table = {}
    for c in BM3D_C_GRID:
        scores = []
        for dose in DOSES:
            for k, (_, img) in enumerate(picks):
                task, x, y = simulate_measurement(img, "ct-lowdose", TaskOptions(dose=dose), seed=100 + k)
                fbp = task.baseline(y)[0, 0].numpy()
                scores.append(figures(bm3d_denoise(fbp, c), img)["psnr"])
        table[c] = float(np.mean(scores))
        print(f"bm3d c={c:g}: mean PSNR {table[c]:.2f} dB over {len(scores)} training scans")
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/ct/test", help="test slices (folder of one DICOM series)")
    ap.add_argument("--train-data", nargs="+", default=None,
                    help="--tune-bm3d: training slices (default: the B series of ../shared/data/ct/train)")
    ap.add_argument("--slices", type=int, default=10)
    ap.add_argument("--doses", type=float, nargs="+", default=list(DOSES))
    ap.add_argument("--methods", nargs="+", default=["fbp", "bm3d", "admm-tv", "padis-fast"])
    ap.add_argument("--translator", action="append", default=[],
                    help="NAME=CKPT[,guard=W], repeatable (the guard's default is the method's: 1 px)")
    ap.add_argument("--noisy-prior", default=None, help="a score prior trained on noisy scans (section 9)")
    ap.add_argument("--bm3d-c", type=float, default=None, help="BM3D sigma factor (default: from --tune-bm3d)")
    ap.add_argument("--tune-bm3d", action="store_true")
    ap.add_argument("--out", default=str(PUBLISHED))
    ap.add_argument("--figure", default="examples.png",
                    help="file name (in --out) of the middle-slice figure; another name keeps an existing figure")
    ap.add_argument("--figure-methods", nargs="+", default=None,
                    help="the figure's columns (default: every method in --out's results)")
    args = ap.parse_args()
    if Path(args.figure).name != args.figure or not args.figure.endswith(".png"):
        ap.error(f"--figure is a .png file name inside --out, got {args.figure!r}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.tune_bm3d:
        train = args.train_data or sorted(str(p) for p in Path("../shared/data/ct/train").glob("A0001_B_*.dcm"))
        table = tune_bm3d(train, 4)
        best = max(table, key=table.get)
        atomic_write_bytes(out / "bm3d_tuning.json", json.dumps({"c_grid": table, "best_c": best}, indent=2).encode())
        print(f"best c = {best:g}")
        return
    c = args.bm3d_c
    if c is None and "bm3d" in args.methods:
        tuned = [f for f in (out / "bm3d_tuning.json", PUBLISHED / "bm3d_tuning.json") if f.exists()]
        if not tuned:
            ap.error("BM3D needs its sigma factor: run --tune-bm3d first, or give --bm3d-c")
        c = json.loads(tuned[0].read_text())["best_c"]
        print(f"BM3D sigma factor c = {c:g} (from {tuned[0]})")
    specs = {m: None for m in args.methods}
    for item in args.translator:
        name, _, path = item.partition("=")
        specs[name] = path
    if args.noisy_prior:
        specs["noisy-prior"] = args.noisy_prior
    imgs = load_slices(args.data, 256)
    picks = np.linspace(0, len(imgs) - 1, args.slices).round().astype(int)
    path = out / f"results_{'_'.join(f'{d:g}' for d in args.doses)}.json"  # one file per dose set: runs in parallel
    results = json.loads(path.read_text()) if path.exists() else {}
    examples, recons = out / "examples", out / "recons"  # recons/: every reconstruction (not committed)
    examples.mkdir(exist_ok=True)
    recons.mkdir(exist_ok=True)
    middle = picks[len(picks) // 2]
    for dose in args.doses:
        for k in picks:
            name, img = imgs[k]
            task, x, y = simulate_measurement(img, "ct-lowdose", TaskOptions(dose=dose), seed=int(k))
            fbp = task.baseline(y)[0, 0].numpy()
            t_nd, _, y_nd = simulate_measurement(img, "ct-lowdose", TaskOptions(dose=NORMAL_DOSE), seed=1000 + int(k))
            normal = t_nd.baseline(y_nd)[0, 0].numpy()
            for method, spec in specs.items():
                key = f"{dose:g}|{name}|{method}"
                if key in results:
                    continue
                rec, sec = run_method(method, spec, task, y, x, fbp, c)
                np.save(recons / f"{dose:g}_{k}_{method}.npy", rec.astype(np.float32))
                results[key] = {**figures(rec, img, normal), "seconds": sec, "dose": dose, "slice": name,
                                "method": method, "checkpoint": spec, **({"bm3d_c": c} if method == "bm3d" else {})}
                if k == middle:
                    np.save(examples / f"{dose:g}_{method}.npy", rec.astype(np.float32))
                    np.save(examples / f"{dose:g}_truth.npy", img.astype(np.float32))
                print(f"I0={dose:g} {name} {method}: {results[key]['psnr']:.2f} dB, ROI bias "
                      f"{results[key]['roi_bias_hu']:.1f} HU (vs normal dose {results[key]['roi_bias_nd_hu']:.1f}),"
                      f" noise {results[key]['roi_noise_hu']:.1f} HU, {sec:.1f} s", flush=True)
                atomic_write_bytes(path, json.dumps(results, indent=1).encode())
    results = {k: v for f in sorted(out.glob("results_*.json")) for k, v in json.loads(f.read_text()).items()}
    doses = sorted({r["dose"] for r in results.values()}, reverse=True)
    methods = list(dict.fromkeys([*specs, *(r["method"] for r in results.values())]))
    write_table(results, methods, doses, out)
    write_figure(examples, args.figure_methods or methods, doses, out / args.figure)
    write_nps(results, methods, doses, out / "nps.png")


def write_table(results: dict, methods: list[str], doses: list[float], out: Path) -> None:
    lines = ["| I0 | method | PSNR (dB) | SSIM | ROI mean abs HU error vs truth | vs normal-dose FBP | "
             "ROI error std (HU) | HU hist. W1 | s/slice |", "|---|---|---|---|---|---|---|---|---|"]
    for dose in doses:
        for m in methods:
            rows = [r for r in results.values() if r["dose"] == dose and r["method"] == m]
            if not rows:
                continue

            def mean(key, rows=rows):
                return float(np.mean([r[key] for r in rows]))

            lines.append(f"| {dose:g} | {m} | {mean('psnr'):.2f} ± {np.std([r['psnr'] for r in rows]):.2f} | "
                         f"{mean('ssim'):.4f} | {mean('roi_bias_hu'):.1f} | {mean('roi_bias_nd_hu'):.1f} | "
                         f"{mean('roi_noise_hu'):.1f} | "
                         f"{mean('w1_hu'):.1f} | {mean('seconds'):.1f} |")
    tissues = tuple(TISSUES)
    per = ["| I0 | method | " + " | ".join(f"{t} bias (HU)" for t in tissues) + " | mean abs over tissues |",
           "|---|---|" + "---|" * 5]
    for dose in doses:
        for m in methods:
            rows = [r for r in results.values() if r["dose"] == dose and r["method"] == m]
            if rows:
                means = {t: [r["rois"][t] for r in rows if t in r["rois"]] for t in tissues}
                cells = [f"{np.mean(v):+.1f} ({len(v)})" if v else "–" for v in means.values()]
                shift = np.mean([abs(np.mean(v)) for v in means.values() if v])
                per.append(f"| {dose:g} | {m} | " + " | ".join(cells) + f" | {shift:.1f} |")
    n = len({r["slice"] for r in results.values()})
    cs = sorted({r["bm3d_c"] for r in results.values() if r["method"] == "bm3d"})
    bm3d = f"; BM3D sigma factor c = {', '.join(f'{c:g}' for c in cs)}" if cs else ""
    text = (f"{n} test slices, 256^2, 180-view parallel beam, Poisson counts{bm3d}\n\n"
            + "\n".join(lines) + "\n\nMean signed error per tissue against the truth, HU (slices where the "
            "region has >= 50 pixels), and the mean over tissues of its absolute value: the systematic shift, "
            "where the ROI mean abs error above takes |.| per slice and so also counts each slice's noise\n\n"
            + "\n".join(per) + "\n")
    atomic_write_bytes(out / "results.md", text.encode())
    print(text)


def write_nps(results: dict, methods: list[str], doses: list[float], path: Path) -> None:
    """Radially averaged noise power spectrum of the error (HU^2 px^2), mean over slices, one panel per dose."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(doses), figsize=(5 * len(doses), 3.6), squeeze=False)
    for ax, dose in zip(axes[0], doses, strict=True):
        colours = plt.get_cmap("tab20")
        for k, m in enumerate(methods):
            rows = [r for r in results.values() if r["dose"] == dose and r["method"] == m and "nps" in r]
            if rows:  # 20 distinct colours, and a second line style past 10 methods
                ax.semilogy(rows[0]["nps_f"], np.mean([r["nps"] for r in rows], axis=0), label=m,
                            color=colours(k % 20), ls="-" if k < 10 else "--")
        ax.set_xlabel("frequency (cycles / pixel)")
        ax.set_ylabel("NPS of the error (HU² px²)")
        ax.set_title(f"I0 = {dose:g}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_figure(folder: Path, methods: list[str], doses: list[float], path: Path) -> None:
    """The middle test slice at every dose: truth and each method (saved .npy files in ``folder``)."""
    examples = {(d, m): np.load(folder / f"{d:g}_{m}.npy") for d in doses for m in ["truth", *methods]
                if (folder / f"{d:g}_{m}.npy").exists()}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from wavepatch.io import window_for_display

    cols = ["truth", *[m for m in methods if (doses[0], m) in examples]]
    fig, axes = plt.subplots(len(doses), len(cols), figsize=(2.4 * len(cols), 2.6 * len(doses)), squeeze=False)
    for i, dose in enumerate(doses):
        for j, m in enumerate(cols):
            ax = axes[i, j]
            if (dose, m) in examples:
                ax.imshow(window_for_display(unit_to_hu(np.clip(examples[(dose, m)], 0, 1))), cmap="gray")
            ax.set_title(f"{m}" + (f"\nI0={dose:g}" if j == 0 else ""), fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
