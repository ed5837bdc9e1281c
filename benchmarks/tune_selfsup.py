"""Choose a self-supervised volume method's defaults (``--method smore`` for zsr, ``zs-ssl`` for mri3d) on TRAINING
data.

The task (zsr x--factor or mri3d x--accel, noiseless) on the training patient's two series (data/ct/train: the same
patient reconstructed twice, different kernels), slices --slices, resized to --size; the task's baseline, 3-D
ADMM-TV and --method with each configuration. A configuration is ``name:key=value,key=value`` of the method's
parameters; the key ``spacing=pixel`` trains without resampling to the slice spacing (z_weight 1), ``seed=N``
changes the run's seed. Prints one markdown table (PSNR and coronal / sagittal PSNR per series, mean PSNR,
seconds).

Run: ``python benchmarks/tune_selfsup.py [--task mri3d --method zs-ssl] [--configs long:steps=2000 wide:width=64]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from wavepatch.cli_volume import parse_slices, slice_spacing_mm
from wavepatch.io import normalize_volume, read_image, resize_square
from wavepatch.io.readers import find_dicom_series
from wavepatch.tasks import task_options
from wavepatch.volume import measure_volume, solve_volume, volume_metrics

TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "ct" / "train"


def load(series: str, slices: str, size: int) -> tuple[np.ndarray, float]:
    vol = read_image(TRAIN, slices=parse_slices(slices), series=series)
    unit, _ = normalize_volume(vol)
    h = unit.shape[1]
    unit = resize_square(unit, size)
    return unit, float(vol.spacing[0] * h / size / slice_spacing_mm(vol, TRAIN, 2))


def parse_config(text: str) -> tuple[str, dict]:
    name, _, rest = text.partition(":")
    return name, dict(kv.split("=", 1) for kv in rest.split(",") if kv)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", default="8:36")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--task", choices=("zsr", "mri3d"), default="zsr")
    ap.add_argument("--method", default="smore")
    ap.add_argument("--factor", type=int, default=4)
    ap.add_argument("--accel", type=float, default=8.0)
    ap.add_argument("--configs", nargs="+", default=["default:"])
    args = ap.parse_args(argv)
    volumes = [load(s, args.slices, args.size) for s in sorted(find_dicom_series(TRAIN))]
    opts = task_options(args.task, **({"factor": args.factor} if args.task == "zsr" else {"accel": args.accel}))
    measured = [(measure_volume(u, args.task, opts), u, zw) for u, zw in volumes]
    what = f"zsr x{args.factor}" if args.task == "zsr" else f"mri3d x{args.accel:g}"
    print(f"{what}, {args.method}, training patient, {len(volumes)} series, slices {args.slices}, {args.size}^2, "
          f"z_weight {', '.join(f'{zw:.3f}' for _, zw in volumes)}")
    head = " | ".join(f"series {i}: PSNR / cor / sag" for i in range(len(volumes)))
    print(f"| run | {head} | mean PSNR | seconds |\n|---|{'---|' * len(volumes)}---|---|")
    rows = [(measured[0][0].task.baseline_name, None, {}), ("admm-tv", "admm-tv", {})]
    rows += [(name, args.method, cfg) for name, cfg in map(parse_config, args.configs)]
    for name, method, cfg in rows:
        cells, psnrs, t0 = [], [], time.perf_counter()
        params = {k: v for k, v in cfg.items() if k not in ("seed", "spacing")}
        seed = int(cfg.get("seed", 0))
        for meas, unit, zw in measured:
            if method is None:
                recon = meas.baseline[:, 0].numpy()
            else:
                z_weight = 1.0 if cfg.get("spacing", "slice") == "pixel" else zw
                recon = solve_volume(meas, method, params, seed=seed, z_weight=z_weight).recon
            m = volume_metrics(recon, unit)
            psnrs.append(m["psnr"])
            cells.append(f"{m['psnr']:.2f} / {m['psnr_coronal']:.2f} / {m['psnr_sagittal']:.2f}")
        print(f"| {name} | {' | '.join(cells)} | {np.mean(psnrs):.2f} | {time.perf_counter() - t0:.0f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
