"""What the torch ray transforms (:mod:`~wavepatch.physics.ray_free`) and their compiled CPU kernels
(:mod:`~wavepatch.physics.ray_kernels`, numba) share, so that neither imports the other: the dtypes the kernels
handle, and the pixel-to-detector map of the pixel-driven (FBP) back-projection, written once as plain arithmetic
that numba compiles and torch broadcasts."""

from __future__ import annotations

import torch

# the dtypes the compiled kernels load and store (ray_free sends only these to ray_kernels)
COMPILED_DTYPES = (torch.float32, torch.float64)


def pixel_detector_index(dr, dc, cos, sin, offset, r_src, du):
    """(t, w): the continuous detector index t of a pixel centre at offsets (dr, dc) (rows, columns, pixels) from
    the rotation centre, for a view at angle with (cos, sin), and its back-projection weight w. Parallel beam
    (r_src = 0): t = dc cos - dr sin + offset, w = 1. Fan beam, on the virtual detector through the centre (spacing
    ``du``): t = r_src across / (r_src - along) / du + offset, w = 1 / U^2 with U = (r_src - along) / r_src. Plain
    arithmetic: floats (the compiled kernel of ``ray_kernels`` compiles this very function) or broadcasting
    tensors (the torch back-projection and the FBP matrices)."""
    if r_src > 0:
        along = dc * cos + dr * sin  # towards the source
        across = dr * cos - dc * sin
        u = (r_src - along) / r_src
        return r_src * across / (r_src - along) / du + offset, 1.0 / (u * u)
    return dc * cos - dr * sin + offset, 1.0


__all__ = ["COMPILED_DTYPES", "pixel_detector_index"]
