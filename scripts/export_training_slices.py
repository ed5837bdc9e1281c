"""Export training slices as a NumPy stack that `wavepatch train` reads like the original files.

Used to carry training data to a machine that cannot see ../shared/data (the lent GPU machine): the export is
produced by the data layer itself, so training from it is training on the same slices.

    python scripts/export_training_slices.py ct ../shared/data/ct/train .gpu/ct_train_hu256.npy --size 256
    python scripts/export_training_slices.py mri ../shared/data/mri/<template>.nii.gz .gpu/mri_train.npy \
        --size 256 --exclude 70 120

ct: every DICOM series in the folder, windowed to [-1000, 1000] HU and resized to size x size exactly as
``SliceDataset`` does, stored back in HU (float16: 0.5 HU steps), so training with ``--window -1000 1000``
sees the same unit images. mri: axial planes (axis 2) of a NIfTI volume holding brain, excluding the planes
``--exclude LO HI`` (the evaluation planes), min-max normalised over the volume, stored in [0, 1] (float16).
"""

from __future__ import annotations

import argparse

import numpy as np

from wavepatch.io import SliceDataset, save_npy
from wavepatch.io.readers import read_image
from wavepatch.io.transforms import normalize_volume, resize_square


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=("ct", "mri"))
    p.add_argument("source")
    p.add_argument("out")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--exclude", type=int, nargs=2, default=None, metavar=("LO", "HI"))
    args = p.parse_args()
    if args.kind == "ct":
        ds = SliceDataset(args.source, size=args.size, window=(-1000.0, 1000.0))
        stack = ds.images[:, 0].numpy() * 2000.0 - 1000.0
    else:
        vol = read_image(args.source, axis=2)
        unit, _ = normalize_volume(vol, None)
        z = np.arange(unit.shape[0])
        keep = unit.reshape(unit.shape[0], -1).mean(axis=1) > 0.05  # planes with brain in them
        if args.exclude:
            keep &= (z < args.exclude[0]) | (z > args.exclude[1])
        stack = resize_square(unit[keep], args.size)
    save_npy(args.out, stack.astype(np.float16))
    print(f"{stack.shape[0]} slices {stack.shape[1:]} -> {args.out} (range {stack.min():.1f} .. {stack.max():.1f})")


if __name__ == "__main__":
    main()
