"""In-memory data sets of normalised images: square 2-D slices (``SliceDataset``) or whole 3-D volumes
(``VolumeDataset``), with uniform random patch sampling in any number of dimensions (``random_patches``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from wavepatch.io.atomic import PathLike
from wavepatch.io.image_stack import file_suffix
from wavepatch.io.readers import (
    NIFTI_SUFFIXES,
    PILLOW_SUFFIXES,
    ImageReadError,
    find_dicom_series,
    read_image,
)
from wavepatch.io.transforms import normalize_volume, resize_square
from wavepatch.shapes import axis_view, per_axis

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
        if entry.is_file() and not entry.name.startswith(".") and file_suffix(entry) in _IMAGE_SUFFIXES:
            specs.append((entry, None))
    return specs


def _all_specs(sources: PathLike | Sequence[PathLike]) -> list[tuple[Path, str | None]]:
    """``_volume_specs`` of one source or of each of a list of them; ImageReadError if there are none."""
    if isinstance(sources, (str, Path)) or not isinstance(sources, Sequence):
        sources = [sources]
    specs = [spec for source in sources for spec in _volume_specs(source)]
    if not specs:
        raise ImageReadError(f"no readable images in {', '.join(str(s) for s in sources)}")
    return specs


def volume_slice_counts(sources: PathLike | Sequence[PathLike], axis: int = 2) -> list[int]:
    """Slices of every volume in ``sources`` (each DICOM series, NIfTI file, ...), as ``VolumeDataset`` reads them."""
    return [int(read_image(path, axis=axis, series=series).data.shape[0]) for path, series in _all_specs(sources)]


def random_patches(
    images: torch.Tensor,
    n: int,
    patch_size: int | Sequence[int],
    generator: torch.Generator | None = None,
    pad: int | Sequence[int] = 0,
    flip: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw n patches uniformly from images (S, 1, *spatial), each zero-padded by ``pad`` on both sides per axis.

    patch_size, pad: an int (every axis) or one per axis. Returns (patches (n, 1, *P) float32, positions (n, d)
    int64): the index of each patch's first pixel along every axis in the padded frame (n_i + 2 pad_i), uniform
    over 0..n_i + 2 pad_i - P_i; the image is uniform over all S. The draws: the image index, then the positions
    in one call when every axis has the same range (square 2-D slices), else one call per axis.
    flip: also mirror each patch along each axis with probability 1/2 (axis -1, then -2, ...).
    """
    s_count, _, *spatial = images.shape
    d = len(spatial)
    ps, pads = per_axis(patch_size, d, "patch_size"), per_axis(pad, d, "pad")
    frames = [m + 2 * q for m, q in zip(spatial, pads, strict=True)]
    if min(pads) < 0 or not all(1 <= p <= f for p, f in zip(ps, frames, strict=True)):
        raise ValueError(f"patch_size {patch_size} must be in 1..{tuple(frames)} (size {tuple(spatial)} + 2 * pad "
                         f"{pad})")
    which = torch.randint(0, s_count, (n,), generator=generator)
    highs = [f - p + 1 for f, p in zip(frames, ps, strict=True)]
    if len(set(highs)) == 1:
        positions = torch.randint(0, highs[0], (n, d), generator=generator)
    else:
        positions = torch.stack([torch.randint(0, h, (n,), generator=generator) for h in highs], dim=1)
    # Gather with clamped indices and zero what falls in the padding: no padded copy of the data set.
    idx = [positions[:, i, None] + torch.arange(p) - q for i, (p, q) in enumerate(zip(ps, pads, strict=True))]
    inside = torch.ones((), dtype=torch.bool)
    for i, (t, m) in enumerate(zip(idx, spatial, strict=True)):
        inside = inside & axis_view((t >= 0) & (t < m), i, d)  # (n, *P)
    gather = [axis_view(t.clamp(0, m - 1), i, d) for i, (t, m) in enumerate(zip(idx, spatial, strict=True))]
    patches = images[:, 0][(which.reshape(n, *[1] * d), *gather)]
    patches = torch.where(inside, patches, torch.zeros((), dtype=patches.dtype))
    if flip:
        for i, f in enumerate(torch.rand((d, n), generator=generator) < 0.5):
            patches = torch.where(f.reshape(n, *[1] * d), patches.flip(-1 - i), patches)
    return patches.unsqueeze(1), positions


def resize_volume(volume: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Resize (D, H, W) to ``size`` (D', H', W') float32: antialiased bilinear in each slice, then antialiased
    linear along D (separable; trilinear when upsampling). Sizes are matched by voxel areas (align_corners False)."""
    d, h, w = size
    x = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))
    with torch.no_grad():
        x = torch.nn.functional.interpolate(x[:, None], size=(h, w), mode="bilinear", antialias=True,
                                            align_corners=False)[:, 0]
        x = torch.nn.functional.interpolate(x.reshape(1, 1, x.shape[0], h * w), size=(d, h * w), mode="bilinear",
                                            antialias=True, align_corners=False)
    return x.reshape(d, h, w).numpy()


class _InMemory(torch.utils.data.Dataset):
    """A data set held as one tensor ``images`` (S, 1, *spatial): indexing and uniform random patches."""

    images: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        """Item ``index`` (1, *spatial), float32 in [0, 1]."""
        return self.images[index]

    def random_patches(
        self,
        n: int,
        patch_size: int | Sequence[int],
        generator: torch.Generator | None = None,
        pad: int | Sequence[int] = 0,
        flip: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw n patches uniformly over all items, each zero-padded by ``pad`` on every side: (patches
        (n, 1, *P) float32, positions (n, d) int64 of each patch's first pixel in the padded frame, uniform over
        0..N + 2 pad - P per axis). Padding is zero, which is air for the default CT window and background for
        percentile-normalised MRI, so patches may hang over the image edge as they do at sampling time. flip:
        also mirror each patch along each axis with probability 1/2 (augmentation; it breaks anatomical
        left/right, so keep it off when that matters). See ``random_patches``."""
        return random_patches(self.images, n, patch_size, generator, pad, flip)


class SliceDataset(_InMemory):
    """All slices of some images, normalised to [0, 1] and resized to size x size, held as one tensor.

    sources: a file or folder, or a list of them; anything ``read_image`` reads. A folder contributes every
        DICOM series directly inside it (a folder with two reconstructions of one scan gives two volumes) and
        every NIfTI/PNG/JPEG/TIFF/.npy file directly inside it.
    size: N, the side of the square slices (``resize_square``: pad to square with the volume minimum, then
        antialiased bilinear resize).
    window: (lo, hi) intensity window applied to every volume (HU for CT); default: ``DEFAULT_CT_WINDOW``
        for CT volumes, 0 to the 99.5th percentile over the volume for others (``normalize_volume``).
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
        specs = _all_specs(sources)
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



class VolumeDataset(_InMemory):
    """Whole 3-D volumes, normalised to [0, 1] as ``SliceDataset`` does and resized to ``size``, as one tensor.

    sources, window, axis, kind: as for ``SliceDataset``; a volume's slices (along ``axis`` for NIfTI) are its
        first axis D. Every volume needs at least 2 slices.
    size: (D, H, W) after resizing, or an int for a cube (``resize_volume``: separable antialiased linear; no
        padding, so each axis is scaled on its own).

    Attributes: ``images`` float32 tensor (V, 1, D, H, W) on the CPU; ``size`` the (D, H, W) tuple; ``volumes``
    one dict per volume with 'source', 'series', 'kind', 'shape' (S, H, W before resizing), 'spacing' and
    'normalization' (as ``SliceDataset``). Indexing gives one volume, (1, D, H, W).
    """

    def __init__(
        self,
        sources: PathLike | Sequence[PathLike],
        size: int | Sequence[int],
        window: tuple[float, float] | None = None,
        axis: int = 2,
        kind: str | None = None,
    ) -> None:
        self.size = per_axis(size, 3, "size")
        if min(self.size) < 1:
            raise ValueError(f"volume size {self.size} must be positive")
        stacks, self.volumes = [], []
        for path, series in _all_specs(sources):
            volume = read_image(path, axis=axis, kind=kind, series=series)
            if volume.data.shape[0] < 2:
                raise ImageReadError(f"{path}: a volume data set needs 3-D volumes, this one has a single slice")
            unit, info = normalize_volume(volume, window)
            stacks.append(resize_volume(unit, self.size))
            self.volumes.append({"source": str(path), "series": series, "kind": volume.kind,
                                 "shape": tuple(volume.data.shape), "spacing": volume.spacing, "normalization": info})
        self.images = torch.from_numpy(np.stack(stacks)).unsqueeze(1)
