"""Side by side with the peer: deepinv's DPS and DiffPIR against wavepatch's DPS, PiGDM, DDNM and PaDIS fast, with
the same denoiser, task, slices and NFE, in one process.

    /work/deepinv-venv/bin/python benchmarks/deepinv_peers.py --nfe 20 50 100 --out benchmarks/results/deepinv_peers

deepinv imports torchvision, which has no CPU build beside torch 2.13.0 here, so it lives in its own venv:
``python -m venv V && V/bin/pip install torch==2.14.1 torchvision==0.29.1 deepinv``, then wavepatch's other
dependencies and ``V/bin/pip install --no-deps -e .``. Every sampler below runs in that venv on that torch.

What is compared, on 20-view parallel-beam CT at 256^2 (noiseless sinogram, simulated as the CLI does: task seed
0, measurement seed 1, sampler seed 2):
- the denoiser: the bundled whole-image prior ct_whole256 (EDM D(x, sigma), x in [0, 1]), one callable at the
  CLI's precision (``--precision``, default auto: bf16 on AMX CPUs) for every whole-image row; deepinv gets it as
  a ``deepinv.models.Denoiser``. No noise-level conversion is needed in the wrapper: deepinv keeps its state in
  [-1, 1] and calls the denoiser on (x + 1) / 2 with noise level sigma / 2;
- the operator: wavepatch's ``ParallelBeamCT`` as a ``deepinv.physics.LinearPhysics`` (same A, same cost);
- deepinv ``DPS``: its defaults (VP schedule, DDPM ancestral solver, "norm" guidance, weight 1.0), started from
  noise, ``num_steps = NFE + 1`` (its last step is the Tweedie estimate and calls no network);
- deepinv ``DiffPIR``: its defaults zeta 0.1, lambda 7, with ``sigma`` (the data noise level that sets its
  rho_t = lambda sigma^2 / sigma_t^2) from ``--diffpir-sigma`` (deepinv's default 0.05; 0.01 gave the same on a
  training slice), and its L2 data fidelity's prox (conjugate gradients); ``max_iter = NFE``; x_init mid-grey;
- wavepatch ``dps`` (zeta 0.1), ``pigdm``, ``ddnm`` (eta 0.85): from noise, through ``run.solve`` with
  the registry's defaults, exactly as ``wavepatch reconstruct --method M --steps NFE`` runs them;
- wavepatch ``padis --fast``: the README's main job, with its own prior (ct_patch256) and its ADMM-TV warm start
  (whose seconds are included).

Reports PSNR / SSIM (clipped to [0, 1], as the CLI), wall and CPU seconds per image and per NFE, and each row's
CPU seconds per NFE over wavepatch DPS's. Prints a markdown table, writes table.md and results.json to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from wavepatch.io import normalize_volume, read_image, resize_square
from wavepatch.learned import cached_prior
from wavepatch.metrics import image_metrics
from wavepatch.prior.model import make_denoiser, resolve_precision
from wavepatch.resources import data_path, prior_path
from wavepatch.run import solve
from wavepatch.tasks import TaskOptions, make_task

WHOLE, PATCH = prior_path("ct_whole256"), prior_path("ct_patch256")
SEED = 0  # task 0, measurement 1, sampler 2: as wavepatch.run.run_reconstruction
DEFAULT_INPUTS = [str(data_path(f"ct/A0002_B40f_0{k}.dcm")) for k in ("10", "15", "20")]


def timed(fn):
    """(result, wall seconds, CPU seconds of this process)."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def load_slice(path: str, n: int) -> torch.Tensor:
    """The CLI's preprocessing: CT window -1000..1000 HU -> [0, 1], middle slice, resized to n x n. (1, 1, n, n)."""
    unit, _ = normalize_volume(read_image(path), None)
    img = resize_square(unit[unit.shape[0] // 2], n)
    return torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None, None]


def deepinv_denoiser(dinv, denoise):
    """wavepatch's D(x, sigma) (x in [0, 1], sigma its Gaussian std) as a deepinv Denoiser, counting calls."""

    class WavepatchDenoiser(dinv.models.Denoiser):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def forward(self, x: torch.Tensor, sigma, *args, **kwargs) -> torch.Tensor:
            self.calls += 1
            return denoise(x, sigma)

    return WavepatchDenoiser()


def deepinv_rows(dinv, den, physics, y, shape, nfe: int, diffpir_sigma: float):
    """(name, settings, image, wall, cpu, calls) of deepinv's DPS and DiffPIR at ``nfe`` network calls."""
    rows = []
    dps = dinv.sampling.DPS(den, num_steps=nfe + 1, rng=torch.Generator().manual_seed(SEED + 2))
    den.calls = 0
    out, wall, cpu = timed(lambda: dps(y, physics, x_init=shape, seed=SEED + 2))
    rows.append(("deepinv dps", "VP ddpm, weight 1", out.float(), wall, cpu, den.calls))
    diffpir = dinv.sampling.DiffPIR(den, dinv.optim.data_fidelity.L2(), sigma=diffpir_sigma, max_iter=nfe)
    den.calls = 0
    torch.manual_seed(SEED + 2)
    out, wall, cpu = timed(lambda: diffpir(y, physics, x_init=torch.full(shape, 0.5)))
    rows.append(("deepinv diffpir", f"zeta 0.1, lambda 7, sigma {diffpir_sigma:g}", out.float(), wall, cpu,
                 den.calls))
    return rows


def wavepatch_rows(task, y, nfe: int, precision: str):
    """(name, settings, image, wall, cpu, NFE) of wavepatch's samplers at ``nfe`` levels, each through
    ``run.solve`` as ``wavepatch reconstruct --method M --steps NFE [--fast]`` runs it (sampler seed SEED + 2)."""
    rows = []
    for name, prior, fast, settings in (("dps", WHOLE, False, "registry defaults, from noise"),
                                        ("pigdm", WHOLE, False, "registry defaults, from noise"),
                                        ("ddnm", WHOLE, False, "registry defaults, from noise"),
                                        ("padis", PATCH, True, "ct_patch256, ADMM-TV warm start (included)")):
        r, wall, cpu = timed(lambda m=name, pr=prior, f=fast: solve(task, y, m, {"steps": nfe}, SEED, pr, fast=f,
                                                                   precision=precision))
        rows.append((f"wavepatch {name}{' --fast' if fast else ''}", settings, r.recon, wall, cpu, r.nfe))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--inputs", nargs="+", default=DEFAULT_INPUTS)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--views", type=int, default=20)
    ap.add_argument("--nfe", type=int, nargs="+", default=[20, 50, 100])
    ap.add_argument("--diffpir-sigma", type=float, default=0.05,
                    help="DiffPIR's data noise level (sets rho_t); deepinv's default, 0.05 and 0.01 gave 28.37 / "
                         "28.38 dB on training slice A0001_B_025 at 20 NFE")
    ap.add_argument("--only-deepinv", action="store_true", help="deepinv rows only (its parameter choice)")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/deepinv_peers")
    args = ap.parse_args()
    try:
        import deepinv as dinv
    except Exception as e:  # noqa: BLE001 - any import failure means: no peer to compare with
        sys.exit(f"deepinv is not importable here ({type(e).__name__}: {e}); run this with the deepinv venv's python")

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    precision = resolve_precision(args.precision, "cpu")
    model, cfg = cached_prior(WHOLE)  # the same module object run_sampler uses
    den = deepinv_denoiser(dinv, make_denoiser(model, cfg, precision=precision))
    rows = []
    for path in args.inputs:
        x = load_slice(path, args.size)
        task = make_task("ct-parallel", args.size, TaskOptions(views=args.views), torch.Generator().manual_seed(SEED))
        y = task.simulate(x, torch.Generator().manual_seed(SEED + 1))
        op = task.op
        physics = dinv.physics.LinearPhysics(A=lambda v, op=op, **kw: op.A(v),
                                             A_adjoint=lambda v, op=op, **kw: op.A_adjoint(v))
        for nfe in args.nfe:
            got = deepinv_rows(dinv, den, physics, y, tuple(x.shape), nfe, args.diffpir_sigma)
            if not args.only_deepinv:
                got += wavepatch_rows(task, y, nfe, precision)
            for name, settings, out, wall, cpu, calls in got:
                rows.append({"slice": Path(path).name, "sampler": name, "settings": settings, "nfe_requested": nfe,
                             "nfe": calls, "seconds": wall, "cpu_seconds": cpu, **image_metrics(out, x)})
                print(f"{Path(path).name} NFE {nfe} {name}: {rows[-1]['psnr']:.2f} dB, {wall:.1f} s", file=sys.stderr,
                      flush=True)

    names = list(dict.fromkeys(r["sampler"] for r in rows))
    ref = {(r["slice"], r["nfe_requested"]): r for r in rows if r["sampler"] == "wavepatch dps"}
    lines = [f"{len(args.inputs)} slice(s), {args.size}^2, {args.views}-view parallel-beam CT (noiseless); whole-image "
             f"prior {WHOLE.name} at {precision} for every row but PaDIS fast ({PATCH.name}); torch "
             f"{torch.__version__}, deepinv {version('deepinv')}, {args.threads} thread(s); load average before/after "
             f"{load_before[0]:.1f}/{os.getloadavg()[0]:.1f}", "",
             "| sampler | NFE | PSNR dB (mean ± std) | SSIM | wall s / image | CPU s / NFE "
             "| CPU per NFE ÷ wavepatch dps |",
             "|---|---|---|---|---|---|---|"]
    for nfe in args.nfe:
        for name in names:
            sel = [r for r in rows if r["sampler"] == name and r["nfe_requested"] == nfe]
            if not sel:
                continue
            ps = [r["psnr"] for r in sel]
            per = [r["cpu_seconds"] / max(r["nfe"], 1) for r in sel]
            refs = [ref[(r["slice"], nfe)] for r in sel if (r["slice"], nfe) in ref]
            ratio = (f"{statistics.mean(per) / statistics.mean(q['cpu_seconds'] / q['nfe'] for q in refs):.2f}"
                     if refs else "–")
            lines.append(f"| {name} | {sel[0]['nfe']} | {statistics.mean(ps):.2f} ± "
                         f"{statistics.pstdev(ps):.2f} | {statistics.mean(r['ssim'] for r in sel):.3f} | "
                         f"{statistics.mean(r['seconds'] for r in sel):.1f} | {statistics.mean(per):.2f} | {ratio} |")
    table = "\n".join(lines) + "\n"
    print(table)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "table.md").write_text(table)
    versions = {"python": platform.python_version(), "torch": torch.__version__, "deepinv": version("deepinv"),
                "wavepatch": version("wavepatch")}
    (out_dir / "results.json").write_text(json.dumps(
        {"command": " ".join([Path(sys.executable).as_posix(), *sys.argv]), "args": vars(args), "versions": versions,
         "load_average_before_after": [load_before[0], os.getloadavg()[0]], "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
