"""Pick the wavelet-regularised Langevin defaults (Wu et al.) on training slices, never on test slices.

    python benchmarks/tune_wavelet_langevin.py                      # priors of benchmarks/noisy_data.py, ~10 min CPU
    python benchmarks/tune_wavelet_langevin.py --prior noisy --slices 2 --out benchmarks/results/tune_wavelet_langevin

Uses the priors that ``benchmarks/noisy_data.py --train-only`` (or a full run) left in ``--work`` (the variant
``--prior``, default "noisy": the case the sampler is meant for). The slices are training slices: CT from
../shared/data/ct/train (patient A0001, the same HU window), MRI from the template planes outside z = 70..120
(``mri_train<size>.npy`` in ``--work``). The tasks and seeds are those of noisy_data.py (low-dose CT, 20-view CT,
x4 Gaussian-mask MRI). One sweep of coordinate search over eps, omega, beta, lam, tau, starting from the current
defaults of the ``wavelet-langevin`` entry in ``src/wavepatch/methods.py`` (where picked values go, with the
signature defaults of :func:`wavelet_regularized_langevin`); the objective is the mean PSNR over all tasks and slices
(one set of defaults for every task). Writes results.md / results.json to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from noisy_data import CT_WINDOW, SHARED, TASKS, _pick, reconstruct

from wavepatch.io import SliceDataset
from wavepatch.io.atomic import atomic_write_bytes
from wavepatch.methods import get_method
from wavepatch.metrics import image_metrics
from wavepatch.tasks import TaskOptions, make_task

REPO = Path(__file__).resolve().parents[1]
GRID = {"eps": [0.5, 1.0, 1.5, 2.0], "omega": [0.5, 1.0, 1.5, 1.9], "beta": [0.0, 0.5, 0.8, 0.9],
        "lam": [0.0, 0.1, 0.5, 2.0, 8.0], "tau": [0.002, 0.005, 0.01, 0.02]}


def defaults() -> dict[str, float]:
    """The registry's defaults of the tuned parameters (one set for every task)."""
    entry = get_method("wavelet-langevin")
    return {k: entry.param(k).default for k in GRID}


def training_slices(modality: str, args) -> list[tuple[str, np.ndarray]]:
    if modality == "ct":
        return _pick(SliceDataset(args.ct_train, size=args.size, window=CT_WINDOW), args.slices)
    stack = np.load(Path(args.work) / f"mri_train{args.size}.npy")
    idx = np.unique(np.linspace(0, len(stack) - 1, args.slices + 2).round().astype(int))[1:-1]  # skip the ends
    return [(f"mri_train[{i}]", stack[i]) for i in idx]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default=str(REPO / "runs" / "noisy_data"))
    p.add_argument("--prior", default="noisy", help="variant of noisy_data.py: clean, noisy, noisy_wavelet")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--slices", type=int, default=2)
    p.add_argument("--ct-train", default=str(SHARED / "ct" / "train"))
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--n-inner", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "tune_wavelet_langevin"))
    args = p.parse_args(argv)
    args.sampler = "wavelet-langevin"
    t0 = time.perf_counter()
    problems = []  # (task label, modality, prior path, task, y, x)
    for label, task_name, options, modality in TASKS:
        prior = Path(args.work) / f"{modality}_{args.prior.replace(' + ', '_').replace(' ', '_')}" / "prior.safetensors"
        if not prior.exists():
            raise SystemExit(f"no prior {prior}: run benchmarks/noisy_data.py --train-only first")
        for name, img in training_slices(modality, args):
            x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None, None]
            task = make_task(task_name, img.shape[-1], TaskOptions(**options),
                             torch.Generator().manual_seed(args.seed))
            y = task.simulate(x, torch.Generator().manual_seed(args.seed + 1))
            problems.append((label, name, str(prior), task, y, x))
    cache: dict[tuple, dict[str, float]] = {}

    def score(params: dict) -> float:
        key = tuple(sorted(params.items()))
        if key not in cache:
            per_task: dict[str, list[float]] = {}
            for label, _, prior, task, y, x in problems:
                r = reconstruct(prior, task, y, args, "cpu", params)
                per_task.setdefault(label, []).append(image_metrics(r, x)["psnr"])
            cache[key] = {k: float(np.mean(v)) for k, v in per_task.items()}
            print(json.dumps({**params, **{k: round(v, 2) for k, v in cache[key].items()},
                              "mean": round(float(np.mean(list(cache[key].values()))), 2)}), flush=True)
        return float(np.mean(list(cache[key].values())))

    start = defaults()
    best = dict(start)
    for name, values in GRID.items():
        scores = {v: score({**best, name: v}) for v in values}
        best[name] = max(scores, key=scores.get)
    rows = [{**dict(k), **v, "mean": float(np.mean(list(v.values())))} for k, v in cache.items()]
    labels = [t for t, *_ in TASKS]
    lines = [f"# wavelet-regularised Langevin: defaults picked on training slices ({args.prior} prior, "
             f"{args.size}², {args.slices} slice(s) per task, {args.steps} levels × {args.n_inner})", "",
             f"start (the defaults when run): {start} -> mean {score(start):.2f} dB", "",
             f"best: {best} -> mean {score(best):.2f} dB ({(time.perf_counter() - t0) / 60:.1f} min)", "",
             "| " + " | ".join(GRID) + " | " + " | ".join(labels) + " | mean |",
             "|---" * (len(GRID) + len(labels) + 1) + "|"]
    for r in sorted(rows, key=lambda r: -r["mean"]):
        lines.append("| " + " | ".join(f"{r[k]:g}" for k in GRID) + " | "
                     + " | ".join(f"{r.get(t, float('nan')):.2f}" for t in labels) + f" | {r['mean']:.2f} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    md = "\n".join(lines) + "\n"
    atomic_write_bytes(out / "results.md", md.encode())
    atomic_write_bytes(out / "results.json", (json.dumps({"args": vars(args), "start": start, "best": best,
                                                         "rows": rows}, indent=2) + "\n").encode())
    print(md)


if __name__ == "__main__":
    main()
