"""In-memory data set of normalised, square 2-D slices, with uniform random patch sampling."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from wavepatch.io.atomic import PathLike
from wavepatch.io.readers import (
    NIFTI_SUFFIXES,
    PILLOW_SUFFIXES,
    ImageReadError,
    _suffix,
    find_dicom_series,
    read_image,
)
from wavepatch.io.transforms import normalize_volume, resize_square

_IMAGE_SUFFIXES = (*NIFTI_SUFFIXES, *PILLOW_SUFFIXES, ".npy")


def _volume_specs(source: PathLike) -> list[tuple[Path, str | None]]:
    """(path, SeriesInstanceUID or None) for every volume a file or folder holds.

    A folder contributes each DICOM series directly inside it, plus each NIfTI/image/.npy file directly
    inside it; other files (README, ...), hidden files and subfolders are ignored.
    """
    path = Path(source)
    if not path.is_dir():
        return [(path, None)]
    specs: list[tuple[Path, str | None]] = [(path, uid) for uid in find_dicom_series(path)]
    for entry in sorted(path.iterdir()):
        if entry.is_file() and not entry.name.startswith(".") and _suffix(entry) in _IMAGE_SUFFIXES:
            specs.append((entry, None))
    return specs


class SliceDataset(torch.utils.data.Dataset):
    """All slices of some images, normalised to [0, 1] and resized to size x size, held as one tensor.

    sources: a file or folder, or a list of them; anything ``read_image`` reads. A folder contributes every
        DICOM series directly inside it (a folder with two reconstructions of one scan gives two volumes) and
        every NIfTI/PNG/JPEG/TIFF/.npy file directly inside it.
    size: N, the side of the square slices (``resize_square``: pad to square with the volume minimum, then
        antialiased bilinear resize).
    window: (lo, hi) intensity window applied to every volume (HU for CT); default: ``DEFAULT_CT_WINDOW``
        for CT volumes, min-max over the volume for others (``normalize_volume``).
    axis, kind: passed to ``read_image`` (NIfTI slicing axis; kind override).

    Attributes: ``images`` float32 tensor (S, 1, N, N) on the CPU; ``volumes`` one dict per volume with
    'source', 'series', 'kind', 'first_slice', 'n_slices', 'shape' (S, H, W before resizing), 'spacing'
    (mm, before resizing) and 'normalization' (the ``normalize_volume`` info, for ``denormalize``).
    Indexing gives one slice, (1, N, N).
    """

    def __init__(
        self,
        sources: PathLike | Sequence[PathLike],
        size: int,
        window: tuple[float, float] | None = None,
        axis: int = 2,
        kind: str | None = None,
    ) -> None:
        if isinstance(sources, (str, Path)) or not isinstance(sources, Sequence):
            sources = [sources]
        specs = [spec for source in sources for spec in _volume_specs(source)]
        if not specs:
            raise ImageReadError(f"no readable images in {', '.join(str(s) for s in sources)}")
        stacks, self.volumes = [], []
        first = 0
        for path, series in specs:
            volume = read_image(path, axis=axis, kind=kind, series=series)
            unit, info = normalize_volume(volume, window)
            stacks.append(resize_square(unit, size))
            self.volumes.append(
                {
                    "source": str(path),
                    "series": series,
                    "kind": volume.kind,
                    "first_slice": first,
                    "n_slices": volume.data.shape[0],
                    "shape": tuple(volume.data.shape),
                    "spacing": volume.spacing,
                    "normalization": info,
                }
            )
            first += volume.data.shape[0]
        self.size = size
        self.images = torch.from_numpy(np.concatenate(stacks)).unsqueeze(1)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        """Slice ``index`` as a (1, N, N) float32 tensor in [0, 1]."""
        return self.images[index]

    def random_patches(
        self,
        n: int,
        patch_size: int,
        generator: torch.Generator | None = None,
        pad: int = 0,
        flip: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw n patches uniformly over all slices, each slice zero-padded by ``pad`` pixels on every side.

        Returns (patches (n, 1, P, P) float32, positions (n, 2) int64): positions are the (row, column) of
        each patch's top-left pixel in the padded frame (N + 2 pad square), uniform over 0..N + 2 pad - P; the
        slice is uniform over all S slices. Padding is zero, which is air for the default CT window and
        background for min-max MRI, so patches may hang over the image edge as they do at sampling time.
        flip: also flip each patch left-right and/or up-down, each with probability 1/2 (augmentation; it
        breaks anatomical left/right, so keep it off when that matters).
        """
        s_count, _, n_pix, _ = self.images.shape
        frame = n_pix + 2 * pad
        if pad < 0 or not 1 <= patch_size <= frame:
            raise ValueError(f"patch_size {patch_size} must be in 1..{frame} (size {n_pix} + 2 * pad {pad})")
        which = torch.randint(0, s_count, (n,), generator=generator)
        positions = torch.randint(0, frame - patch_size + 1, (n, 2), generator=generator)
        # Gather with clamped indices and zero what falls in the padding: no padded copy of the data set.
        offsets = torch.arange(patch_size)
        rows = positions[:, 0, None] + offsets - pad  # (n, P) in the unpadded slice
        cols = positions[:, 1, None] + offsets - pad
        inside = ((rows >= 0) & (rows < n_pix))[:, :, None] & ((cols >= 0) & (cols < n_pix))[:, None, :]
        slices = self.images[:, 0]
        patches = slices[
            which[:, None, None], rows.clamp(0, n_pix - 1)[:, :, None], cols.clamp(0, n_pix - 1)[:, None, :]
        ]
        patches = torch.where(inside, patches, torch.zeros((), dtype=patches.dtype))
        if flip:
            flip_lr, flip_ud = torch.rand((2, n), generator=generator) < 0.5
            patches = torch.where(flip_lr[:, None, None], patches.flip(-1), patches)
            patches = torch.where(flip_ud[:, None, None], patches.flip(-2), patches)
        return patches.unsqueeze(1), positions
