"""Check the feature-space 1-NNA of ``eval-samples`` on known cases with real MRI slices (no training).

Sets of 200 slices at 128²: training vs other training slices (same distribution: ~50 %), training vs test
(other patients), the spectral-noise baseline and 3x3-blurred slices vs training (~100 %).
Run: ``python benchmarks/feature_nna.py [--data ../shared/data/mri_brain]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from wavepatch.metrics.generation import one_nna_features, spectral_noise_baseline

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mri_brain"


def _load(folder: Path, n: int, seed: int, size: int) -> np.ndarray:
    files = sorted(folder.glob("*.jpg"))
    pick = np.random.default_rng(seed).choice(len(files), n, replace=False)
    return np.stack([np.asarray(Image.open(files[i]).convert("L").resize((size, size), Image.BILINEAR),
                                np.float32) / 255 for i in pick])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--size", type=int, default=128)
    args = ap.parse_args(argv)
    train = _load(Path(args.data) / "train", 2 * args.n, 0, args.size)
    test = _load(Path(args.data) / "test", args.n, 1, args.size)
    a, b = train[: args.n], train[args.n:]
    blurred = torch.nn.functional.avg_pool2d(torch.from_numpy(a)[:, None], 3, 1, 1)[:, 0].numpy()
    rows = [("training vs other training slices", a, b), ("training vs test slices", a, test),
            ("spectral-noise baseline vs training", spectral_noise_baseline(a, args.n), b),
            ("3x3-blurred training vs training", blurred, b)]
    print("| set A vs set B | 1-NNA |\n|---|---|")
    for name, x, y in rows:
        print(f"| {name} | {100 * one_nna_features(x, y):.1f} % |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
