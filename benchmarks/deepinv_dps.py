"""Side-by-side peer timing: deepinv's DPS and wavepatch's DPS with the same denoiser, task and NFE.

    /work/deepinv-venv/bin/python benchmarks/deepinv_dps.py --nfe 20 50 --out benchmarks/results/deepinv_dps

deepinv pulls its own (CUDA) torch, so it lives in a separate venv with wavepatch installed there without deps
(``pip install deepinv``, then ``pip install --no-deps -e .`` and wavepatch's other dependencies except torch).
Both samplers run in that venv, in one process, on the same torch, one thread (``--threads``).

What is compared, on 20-view parallel-beam CT at 256^2 of the bundled test slice (noiseless sinogram, as the CLI):
- wavepatch: ``sampling.posterior.dps`` through ``learned.run_sampler`` with the registry's ``dps`` entry and the
  task's data fidelity, exactly as ``wavepatch reconstruct --method dps`` runs it (Karras levels 10 -> 0.003,
  zeta: the entry's default 0.1 unless ``--zeta``; the recorded results/deepinv_dps ran with 0.01, the default
  then; NFE = steps);
- deepinv 0.5: ``deepinv.sampling.DPS`` with its defaults (VP schedule beta 0.1..20, DDPM ancestral solver,
  "norm" guidance, float64 state), ``num_steps = NFE + 1`` (its last step, to t = 0, is the Tweedie estimate
  and calls no network), started from a shape (no least-squares A_dagger). ``weight`` is deepinv's default 1.0:
  on a training slice at 20 NFE weights 1 / 3 / 10 gave 25.59 / 25.67 / 22.80 dB (``--input
  ../shared/data/ct/train/A0001_B_025.dcm --nfe 20 --weights 1 3 10 --no-tomography``), so the default stays;
- the denoiser is the same module for both: the bundled ct_whole256 prior (EDM D(x, sigma), x in [0, 1]) wrapped
  as a ``deepinv.models.Denoiser``. No noise-level conversion is needed in the wrapper: deepinv keeps its VP state
  x_t = s (2 x0 - 1 + sigma n) in [-1, 1] and, for DPS, calls the unwrapped denoiser on (x_t / s + 1) / 2 with
  noise level sigma / 2, sigma = sqrt((1 - abar) / abar), abar = s^2: a VE image in [0, 1] and its std;
- the operator: wavepatch's ``ParallelBeamCT`` as a ``deepinv.physics.LinearPhysics`` (same A, same cost), and
  deepinv's own ``Tomography`` (grid_sample, autograd adjoint) on the same geometry (``--no-tomography`` skips).

Reports seconds per image, per NFE, the per-NFE overhead beyond the network's forward+backward and the
operator's A + backward (timed alone, median of ``--repeats``), PSNR / SSIM (clipped to [0, 1], as the CLI),
and ratios deepinv / wavepatch. Prints a markdown table, writes table.md and results.json to ``--out``. Single
runs on a shared 2-core CPU: ratios, not claims.
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
from wavepatch.learned import cached_prior, run_sampler
from wavepatch.methods import get_method
from wavepatch.metrics import image_metrics
from wavepatch.prior.model import make_denoiser
from wavepatch.resources import data_path, prior_path
from wavepatch.tasks import TaskOptions, make_task

PRIOR = prior_path("ct_whole256")
SEED = 0  # task 0, measurement 1, sampler 2: as wavepatch.run.run_reconstruction


def timed(fn):
    """(result, wall seconds, CPU seconds of this process). CPU time is the steadier measure on a shared machine."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def median_seconds(fn, repeats: int) -> tuple[float, float]:
    """Median (wall, CPU) seconds of ``repeats`` calls."""
    runs = [timed(fn)[1:] for _ in range(repeats)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def fwd_bwd(denoise, x: torch.Tensor, sigma) -> None:
    """One DPS network cost: D(x, sigma) and the gradient of a scalar of it with respect to x."""
    xg = x.detach().requires_grad_(True)
    torch.autograd.grad(denoise(xg, sigma).sum(), xg)


def op_fwd_bwd(A, x: torch.Tensor) -> None:
    """One DPS operator cost: A x and the gradient of ||A x|| (autograd through A)."""
    xg = x.detach().requires_grad_(True)
    torch.autograd.grad(A(xg).square().sum(), xg)


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


def run_deepinv(dinv, den, physics, y: torch.Tensor, shape: tuple, nfe: int, weight: float) -> tuple:
    dps = dinv.sampling.DPS(den, num_steps=nfe + 1, weight=weight, rng=torch.Generator().manual_seed(SEED + 2))
    den.calls = 0
    out, wall, cpu = timed(lambda: dps(y, physics, x_init=shape, seed=SEED + 2))
    return out.float(), wall, cpu, den.calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", default=str(data_path("ct/A0002_B40f_015.dcm")))
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--views", type=int, default=20)
    ap.add_argument("--nfe", type=int, nargs="+", default=[20])
    ap.add_argument("--zeta", type=float, default=None, help="wavepatch DPS step (default: the CLI's)")
    ap.add_argument("--weights", type=float, nargs="+", default=[1.0], help="deepinv DPS weights (Tomography: last)")
    ap.add_argument("--no-tomography", action="store_true", help="skip deepinv's own Tomography operator")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the component timings (median)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/deepinv_dps")
    args = ap.parse_args()
    try:
        import deepinv as dinv
    except Exception as e:  # noqa: BLE001 - any import failure means: no peer to compare with
        sys.exit(f"deepinv is not importable here ({type(e).__name__}: {e}); run this with the deepinv venv's python")

    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    load_before = os.getloadavg()
    n = args.size
    x = load_slice(args.input, n)
    task = make_task("ct-parallel", n, TaskOptions(views=args.views), torch.Generator().manual_seed(SEED))
    y = task.simulate(x, torch.Generator().manual_seed(SEED + 1))
    op = task.op
    model, cfg = cached_prior(PRIOR)  # the same module object run_sampler uses
    denoise = make_denoiser(model, cfg)
    den = deepinv_denoiser(dinv, denoise)
    ours = dinv.physics.LinearPhysics(A=lambda v, **kw: op.A(v), A_adjoint=lambda v, **kw: op.A_adjoint(v))
    physics = {"wavepatch ParallelBeamCT": (ours, y)}
    info = {}
    if not args.no_tomography:
        tomo = dinv.physics.Tomography(angles=args.views, img_width=n, circle=False, normalize=False)
        y_tomo = tomo.A(x)  # (B, C, detectors, views): ours transposed
        info["tomography_vs_ours_rel_diff"] = float((y_tomo.transpose(-1, -2) - y).norm() / y.norm())
        physics["deepinv Tomography"] = (tomo, y_tomo)

    # components, after a warm-up call: network, operators, wavepatch's one-off ||A|| (cached per operator)
    xn = x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(SEED + 3))
    fwd_bwd(denoise, xn, 0.1)
    s01 = torch.tensor(0.1)
    comp = {"network forward (no grad)": median_seconds(lambda: torch.no_grad()(denoise)(xn, 0.1), args.repeats),
            "network forward+backward, wavepatch callable": median_seconds(lambda: fwd_bwd(denoise, xn, 0.1),
                                                                           args.repeats),
            "network forward+backward, deepinv Denoiser wrapper": median_seconds(lambda: fwd_bwd(den, xn, s01),
                                                                                 args.repeats)}
    op_cost = {name: median_seconds(lambda p=p: op_fwd_bwd(p.A, x), 5 * args.repeats)
               for name, (p, _) in physics.items()}
    comp.update({f"A + backward, {name}": s for name, s in op_cost.items()})
    comp["wavepatch ||A|| power iteration (once per operator)"] = timed(op.norm)[1:]
    net = comp["network forward+backward, wavepatch callable"][1]

    method = get_method("dps")
    fidelity = task.fidelity(y)
    zeta = method.resolve(task.name)["zeta"] if args.zeta is None else args.zeta
    rows = []
    for nfe in args.nfe:
        p = method.resolve(task.name, {"steps": nfe, "zeta": zeta})
        (out, calls), wall, cpu = timed(lambda p=p: run_sampler(method, fidelity, PRIOR, p,
                                                                torch.Generator().manual_seed(SEED + 2)))
        rows.append({"sampler": "wavepatch dps", "physics": "wavepatch ParallelBeamCT",
                     "settings": f"Karras {p['sigma_max']:g}->{p['sigma_min']:g}, zeta {zeta:g}", "nfe_requested": nfe,
                     "nfe": calls, "seconds": wall, "cpu_seconds": cpu,
                     "op_cpu_seconds": op_cost["wavepatch ParallelBeamCT"][1],
                     **image_metrics(out, x)})
        for name, (phys, y_phys) in physics.items():
            for w in args.weights if name.startswith("wavepatch") else args.weights[-1:]:
                out, wall, cpu, calls = run_deepinv(dinv, den, phys, y_phys, (1, 1, n, n), nfe, w)
                rows.append({"sampler": "deepinv DPS", "physics": name, "settings": f"VP ddpm, weight {w:g}",
                             "nfe_requested": nfe, "nfe": calls, "seconds": wall, "cpu_seconds": cpu,
                             "op_cpu_seconds": op_cost[name][1],
                             **image_metrics(out, x)})
        print(f"NFE {nfe} done", file=sys.stderr)

    for r in rows:
        ref = next(q for q in rows if q["sampler"] == "wavepatch dps" and q["nfe_requested"] == r["nfe_requested"])
        r["cpu_seconds_per_nfe"] = r["cpu_seconds"] / max(r["nfe"], 1)
        r["overhead_cpu_seconds_per_nfe"] = r["cpu_seconds_per_nfe"] - net - r["op_cpu_seconds"]
        r["wall_ratio"] = r["seconds"] / ref["seconds"]
        r["cpu_ratio"] = r["cpu_seconds"] / ref["cpu_seconds"]
        r["psnr_ratio"] = r["psnr"] / ref["psnr"]
        r["psnr_diff_db"] = r["psnr"] - ref["psnr"]

    versions = {"python": platform.python_version(), "torch": torch.__version__, "deepinv": version("deepinv"),
                "torchvision": version("torchvision"), "wavepatch": version("wavepatch")}
    lines = [f"{Path(args.input).name}, {n}^2, {args.views}-view parallel-beam CT (noiseless), prior "
             f"{PRIOR.name}; both samplers in one process: torch {versions['torch']}, deepinv {versions['deepinv']}, "
             f"{args.threads} thread(s); load average before/after "
             f"{load_before[0]:.1f}/{os.getloadavg()[0]:.1f} (shared CPU: single runs, ratios only)", "",
             "| sampler | physics | settings | NFE | wall s / image | CPU s / image | CPU s / NFE "
             "| overhead CPU s / NFE | PSNR dB | SSIM | wall ÷ wavepatch | CPU ÷ wavepatch | PSNR ÷ wavepatch "
             "| ΔPSNR dB |", "|" + "---|" * 14]
    for r in rows:
        lines.append(f"| {r['sampler']} | {r['physics']} | {r['settings']} | {r['nfe']} | {r['seconds']:.1f} | "
                     f"{r['cpu_seconds']:.1f} | {r['cpu_seconds_per_nfe']:.2f} | "
                     f"{r['overhead_cpu_seconds_per_nfe']:+.3f} | {r['psnr']:.2f} | {r['ssim']:.3f} | "
                     f"{r['wall_ratio']:.2f} | {r['cpu_ratio']:.2f} | "
                     f"{r['psnr_ratio']:.3f} | {r['psnr_diff_db']:+.2f} |")
    lines += ["", "overhead = CPU s / NFE - network forward+backward - operator A + backward (CPU medians below).", "",
              f"Components (median of {args.repeats}; operators {5 * args.repeats}):", "",
              "| component | wall s | CPU s |", "|---|---|---|"]
    lines += [f"| {k} | {w:.4f} | {c:.4f} |" for k, (w, c) in comp.items()]
    if "tomography_vs_ours_rel_diff" in info:
        lines += ["", f"deepinv Tomography sinogram vs wavepatch's (transposed): relative L2 difference "
                      f"{info['tomography_vs_ours_rel_diff']:.1e}"]
    table = "\n".join(lines) + "\n"
    print(table)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "table.md").write_text(table)
    (out_dir / "results.json").write_text(json.dumps(
        {"command": " ".join([Path(sys.executable).as_posix(), *sys.argv]), "args": vars(args), "versions": versions,
         "load_average_before_after": [load_before[0], os.getloadavg()[0]], "components_seconds": comp, **info,
         "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
