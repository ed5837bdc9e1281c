"""Pyramidal diffusion (Ryu & Ye 2022): one position-conditioned score network for several resolutions.

The network is a PaDIS patch network (:mod:`wavepatch.prior.patches`): it sees patches and their coordinates,
normalised over the whole image (pixel j of an n-pixel axis sits at (2 j + 1) / n - 1). Trained on the training
images *and* their 2x, 4x, ... box-averaged copies, it learns one score for every resolution: the coordinates say
where a patch is, and their spacing (2 / n per pixel) says at which resolution. Sampling then runs coarse to fine
(:mod:`wavepatch.sampling.pyramidal`): most steps at a low resolution, where a call costs 1 / f^2 of a
full-resolution one.

A pyramidal prior is saved as a patch prior (``PriorConfig.kind == 'patch'``) whose ``pyramid`` lists the
downsampling factors it was trained on; every patch-prior method can use it at full resolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

Tensor = torch.Tensor


def check_factors(factors: Sequence[int], size: int) -> tuple[int, ...]:
    """Factors as a sorted tuple; ValueError unless they are 1, 2, 4, ..., 2^k (each level half the previous,
    as the coarse-to-fine sampler upsamples by 2) and 2^k divides ``size``."""
    fs = tuple(sorted(int(f) for f in factors))
    if not fs or fs != tuple(2**i for i in range(len(fs))):
        raise ValueError(f"pyramid factors must be 1, 2, 4, ... (each level half the previous), got "
                         f"{tuple(factors)}")
    if size % fs[-1]:
        raise ValueError(f"image size {size} must be a multiple of the largest pyramid factor {fs[-1]}")
    return fs


def box_downsample(x: Tensor, factor: int) -> Tensor:
    """Mean over factor x factor blocks: (B, C, H, W) -> (B, C, H / factor, W / factor). Keeps intensities
    (air stays 0, tissue keeps its value), so every level is in the same [0, 1] units."""
    return x if factor == 1 else F.avg_pool2d(x, factor)


def pyramid_levels(images: Tensor, factors: Sequence[int]) -> list[Tensor]:
    """The training images (S, 1, N, N) box-averaged by each factor: [(S, 1, N / f, N / f) for f in factors]."""
    return [box_downsample(images, f) for f in factors]
