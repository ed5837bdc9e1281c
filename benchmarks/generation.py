"""Quality against network evaluations (NFE) for the generators: EDM Heun, the reverse SDE, DLG, pyramidal and
blur diffusion (and a WSGM if given), on the CT data at 128², in one run on one machine.

Each row draws ``--n`` images with one seed and scores them against the 128 training slices, the distribution
every model was trained to sample (against the test patient's 30 slices even the training slices themselves score
1-NNA 100 %: the features tell the two patients apart), with ``wavepatch eval-samples``'s figures: sliced
Wasserstein distance of Laplacian-pyramid patches, HU-histogram W1,
log-spectrum error, 1-NNA in a fixed feature space; 50 % = indistinguishable) and times them (seconds per image,
same threads, sampled one row after another). "ddim (fine-tuned)" is the blur sampler with no blur on the
fine-tuned EDM prior (plain DDIM): it separates what the blur does from what the step rule does. NFE targets
10 / 20 / 50 / 100 are met as closely as each sampler's
step rule allows; the NFE column is the actual count per image (DLG: its chains' calls shared by their outputs;
pyramidal: calls at every resolution, with the pixel-weighted count beside it).

Run (2-core CPU, nothing else running; the checkpoints are the CPU fine-tunes of docs/results.md §19):
    python benchmarks/generation.py --whole-ft runs/gen/edmft128/prior.safetensors \\
        --blur runs/gen/blur128/prior.safetensors --pyramidal runs/gen/pyr128/prior.safetensors \\
        --patch-ft runs/gen/patchft128/prior.safetensors --classifier runs/gen/noise128/prior.safetensors
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch

from wavepatch.io import SliceDataset, save_png
from wavepatch.metrics.generation import generation_report
from wavepatch.prior.blur import BlurConfig, BlurDiffusion
from wavepatch.prior.checkpoint import load_blur_prior, load_noise_classifier, load_prior, load_wavelet_prior
from wavepatch.prior.model import make_denoiser
from wavepatch.resources import prior_path
from wavepatch.sampling.blur import blur_sample
from wavepatch.sampling.dlg import dlg_sample
from wavepatch.sampling.pyramidal import patch_grid_pixels, pyramidal_sample
from wavepatch.sampling.unconditional import sample
from wavepatch.sampling.wsgm import wsgm_sample

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "ct"
WINDOW = (-1000.0, 1000.0)
# DLG settings per NFE target: (gibbs sweeps, finish levels); 4 outputs per chain, 6 start levels
DLG_PLAN = {10: (1, 4), 20: (2, 8), 50: (4, 22), 100: (6, 46)}


def _grid(imgs: np.ndarray, cols: int = 6) -> np.ndarray:
    k, n, _ = imgs.shape
    rows = -(-k // cols)
    out = np.ones((rows * (n + 2) - 2, cols * (n + 2) - 2), np.float32)
    for i, img in enumerate(imgs):
        r, c = divmod(i, cols)
        out[r * (n + 2):r * (n + 2) + n, c * (n + 2):c * (n + 2) + n] = img
    return out


# row name, and the option that must be given for it (None: always)
ROWS = (("heun (bundled)", None), ("sde (bundled)", None), ("dlg (bundled)", "classifier"),
        ("heun (fine-tuned)", "whole_ft"), ("blur", "blur"), ("ddim (fine-tuned)", "whole_ft"),
        ("patch heun (fine-tuned)", "patch_ft"), ("pyramidal", "pyramidal"), ("wsgm", "wsgm"))


def _rows_for(args) -> list[tuple[str, int]]:
    rows = [("heun (bundled)", 63)] + [(name, t) for t in args.nfe for name, need in ROWS
                                       if need is None or getattr(args, need)]
    return [r for r in rows if not args.only or any(o in r[0] for o in args.only)]


def _generate(name: str, target: int, args, models: dict, gen: torch.Generator) -> tuple[np.ndarray, dict]:
    """(images (n, N, N) in [0, 1], info with nfe and extra figures) for one row."""
    n, size = args.n, args.size
    info: dict = {}
    if name.startswith("heun") or name.startswith("sde") or name.startswith("patch heun"):
        key = "whole_ft" if "fine-tuned" in name and "patch" not in name else (
            "patch_ft" if "patch" in name else "whole")
        model, cfg = models[key]
        denoise = make_denoiser(model, cfg, generator=gen, precision=args.precision)
        sampler = "euler" if name.startswith("sde") else "heun"
        levels = target if sampler == "euler" else (target + 1) // 2  # Heun: 2 levels - 1 calls
        x, nfe = sample(denoise, (n, 1, size, size), sampler, levels, generator=gen)
        info["nfe"] = nfe
    elif name.startswith("dlg"):
        model, cfg = models["whole"]
        classifier = models["classifier"]
        denoise = make_denoiser(model, cfg, generator=gen, precision=args.precision)
        gibbs, finish = DLG_PLAN[target]
        x, extra = dlg_sample(denoise, lambda v: classifier.estimate(v, "mean"), n, (1, size, size),
                              chains=max(1, n // 4), gibbs=gibbs, finish_levels=finish, init_levels=6,
                              sigma_chain=args.sigma_chain, generator=gen)
        info.update(nfe=extra["nfe_per_image"], finish_sigma=extra["finish_sigma"]["mean"])
    elif name == "blur" or name.startswith("ddim"):
        net = models["blur"][0] if name == "blur" else _without_blur(*models["whole_ft"])
        x, nfe = blur_sample(net, n, steps=target, generator=gen, precision=args.precision)
        info["nfe"] = nfe
    elif name == "pyramidal":
        model, cfg = models["pyramidal"]
        denoise = make_denoiser(model, cfg, generator=gen, precision=args.precision)
        x, extra = pyramidal_sample(denoise, n, size, cfg.pyramid, (target + 3) // 2,  # split_steps' minimums
                                    sigma_restart=args.sigma_restart, generator=gen,
                                    pixels=patch_grid_pixels(cfg.patch_size))
        info.update(nfe=extra["nfe"], nfe_pixel_weighted=extra["nfe_pixel_weighted"])
    else:  # wsgm: about target NFE in all, shared equally by its J + 1 scales
        model, cfg = models["wsgm"]
        per_scale = max(2, round((target / (cfg.levels + 1) + 1) / 2))
        x, extra = wsgm_sample(model, n, size, "heun", per_scale, sigma_max=20.0, generator=gen)
        info.update(nfe=extra["nfe"], nfe_pixel_weighted=extra["nfe_pixel_weighted"])
    return x[:, 0].float().clamp(0, 1).numpy(), info


def _without_blur(model, cfg) -> BlurDiffusion:
    """The whole-image prior's network under the blur sampler with no blur (blur_max 0: every DCT gain 1), i.e.
    plain DDIM (eta 0) on the EDM prior: the control that separates the blur from the sampler's step rule."""
    plain = BlurDiffusion(BlurConfig(unet=cfg.unet, sigma_data=cfg.sigma_data, image_size=cfg.image_size,
                                     blur_max=0.0, window=cfg.window, modality=cfg.modality))
    plain.load_state_dict(model.state_dict())
    return plain.eval()


def _load_models(args) -> dict:
    models = {"whole": load_prior(args.whole or prior_path("ct_whole128"), expect_kind="whole")}
    if args.whole_ft:
        models["whole_ft"] = load_prior(args.whole_ft, expect_kind="whole")
    if args.patch_ft:
        models["patch_ft"] = load_prior(args.patch_ft, expect_kind="patch")
    if args.pyramidal:
        models["pyramidal"] = load_prior(args.pyramidal, expect_kind="patch")
    if args.blur:
        models["blur"] = load_blur_prior(args.blur)
    if args.classifier:
        models["classifier"] = load_noise_classifier(args.classifier)[0]
    if args.wsgm:
        models["wsgm"] = load_wavelet_prior(args.wsgm)
    return models


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--whole", default=None, help="whole-image prior (default: the bundled ct_whole128)")
    ap.add_argument("--whole-ft", default=None, help="the same prior after the CPU fine-tuning (control)")
    ap.add_argument("--patch-ft", default=None, help="the bundled patch prior after the same fine-tuning (control)")
    ap.add_argument("--pyramidal", default=None, help="pyramidal prior")
    ap.add_argument("--blur", default=None, help="blur-diffusion prior")
    ap.add_argument("--classifier", default=None, help="noise-level classifier (DLG rows)")
    ap.add_argument("--wsgm", default=None, help="wavelet (WSGM) prior")
    ap.add_argument("--nfe", type=int, nargs="+", default=[10, 20, 50, 100])
    ap.add_argument("--only", nargs="+", default=None, help="rows whose name contains one of these")
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--sigma-chain", type=float, default=1.0)
    ap.add_argument("--sigma-restart", type=float, default=0.3)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "generation"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    real = SliceDataset([DATA / "train"], size=args.size, window=WINDOW).images[:, 0].numpy()
    other = SliceDataset([DATA / "test"], size=args.size, window=WINDOW).images[:, 0].numpy()
    models = _load_models(args)
    rows = []
    header = ("| sampler | NFE target | NFE / image | pixel-weighted NFE | s / image | SWD ×1e3 | hist. W1 (HU) "
              "| log10 spectrum err. | 1-NNA |")
    print(header + "\n|" + "---|" * 9, flush=True)
    for name, target in _rows_for(args):
        gen = torch.Generator().manual_seed(args.seed)
        t0 = time.perf_counter()
        imgs, info = _generate(name, target, args, models, gen)
        seconds = (time.perf_counter() - t0) / args.n
        rep = generation_report(imgs, real, WINDOW, seed=args.seed)["generated"]
        row = {"sampler": name, "target": target, **info, "seconds_per_image": seconds,
               "swd_mean": rep["swd_mean"], "histogram_w1": rep["histogram_w1"],
               "spectrum_log10_error": rep["spectrum_log10_error"], "nna_features": rep["nna_features"]}
        rows.append(row)
        pw = row.get("nfe_pixel_weighted")
        print(f"| {name} | {target} | {row['nfe']:g} | {'' if pw is None else f'{pw:.1f}'} | {seconds:.2f} "
              f"| {row['swd_mean']:.1f} | {row['histogram_w1']:.0f} | {row['spectrum_log10_error']:.3f} "
              f"| {100 * row['nna_features']:.1f} % |", flush=True)
        if target == 20 or (name.startswith("heun (bundled)") and target == 63):
            save_png(out / f"{name.split()[0]}_{name.split('(')[-1].rstrip(')').replace(' ', '_')}_{target}.png",
                     _grid(imgs[:12]))
        with open(out / "rows.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=sorted({k for r in rows for k in r}))
            w.writeheader()
            w.writerows(rows)
    ref = generation_report(other[: args.n], real, WINDOW, seed=args.seed)
    summary = {"rows": rows, "test_patient": ref["generated"], "baseline": ref["baseline"],
               "n": args.n, "real": "training slices", "real_count": len(real), "args": vars(args)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    t, b = ref["generated"], ref["baseline"]
    for label, r in (("test patient's slices (real, another patient)", t), ("spectral-noise baseline", b)):
        print(f"| {label} | – | – | – | – | {r['swd_mean']:.1f} | {r['histogram_w1']:.0f} | "
              f"{r['spectrum_log10_error']:.3f} | {100 * r['nna_features']:.1f} % |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
