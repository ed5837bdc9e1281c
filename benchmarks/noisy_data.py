"""Score priors trained on noisy scans (Wu et al.'s wavelet-improved score model): does the wavelet sub-network help?

    python benchmarks/noisy_data.py --size 128 --minutes 6 --slices 4          # 2-core CPU, about an hour
    python benchmarks/noisy_data.py --size 64 --minutes 0.2 --slices 1 --out /tmp/nd --work /tmp/nd/runs  # smoke

Per modality, three whole-image priors of the same architecture, each trained for ``--minutes`` by the project's
training loop (:func:`wavepatch.prior.train.train`, what ``wavepatch train`` runs):
  clean            on the clean training slices (the upper bound);
  noisy            on one simulated noisy scan per slice (``--noisy-data``), nothing else;
  noisy + wavelet  on the same noisy scans, jointly with the wavelet denoising sub-network (``--wavelet-denoiser``).
(``--ablation`` adds "noisy + wavelet, no feedback": the sub-network trained by its self-supervised loss alone.)
The variants with the sub-network train for as many steps as 'noisy' reached in its ``--minutes`` (the same
score-model training; a joint step costs about 1.5x, one more U-Net forward for the feedback target), so the
comparison isolates what the cleaned data does; ``--equal-time`` gives them ``--minutes`` instead.
CT trains on ../shared/data/ct/train (patient A0001) with low-dose CT noise inserted at I0 = ``--train-dose``;
MRI on the axial planes of the ../shared/data/mri template outside z = 70..120, with white Gaussian noise of std
``--mri-noise`` (a magnitude image at high SNR; k-space is simulated by FFT, it is not raw k-space).

Every prior then reconstructs the same test slices with the same sampler (default
:func:`wavepatch.sampling.wavelet_regularized.wavelet_regularized_langevin`; ``--sampler langevin`` for the
project's annealed Langevin): low-dose CT (I0 1e4, 180 views) and 20-view parallel-beam CT on
../shared/data/ct/test (patient A0002), x4 Gaussian-mask MRI on data/mri (the planes z = 82..106). Seeds as
``wavepatch reconstruct``: task 0, measurement noise 1, sampler 2. Writes results.md / results.json / grid.png to
``--out`` and the runs to ``--work``; ``--reuse`` skips training where a run already has its prior.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from wavepatch.io import SliceDataset, save_npy
from wavepatch.io.atomic import atomic_path, atomic_write_bytes
from wavepatch.io.readers import read_image
from wavepatch.io.transforms import normalize_volume, resize_square
from wavepatch.metrics import image_metrics
from wavepatch.prior.checkpoint import load_prior
from wavepatch.prior.model import make_denoiser
from wavepatch.prior.noisy_data import noise_report, noise_sampler, noisy_training_set
from wavepatch.prior.noisy_training import clean_scans
from wavepatch.prior.train import resolve_device, train
from wavepatch.prior.train_config import TrainConfig
from wavepatch.prior.wavelet_denoiser import WaveletDenoiser
from wavepatch.sampling.posterior import langevin
from wavepatch.sampling.unconditional import geometric_sigmas
from wavepatch.sampling.wavelet_regularized import wavelet_regularized_langevin
from wavepatch.tasks import TaskOptions, make_task

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
CT_WINDOW = (-1000.0, 1000.0)
# (label, task, options, modality)
TASKS = [("ct-lowdose I0=1e4", "ct-lowdose", {"dose": 1e4}, "ct"),
         ("ct-parallel 20 views", "ct-parallel", {"views": 20}, "ct"),
         ("mri x4 gaussian", "mri", {"accel": 4.0, "mask": "gaussian"}, "mri")]
SAMPLERS = ("wavelet-langevin", "langevin")


def variants(ablation: bool) -> list[tuple[str, dict]]:
    """(label, TrainConfig overrides beyond the noise) per prior; 'noisy' marks training on the noisy scans."""
    out = [("clean", {}), ("noisy", {"noisy": True}), ("noisy + wavelet", {"noisy": True, "wavelet_denoiser": True})]
    if ablation:
        out.append(("noisy + wavelet, no feedback", {"noisy": True, "wavelet_denoiser": True, "feedback": 0.0}))
    return out


def mri_training_stack(volume: Path, out: Path, size: int, exclude: tuple[int, int] = (70, 120)) -> Path:
    """Axial planes of the MRI template holding brain, outside ``exclude`` (the evaluation planes), min-max
    normalised over the volume and resized, as scripts/export_training_slices.py does -> .npy in [0, 1]."""
    if out.exists():
        return out
    unit, _ = normalize_volume(read_image(volume, axis=2), None)
    z = np.arange(unit.shape[0])
    keep = (unit.reshape(unit.shape[0], -1).mean(axis=1) > 0.05) & ((z < exclude[0]) | (z > exclude[1]))
    save_npy(out, resize_square(unit[keep], size).astype(np.float32))
    return out


def train_priors(modality: str, data: Path, args, device: str) -> dict[str, dict]:
    """Train (or reuse) every variant for one modality -> {label: {'prior': path, 'info': checkpoint info}}."""
    window, kind, level = ((CT_WINDOW, "lowdose", args.train_dose) if modality == "ct"
                           else ((0.0, 1.0), "gaussian", args.mri_noise))
    out = {}
    for label, over in variants(args.ablation):
        run = Path(args.work) / f"{modality}_{label.replace(' + ', '_').replace(', ', '_').replace(' ', '_')}"
        steps, minutes = 10**9, args.minutes
        if over.get("wavelet_denoiser") and not args.equal_time:
            steps, minutes = out["noisy"]["info"]["step"], None
        cfg = TrainConfig(
            data=[str(data)], out=str(run), prior="whole", size=args.size, window=window, modality=modality,
            base_channels=args.channels, channel_mult=args.channel_mult, num_blocks=args.blocks,
            attention=not args.no_attention, batch=args.batch, lr=args.lr, ema_halflife=args.ema_halflife,
            steps=steps, minutes=minutes,
            checkpoint_every=500, log_every=10, device=device, seed=args.seed, levels=args.levels,
            feedback_after=args.feedback_after,
            noisy_data=kind if over.get("noisy") else None, noise_level=level if over.get("noisy") else None,
            wavelet_denoiser=over.get("wavelet_denoiser", False), feedback=over.get("feedback", 1.0))
        path = run / "prior.safetensors"
        if not (args.reuse and path.exists()):
            budget = f"{args.minutes:g} min" if minutes else f"{steps} steps (as 'noisy')"
            print(f"training {modality} prior '{label}' for {budget} -> {run}", flush=True)
            train(cfg, progress=not args.no_progress)
        info = json.loads(path.with_suffix(".json").read_text())["info"]
        out[label] = {"prior": str(path), "info": info, "train_config": asdict(cfg),
                      "cleaned_psnr_vs_clean": cleaned_training_psnr(info)}
    return out


@torch.no_grad()
def cleaned_training_psnr(info: dict, chunk: int = 16) -> float | None:
    """PSNR (dB) against the clean slices of the prior's noisy training scans after its trained wavelet
    sub-network (as training applies it: band noise levels from a fresh noise realisation); None without one.
    The noisy set is rebuilt from the run's config and seed, so it is the one the prior saw."""
    wd = info.get("wavelet_denoiser")
    if not wd:
        return None
    cfg = TrainConfig.from_dict(info["train_config"])
    clean = SliceDataset(cfg.data, size=cfg.size, window=cfg.window, axis=cfg.axis).images
    noisy = noisy_training_set(clean, cfg.noisy_data, cfg.noise_level, cfg.window, cfg.seed)
    cleaner = WaveletDenoiser.from_info(wd)
    noise = noise_sampler(cfg.noisy_data, cfg.noise_level, cfg.size, cfg.window)
    g = torch.Generator().manual_seed(cfg.seed)
    out = torch.cat([clean_scans(cleaner, noise, y, g) for y in noisy.split(chunk)])
    return noise_report(out, clean)["psnr_vs_clean"]


DENOISE_SIGMAS = (0.03, 0.1, 0.3)


@functools.lru_cache(maxsize=8)
def load_denoiser(prior: str, device: str):
    """D(x, sigma) of a prior checkpoint, loaded once per (path, device): every task, slice and parameter set
    (tune_wavelet_langevin.py) reuses it."""
    model, cfg = load_prior(prior, device=device)
    return make_denoiser(model, cfg)


@torch.no_grad()
def denoising_psnr(prior: str, images: list[tuple[str, np.ndarray]], device: str, seed: int = 0) -> list[float]:
    """PSNR (dB) of the prior's denoiser D(x + sigma n, sigma) against x on clean test images, per sigma of
    DENOISE_SIGMAS (unit data range): how well the score model has learned, apart from any sampler."""
    net = load_denoiser(prior, device)
    x = torch.stack([torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)) for _, img in images])[:, None]
    g = torch.Generator().manual_seed(seed)
    out = []
    for s in DENOISE_SIGMAS:
        r = net((x + s * torch.randn(x.shape, generator=g)).to(device), s).float().cpu()
        out.append(noise_report(r, x)["psnr_vs_clean"])
    return out


def reconstruct(prior: str, task, y: torch.Tensor, args, device: str, params: dict | None = None) -> torch.Tensor:
    """One posterior sample (1, 1, N, N) with the chosen sampler; seeds as ``wavepatch reconstruct``. The
    sampler and the operators run on the CPU, the network on ``device``. ``params``: keyword overrides of
    :func:`wavelet_regularized_langevin` (eps, omega, beta, lam, tau)."""
    net = load_denoiser(prior, device)

    def denoise(x: torch.Tensor, sigma) -> torch.Tensor:
        return net(x.to(device), sigma).to(x.device)

    g = torch.Generator().manual_seed(args.seed + 2)
    n = task.op.image_shape[-1]
    sigmas = geometric_sigmas(args.steps, 0.003, 10.0)
    x = 10.0 * torch.randn((1, 1, n, n), generator=g)
    fidelity = task.fidelity(y)  # the task's noise model: Gaussian, or the photon counts of low-dose CT
    with torch.no_grad():
        if args.sampler == "langevin":
            out = langevin(denoise, fidelity, x, sigmas, n_inner=args.n_inner, generator=g)
        else:
            out = wavelet_regularized_langevin(denoise, fidelity, x, sigmas, n_inner=args.n_inner, generator=g,
                                               **(params or {}))
    return out.float().cpu()


def run_tasks(priors: dict[str, dict[str, dict]], tests: dict[str, list[tuple[str, np.ndarray]]], args,
              device: str) -> tuple[list[dict], dict]:
    rows, images = [], {}
    for label, task_name, options, modality in TASKS:
        if modality not in priors:
            continue
        opts = TaskOptions(**options)
        for name, img in tests[modality]:
            x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None, None]
            task = make_task(task_name, img.shape[-1], opts, torch.Generator().manual_seed(args.seed))
            y = task.simulate(x, torch.Generator().manual_seed(args.seed + 1))
            recons = {"baseline": task.baseline(y)}
            for prior_label, entry in priors[modality].items():
                t0 = time.perf_counter()
                recons[prior_label] = reconstruct(entry["prior"], task, y, args, device)
                print(f"  {label} | {name} | {prior_label}: {image_metrics(recons[prior_label], x)['psnr']:.2f} dB "
                      f"({time.perf_counter() - t0:.1f} s)", flush=True)
            for prior_label, r in recons.items():
                m = image_metrics(r, x)
                rows.append({"task": label, "prior": prior_label, "slice": name, "psnr": m["psnr"], "ssim": m["ssim"]})
                if name == tests[modality][0][0]:
                    images[(label, prior_label)] = r[0, 0].clamp(0, 1).numpy()
                    images[(label, "truth")] = img
    return rows, images


def table(rows: list[dict], priors: dict, args, seconds: float) -> str:
    cols = ["baseline"] + [v for v, _ in variants(args.ablation)]
    budget = "" if args.equal_time else " (the sub-network variants: as many steps as 'noisy')"
    lines = [f"# Score priors trained on noisy scans: {args.size}x{args.size}, {args.minutes:g} min of training per "
             f"prior{budget}, {args.slices} test slice(s) per task", "",
             f"Sampler: {args.sampler}, {args.steps} levels x {args.n_inner} (NFE {args.steps * args.n_inner + 1}); "
             f"PSNR dB / SSIM, mean over slices; baseline = FBP (CT) or zero-filled (MRI). Training noise: CT low-dose "
             f"noise inserted at I0 = {args.train_dose:g}, MRI white noise std {args.mri_noise:g}. Total "
             f"{seconds / 60:.1f} min.", "",
             "| task | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for label, *_ in TASKS:
        sel = [r for r in rows if r["task"] == label]
        if not sel:
            continue
        cells = []
        for c in cols:
            p = [r["psnr"] for r in sel if r["prior"] == c]
            s = [r["ssim"] for r in sel if r["prior"] == c]
            cells.append(f"{np.mean(p):.2f} / {np.mean(s):.3f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    sig = " / ".join(f"{s:g}" for s in DENOISE_SIGMAS)
    lines += ["", f"Denoiser: PSNR of D(x + sigma n, sigma) on the test slices, sigma = {sig}.", "",
              "| prior | training steps (s) | training images vs clean (PSNR dB) | after the sub-network "
              "(PSNR dB) | learned thresholds (noise stds, coarse -> fine, mean of 3 bands) | denoiser (PSNR dB) |",
              "|---|---|---|---|---|---|"]
    for modality, entries in priors.items():
        for label, e in entries.items():
            info = e["info"]
            nd = info.get("noisy_data")
            wd = info.get("wavelet_denoiser")
            taus = " / ".join(f"{np.mean(t):.2f}" for t in wd["tau"]) if wd else "–"
            noisy = f"{nd['psnr_vs_clean']:.2f}" if nd else "clean"
            cleaned = e.get("cleaned_psnr_vs_clean")
            cleaned = "–" if cleaned is None else f"{cleaned:.2f}"
            den = " / ".join(f"{v:.1f}" for v in e.get("denoising_psnr", []))
            lines.append(f"| {modality} {label} | {info['step']} ({info['train_seconds']:.0f}) | {noisy} | {cleaned} "
                         f"| {taus} | {den} |")
    return "\n".join(lines) + "\n"


def grid(path: Path, images: dict, cols: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t, *_ in TASKS if (t, "truth") in images]
    cols = ["truth"] + cols
    fig, axes = plt.subplots(len(tasks), len(cols), figsize=(2 * len(cols), 2.1 * len(tasks)), squeeze=False)
    for i, t in enumerate(tasks):
        for j, c in enumerate(cols):
            ax = axes[i, j]
            ax.imshow(np.clip(images[(t, c)], 0, 1), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(c, fontsize=8)
            if j == 0:
                ax.set_ylabel(t, fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--minutes", type=float, default=6.0, help="training wall time per prior")
    p.add_argument("--slices", type=int, default=4, help="test slices per task")
    p.add_argument("--modalities", default="ct,mri", help="ct, mri or ct,mri")
    p.add_argument("--train-dose", type=float, default=1e3, help="CT training noise: I0 photons per bin")
    p.add_argument("--mri-noise", type=float, default=0.03, help="MRI training noise: std on the unit image")
    p.add_argument("--ct-train", default=str(SHARED / "ct" / "train"))
    p.add_argument("--ct-test", default=str(SHARED / "ct" / "test"))
    p.add_argument("--mri-train", default=str(SHARED / "mri" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"),
                   help="the template volume (planes z = 70..120 left out) or a ready .npy stack in [0, 1]")
    p.add_argument("--mri-test", default=str(REPO / "data" / "mri"))
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--channel-mult", type=lambda s: tuple(int(v) for v in s.split(",")), default=(1, 2, 2))
    p.add_argument("--blocks", type=int, default=1)
    p.add_argument("--no-attention", action="store_true")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--ema-halflife", type=float, default=100.0, help="in steps (short runs need a short one)")
    p.add_argument("--levels", type=int, default=3, help="wavelet sub-network levels")
    p.add_argument("--feedback-after", type=int, default=500, help="steps before the feedback term is fully on")
    p.add_argument("--ablation", action="store_true", help="also train the sub-network without feedback")
    p.add_argument("--sampler", choices=SAMPLERS, default="wavelet-langevin")
    p.add_argument("--steps", type=int, default=30, help="noise levels of the sampler")
    p.add_argument("--n-inner", type=int, default=3, help="Langevin iterations per level")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--work", default=str(REPO / "runs" / "noisy_data"), help="training runs")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "noisy_data"))
    p.add_argument("--equal-time", action="store_true",
                   help="train the sub-network variants for --minutes, not for the steps 'noisy' reached")
    p.add_argument("--reuse", action="store_true", help="reuse trained priors found in --work")
    p.add_argument("--train-only", action="store_true", help="train (or reuse) the priors, reconstruct nothing")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    t0 = time.perf_counter()
    device = str(resolve_device(args.device))
    modalities = [m for m in args.modalities.split(",") if m]
    if not set(modalities) <= {"ct", "mri"}:
        raise SystemExit(f"--modalities: ct and/or mri, got {args.modalities!r}")
    Path(args.work).mkdir(parents=True, exist_ok=True)
    train_data = {"ct": Path(args.ct_train)}
    tests = {}
    if "ct" in modalities:
        ds = SliceDataset(args.ct_test, size=args.size, window=CT_WINDOW)
        tests["ct"] = _pick(ds, args.slices)
    if "mri" in modalities:
        src = Path(args.mri_train)
        train_data["mri"] = src if src.suffix == ".npy" else mri_training_stack(
            src, Path(args.work) / f"mri_train{args.size}.npy", args.size)
        tests["mri"] = _pick(SliceDataset(args.mri_test, size=args.size), args.slices)
    priors = {m: train_priors(m, train_data[m], args, device) for m in modalities}
    if args.train_only:
        print(f"priors in {args.work}")
        return
    for m in modalities:
        for entry in priors[m].values():
            entry["denoising_psnr"] = denoising_psnr(entry["prior"], tests[m], device, args.seed)
    rows, images = run_tasks(priors, tests, args, device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    md = table(rows, priors, args, time.perf_counter() - t0)
    atomic_write_bytes(out / "results.md", md.encode())
    atomic_write_bytes(out / "results.json", (json.dumps({"args": vars(args), "rows": rows, "priors": priors},
                                                         indent=2, default=str) + "\n").encode())
    grid(out / "grid.png", images, ["baseline"] + [v for v, _ in variants(args.ablation)])
    print(md)
    print(f"-> {out}")


def _pick(ds: SliceDataset, k: int) -> list[tuple[str, np.ndarray]]:
    """k slices spread evenly over the data set (name, (N, N) unit image)."""
    names = [f"{Path(v['source']).name}[{i}]" for v in ds.volumes for i in range(v["n_slices"])]
    idx = np.unique(np.linspace(0, len(names) - 1, max(1, k)).round().astype(int))
    return [(names[i], ds.images[i, 0].numpy()) for i in idx]


if __name__ == "__main__":
    main()
