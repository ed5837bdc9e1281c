"""Choose the classical methods' default parameters per task, on TRAINING data only.

For every task and iterative method a small grid of the method's regularisation parameters is run on
training images (chest CT of patient A0001 from ``../shared/data/ct/train``; for MRI four real brain slices
of ``../shared/data/mri_brain/train``, or with ``--mri-source template`` two planes of the MNI template away
from the bundled test planes, as before the real data existed), and the setting with the best mean PSNR is reported. The
chosen values are copied by hand into the per-task ``default=`` dicts of the method entries in
``src/wavepatch/methods.py`` (the registry), so the defaults are explicit and reviewable; the test patient
(``data/ct``, ``../shared/data/ct/test``) is never used here.

    python benchmarks/tune_classical.py --out benchmarks/results/tune_classical.json

Results are saved after every task, and a rerun skips tasks already in the file (resumable).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from wavepatch.io import normalize_volume, read_image, resize_square
from wavepatch.methods import get_method
from wavepatch.metrics import image_metrics
from wavepatch.run import reconstruct
from wavepatch.tasks import TaskOptions, make_task

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CT_TRAIN = [SHARED / "ct" / "train" / f"A0001_B_{i:03d}.dcm" for i in (25, 45)]
MRI_VOLUME = SHARED / "mri" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
MRI_PLANES = (70, 120)  # the bundled test planes are z = 82..106
# real T1-CE brain slices of glioma patients (the test patients of mri_brain are meningioma patients)
MRI_BRAIN = [SHARED / "mri_brain" / "train" / f for f in ("1900.jpg", "2300.jpg", "2700.jpg", "3000.jpg")]

# Task settings tuned: (task name, options, label). ct-parallel is tuned on 20 and 60 views together.
SETTINGS = {
    "ct-parallel": [TaskOptions(views=20), TaskOptions(views=60)],
    "ct-fan": [TaskOptions(views=60)],
    "ct-lowdose": [TaskOptions()],
    "mri": [TaskOptions()],
    "deblur": [TaskOptions(kernel="gaussian")],
    "sr": [TaskOptions()],
    "inpaint": [TaskOptions()],
}

LAMS = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3)
GRIDS = {
    "fista-tv": {"lam": LAMS},
    "admm-tv": {"lam": LAMS},
    "l1-wavelet": {"lam": LAMS},
    "pnp-admm": {"sigma": (0.003, 0.01, 0.03), "rho": (0.003, 0.03, 0.3)},
    "red": {"sigma": (0.003, 0.01, 0.03), "lam": (0.01, 0.1, 1.0)},
}


def training_images(task: str, size: int, mri_source: str = "brain") -> list[torch.Tensor]:
    """(1, 1, size, size) unit-scale training images: CT windowed [-1000, 1000] HU, MRI by the default
    (percentile) normalisation: real brain slices (``MRI_BRAIN``), or with ``mri_source == 'template'`` two
    planes of the MNI template (the source of the defaults before the real-MRI data existed)."""
    if task == "mri" and mri_source == "brain":
        units = np.concatenate([normalize_volume(read_image(p))[0] for p in MRI_BRAIN])
    elif task == "mri":
        units = normalize_volume(read_image(MRI_VOLUME, axis=2, slices=list(MRI_PLANES)), None)[0]
    else:
        units = np.concatenate([normalize_volume(read_image(p), None)[0] for p in CT_TRAIN])
    return [torch.from_numpy(np.ascontiguousarray(resize_square(s, size), dtype=np.float32))[None, None]
            for s in units]


def evaluate(task_name: str, opts: TaskOptions, images, method: str, params: dict, size: int) -> float:
    scores = []
    for k, x in enumerate(images):
        task = make_task(task_name, size, opts, torch.Generator().manual_seed(100 + k))
        y = task.simulate(x, torch.Generator().manual_seed(200 + k))
        rec = reconstruct(task, y, method, params)
        scores.append(image_metrics(rec, x)["psnr"])
    return float(np.mean(scores))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--tasks", nargs="*", default=list(SETTINGS))
    ap.add_argument("--methods", nargs="*", default=list(GRIDS))
    ap.add_argument("--out", default="benchmarks/results/tune_classical.json")
    ap.add_argument("--mri-source", choices=("brain", "template"), default="brain",
                    help="MRI training images: real brain slices (mri_brain/train) or MNI template planes")
    ap.add_argument("--mri-accels", type=float, nargs="+", default=None,
                    help="MRI accelerations tuned together (default: the task default, x4)")
    args = ap.parse_args()
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    if args.mri_accels:
        SETTINGS["mri"] = [TaskOptions(accel=a) for a in args.mri_accels]
    for task_name in args.tasks:
        images = training_images(task_name, args.size, args.mri_source)
        for method in args.methods:
            key = f"{task_name}/{method}"
            if key in results:
                continue
            grid = GRIDS[method]
            rows = []
            t0 = time.perf_counter()
            for values in itertools.product(*grid.values()):
                params = dict(zip(grid, values, strict=True))
                score = float(np.mean([evaluate(task_name, o, images, method, params, args.size)
                                       for o in SETTINGS[task_name]]))
                rows.append({"params": params, "psnr": score})
                print(f"{key:24s} {params} {score:.2f} dB", flush=True)
            best = max(rows, key=lambda r: r["psnr"])
            default = get_method(method).resolve(task_name)
            results[key] = {"best": best, "grid": rows, "seconds": time.perf_counter() - t0,
                            "previous_default": {k: default[k] for k in grid}}
            print(f"==> {key}: best {best['params']} {best['psnr']:.2f} dB", flush=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps(results, indent=1))
            os.replace(tmp, out)
    print("\n| task | method | best parameters | mean PSNR (training) |\n|---|---|---|---|")
    for key, r in results.items():
        task_name, method = key.split("/")
        print(f"| {task_name} | {method} | {r['best']['params']} | {r['best']['psnr']:.2f} |")


if __name__ == "__main__":
    main()
