"""Training-step time and peak memory, patch prior vs whole-image prior, at 128^2, 256^2 and 512^2 images;
and sampling time per image.

    python benchmarks/priors.py [--device cpu|cuda] [--repeats 5]

Both models are the bundled architectures (models/ct_whole*.json, models/ct_patch*.json). Each training step
processes the same number of pixels, 512^2 = 262,144: the whole-image prior takes 16 x 128^2, 4 x 256^2 or
1 x 512^2 images; the patch prior 84 patches of 56^2 (about the same pixels) whatever the image size, because it
never sees a whole image. A step = forward, EDM loss, backward, AdamW. Sampling: one Heun sampler NFE on a full
N x N image (the patch prior runs all K^2 patches of its grid), times 63 NFE (32 Heun levels).
Peak memory: CUDA max_memory_allocated; on CPU the peak resident set size of a fresh process per measurement.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from wavepatch.prior.model import PriorConfig, build_prior, make_denoiser
from wavepatch.prior.precond import edm_loss
from wavepatch.prior.unet import UNetConfig

PIXELS = 512 * 512
PATCH = 56


def configs() -> dict[str, PriorConfig]:
    whole = UNetConfig(in_channels=1, base_channels=32, channel_mult=(1, 2, 2, 2), num_blocks=2, attention=True)
    patch = UNetConfig(in_channels=3, base_channels=32, channel_mult=(1, 2, 2), num_blocks=2, attention=True)
    return {"whole": PriorConfig(kind="whole", unet=whole), "patch": PriorConfig(kind="patch", unet=patch,
                                                                                  patch_size=PATCH)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(kind: str, size: int, what: str, device: torch.device, repeats: int) -> dict:
    cfg = configs()[kind]
    model = build_prior(cfg).to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if what == "train":
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        if kind == "whole":
            x, extra = torch.rand(max(1, PIXELS // size**2), 1, size, size, device=device), None
        else:
            n = round(PIXELS / PATCH**2)
            x, extra = torch.rand(n, 1, PATCH, PATCH, device=device), torch.rand(n, 2, PATCH, PATCH, device=device)

        def step():
            loss = edm_loss(model, x, gen, -1.2, 1.2, extra)
            opt.zero_grad()
            loss.backward()
            opt.step()
    else:
        model.eval()
        denoise = make_denoiser(model, cfg, generator=torch.Generator(device=device).manual_seed(0))
        x = torch.rand(1, 1, size, size, device=device)

        def step():
            with torch.no_grad():
                denoise(x, 0.5)
    step()  # warm-up
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"kind": kind, "size": size, "what": what, "seconds": times[len(times) // 2], "peak_mb": peak,
            "batch": int(x.shape[0]), "device": str(device)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sizes", type=int, nargs="*", default=[128, 256, 512])
    ap.add_argument("--one", nargs=3, metavar=("KIND", "SIZE", "WHAT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]), args.one[2], device, args.repeats)))
        return
    rows = []
    for what in ("train", "sample"):
        for size in args.sizes:
            for kind in ("whole", "patch"):
                if device.type == "cpu":  # fresh process: ru_maxrss is a high-water mark
                    out = subprocess.run([sys.executable, __file__, "--device", "cpu", "--repeats", str(args.repeats),
                                          "--one", kind, str(size), what], capture_output=True, text=True, check=True)
                    rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                else:
                    rows.append(measure(kind, size, what, device, args.repeats))
                print(f"  {what} {kind} {size}: {rows[-1]['seconds'] * 1e3:.1f} ms, {rows[-1]['peak_mb']:.0f} MB",
                      file=sys.stderr)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\nDevice: {name}; torch {torch.__version__}; median of {args.repeats}\n")
    print("Training step (512^2 = 262,144 pixels per step; whole: B images of N^2, patch: 84 patches of 56^2)\n")
    print("| image | whole: batch | whole ms/step | whole peak MB | patch ms/step | patch peak MB "
          "| ratio time | ratio mem |")
    print("|---|---|---|---|---|---|---|---|")
    by_key = {(r["what"], r["kind"], r["size"]): r for r in rows}
    for size in args.sizes:
        w, p = by_key["train", "whole", size], by_key["train", "patch", size]
        print(f"| {size}^2 | {w['batch']} | {w['seconds'] * 1e3:.0f} | {w['peak_mb']:.0f} | {p['seconds'] * 1e3:.0f} "
              f"| {p['peak_mb']:.0f} | {w['seconds'] / p['seconds']:.2f}x | {w['peak_mb'] / p['peak_mb']:.2f}x |")
    print("\nSampling: one denoiser evaluation (NFE) on one N x N image, and 63 NFE (Heun, 32 levels)\n")
    print("| image | whole ms/NFE | whole s/image | whole peak MB | patch ms/NFE | patch s/image | patch peak MB |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        w, p = by_key["sample", "whole", size], by_key["sample", "patch", size]
        print(f"| {size}^2 | {w['seconds'] * 1e3:.1f} | {63 * w['seconds']:.2f} | {w['peak_mb']:.0f} "
              f"| {p['seconds'] * 1e3:.1f} | {63 * p['seconds']:.2f} | {p['peak_mb']:.0f} |")


if __name__ == "__main__":
    main()
