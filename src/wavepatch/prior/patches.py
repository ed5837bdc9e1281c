"""Whole-image denoising from a patch denoiser (PaDIS), and the two patch baselines, for images and volumes.

Layout (PaDIS, Hu et al. 2024), per axis: an n-pixel axis, patch side p, K = n // p + 1 patches, M = K p - n.
The image is zero-padded by M on both sides of every axis; a grid offset (a_1, ..., a_d), a_i in {0..M_i}, picks
K_1 x ... x K_d non-overlapping patches starting at (a_1 + j_1 p_1, ...). They tile a window of K_i p_i per axis
that always contains the image, so every pixel (voxel) is denoised exactly once; drawing a new offset at every
step moves the seams. Patches are denoised as one batch, row-major over the grid. Images are (B, C, H, W) or
volumes (B, C, D, H, W), any size per axis; a patch size is an int (the same on every axis) or one per axis.

Positions: each patch carries d extra channels, channel i holding the coordinate along axis i of each of its
pixels, normalised over the *unpadded* image: pixel j of an n-pixel axis has coordinate (2 j + 1) / n - 1, so the
image spans [-1, 1] and the zero border lies outside. Unlike the official code (coordinates over the padded
frame), this frame does not change with the padding, so training pad and inference pad need not match.

The padding is air (zero). At noise level sigma the sampler's state in the border would be 0 + sigma z, so the
border is filled with fresh N(0, sigma^2) noise before cutting patches: the network sees what it was trained on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from wavepatch.shapes import Size, axis_view, per_axis

Tensor = torch.Tensor
PatchNet = Callable[[Tensor, Tensor, Tensor], Tensor]  # (patches, sigma (n,), positions (n, d, *P)) -> denoised
Draw = Callable[[tuple, "torch.Generator | None", Tensor], Tensor]  # (shape, generator, like) -> N(0, 1) block


def patch_layout(n: int, p: int) -> tuple[int, int]:
    """(K, M): patches per axis and padding for an n-pixel axis and patch side p (K = n // p + 1, M = K p - n)."""
    if p < 1 or n < 1:
        raise ValueError(f"image size {n} and patch size {p} must be positive")
    k = n // p + 1
    return k, k * p - n


def grid_layout(shape: Sequence[int], p: Size) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(K, M) per axis for an image of spatial ``shape`` and patch size ``p``: two d-tuples."""
    ps = per_axis(p, len(shape), "patch size")
    layout = [patch_layout(int(n), q) for n, q in zip(shape, ps, strict=True)]
    return tuple(k for k, _ in layout), tuple(m for _, m in layout)


def position_channels(indices: Sequence[Tensor], sizes: Size) -> Tensor:
    """Coordinate channels for patches whose pixels sit at the given image indices (may be outside 0..n-1).

    indices: d integer tensors (B, P_i), the pixel indices along axis i of the unpadded image; sizes: n_i, the
    image size per axis (an int: the same on every axis). Returns (B, d, P_1, ..., P_d) float32, channel i the
    coordinate along axis i, (2 j + 1) / n_i - 1.
    """
    d = len(indices)
    ns = per_axis(sizes, d)
    shape = [t.shape[1] for t in indices]
    chans = [axis_view((2 * t.float() + 1) / n - 1, i, d).expand(-1, *shape)
             for i, (t, n) in enumerate(zip(indices, ns, strict=True))]
    return torch.stack(chans, dim=1)


def _grid_indices(per_axis_idx: Sequence[Tensor]) -> list[Tensor]:
    """Per-axis indices (K_i, P_i) of a grid's patches -> d tensors (K_1 ... K_d, P_i), row-major over the grid."""
    counts = [t.shape[0] for t in per_axis_idx]
    grid = torch.meshgrid(*[torch.arange(k, device=t.device) for k, t in zip(counts, per_axis_idx, strict=True)],
                          indexing="ij")
    return [t[g.reshape(-1)] for t, g in zip(per_axis_idx, grid, strict=True)]


def grid_positions(size: Size, p: Size, shift: Sequence[int], batch: int, device=None) -> Tensor:
    """Position channels of the K_1 x ... x K_d grid at offset ``shift`` (one entry per axis) for ``batch``
    images of spatial ``size``: (batch prod K, d, *P)."""
    d = len(shift)
    sizes, ps = per_axis(size, d), per_axis(p, d, "patch size")
    ks, ms = grid_layout(sizes, ps)
    idx = []
    for k, m, q, s in zip(ks, ms, ps, shift, strict=True):
        start = torch.arange(k, device=device) * q - m  # patch starts in image coordinates (padding offset removed)
        idx.append(start[:, None] + s + torch.arange(q, device=device))  # (K, P)
    pos = position_channels(_grid_indices(idx), sizes)
    return pos.repeat(batch, *[1] * (d + 1))


def extract_patches(window: Tensor, p: Size) -> Tensor:
    """(B, C, K_1 P_1, ..., K_d P_d) -> (B prod K, C, P_1, ..., P_d), row-major over the grid."""
    b, c, *spatial = window.shape
    d = len(spatial)
    ps = per_axis(p, d, "patch size")
    ks = [s // q for s, q in zip(spatial, ps, strict=True)]
    if any(k * q != s for k, q, s in zip(ks, ps, spatial, strict=True)):
        raise ValueError(f"window {tuple(spatial)} is not a whole number of {ps} patches")
    x = window.reshape(b, c, *[v for k, q in zip(ks, ps, strict=True) for v in (k, q)])
    x = x.permute(0, *range(2, 2 + 2 * d, 2), 1, *range(3, 3 + 2 * d, 2))
    return x.reshape(b * math.prod(ks), c, *ps)


def stitch_patches(patches: Tensor, batch: int, k: Size) -> Tensor:
    """Inverse of ``extract_patches``: (B prod K, C, *P) -> (B, C, K_1 P_1, ..., K_d P_d); k per axis or an int."""
    _, c, *ps = patches.shape
    d = len(ps)
    ks = per_axis(k, d, "patches per axis")
    x = patches.reshape(batch, *ks, c, *ps)
    x = x.permute(0, d + 1, *[v for i in range(d) for v in (1 + i, d + 2 + i)])
    return x.reshape(batch, c, *[kk * q for kk, q in zip(ks, ps, strict=True)])


def _crop(x: Tensor, starts: Sequence[int], sizes: Sequence[int]) -> Tensor:
    """x[:, :, s_1:s_1 + n_1, ..., s_d:s_d + n_d]."""
    return x[(slice(None), slice(None), *[slice(s, s + n) for s, n in zip(starts, sizes, strict=True)])]


def pad_with_noise(x: Tensor, m: Size, sigma: Tensor, generator: torch.Generator | None = None,
                   draw: Draw | None = None) -> Tensor:
    """Zero-pad (B, C, *spatial) by m (per axis or an int) on both sides, the border filled with N(0, sigma^2)
    (sigma scalar or (B,)); ``draw`` (default: plain draws) makes the standard normal block."""
    b, c, *spatial = x.shape
    ms = per_axis(m, len(spatial), "padding")
    noise = (draw or _randn)((b, c, *[n + 2 * mm for n, mm in zip(spatial, ms, strict=True)]), generator, x)
    out = noise * sigma.reshape(-1, *[1] * (x.ndim - 1)).to(x.dtype) if sigma.ndim else noise * sigma.to(x.dtype)
    _crop(out, ms, spatial)[...] = x
    return out


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    if generator is None:
        return torch.randn(shape, device=like.device, dtype=like.dtype)
    return torch.randn(shape, generator=generator, device=generator.device).to(like.device, like.dtype)


def sliced_draw(total: int, lo: int, hi: int) -> Draw:
    """Draws for items lo..hi of a batch of ``total``: the whole batch's block is drawn and cut, so a shard of
    a batch (one process of a sharded volume) gets the very numbers the whole batch would, and the generator
    stays in step across processes."""
    def draw(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
        if shape[0] != hi - lo:
            raise ValueError(f"this draw is for a shard of {hi - lo} items, got a batch of {shape[0]}")
        return _randn((total, *shape[1:]), generator, like)[lo:hi]
    return draw


def _sigma_vector(sigma: Tensor | float, b: int, device) -> Tensor:
    sigma = torch.as_tensor(sigma, dtype=torch.float32, device=device)
    return sigma.expand(b) if sigma.ndim == 0 else sigma.reshape(b)


def _run_batched(net: PatchNet, patches: Tensor, sigma: Tensor, pos: Tensor, chunk: int | None) -> Tensor:
    if chunk is None or patches.shape[0] <= chunk:
        return net(patches, sigma, pos)
    outs = [net(patches[i:i + chunk], sigma[i:i + chunk], pos[i:i + chunk]) for i in range(0, patches.shape[0], chunk)]
    return torch.cat(outs)


def denoise_shifted_grid(net: PatchNet, x: Tensor, sigma: Tensor | float, p: Size, shift: Sequence[int],
                         generator: torch.Generator | None = None, chunk: int | None = None,
                         draw: Draw | None = None) -> Tensor:
    """Denoise (B, C, *spatial) with non-overlapping patches of size ``p`` on the grid at offset ``shift``,
    shift_i in {0..M_i}. Returns (B, C, *spatial). ``chunk``: most patches per network call (memory); None = all."""
    b, _, *spatial = x.shape
    d = len(spatial)
    ps = per_axis(p, d, "patch size")
    ks, ms = grid_layout(spatial, ps)
    if len(shift) != d or not all(0 <= s <= m for s, m in zip(shift, ms, strict=True)):
        raise ValueError(f"shift {tuple(shift)} outside 0..{ms}")
    sig = _sigma_vector(sigma, b, x.device)
    padded = pad_with_noise(x, ms, sig, generator, draw)
    window = _crop(padded, shift, [k * q for k, q in zip(ks, ps, strict=True)])
    patches = extract_patches(window, ps)
    pos = grid_positions(spatial, ps, shift, b, device=x.device)
    out = _run_batched(net, patches, sig.repeat_interleave(math.prod(ks)), pos, chunk)
    stitched = stitch_patches(out, b, ks)
    return _crop(stitched, [m - s for m, s in zip(ms, shift, strict=True)], spatial)  # image origin in the window


def denoise_random_shift(net: PatchNet, x: Tensor, sigma: Tensor | float, p: Size,
                         generator: torch.Generator | None = None, chunk: int | None = None,
                         draw: Draw | None = None) -> Tensor:
    """PaDIS: one grid offset drawn uniformly from {0..M_1} x ... x {0..M_d} per call (shared by the batch)."""
    _, ms = grid_layout(x.shape[2:], p)
    device = generator.device if generator else "cpu"
    if len(set(ms)) == 1:  # one draw for all axes (the stream of square images)
        shift = torch.randint(0, ms[0] + 1, (len(ms),), generator=generator, device=device)
    else:
        shift = torch.cat([torch.randint(0, m + 1, (1,), generator=generator, device=device) for m in ms])
    return denoise_shifted_grid(net, x, sigma, p, tuple(int(s) for s in shift), generator, chunk, draw)


def denoise_fixed_grid(net: PatchNet, x: Tensor, sigma: Tensor | float, p: Size,
                       generator: torch.Generator | None = None, chunk: int | None = None,
                       draw: Draw | None = None) -> Tensor:
    """Patch stitching baseline: the same grid (offset M_i // 2, centred) at every call, so seams never move."""
    _, ms = grid_layout(x.shape[2:], p)
    return denoise_shifted_grid(net, x, sigma, p, tuple(m // 2 for m in ms), generator, chunk, draw)


def denoise_overlapping(net: PatchNet, x: Tensor, sigma: Tensor | float, p: Size, overlap: Size = 8,
                        generator: torch.Generator | None = None, chunk: int | None = None,
                        draw: Draw | None = None) -> Tensor:
    """Patch averaging baseline: patches of size p at stride p - overlap (per axis) covering the image, outputs
    averaged. (B, C, *spatial) -> (B, C, *spatial)."""
    b, c, *spatial = x.shape
    d = len(spatial)
    ps, overlaps = per_axis(p, d, "patch size"), per_axis(overlap, d, "overlap")
    idx, frames, los = [], [], []
    for n, q, o in zip(spatial, ps, overlaps, strict=True):
        stride = q - o
        if stride < 1:
            raise ValueError(f"overlap {o} must be smaller than the patch size {q}")
        count = max(1, -(-(n - q) // stride) + 1) if n > q else 1
        frame = max(q, (count - 1) * stride + q)
        frames.append(frame)
        los.append((frame - n) // 2)  # pad total frame - n, split between both sides
        idx.append((torch.arange(count, device=x.device) * stride)[:, None] + torch.arange(q, device=x.device))
    idx = _grid_indices(idx)  # d tensors (count, P_i): frame coordinates of every patch, row-major
    count = idx[0].shape[0]
    sig = _sigma_vector(sigma, b, x.device)
    noise = (draw or _randn)((b, c, *frames), generator, x)
    padded = noise * sig.reshape(-1, *[1] * (d + 1)).to(x.dtype)
    _crop(padded, los, spatial)[...] = x
    views = [axis_view(t, i, d) for i, t in enumerate(idx)]  # broadcast to (count, *P)
    patches = padded[(slice(None), slice(None), *views)]  # (B, C, count, *P)
    patches = patches.transpose(1, 2).reshape(b * count, c, *ps)
    pos = position_channels([t - lo for t, lo in zip(idx, los, strict=True)], spatial).repeat(b, *[1] * (d + 1))
    out = _run_batched(net, patches, sig.repeat_interleave(count), pos, chunk)
    out = out.reshape(b, count, c, *ps).transpose(1, 2)
    acc = torch.zeros((b, c, *frames), device=x.device, dtype=out.dtype)
    weight = torch.zeros(tuple(frames), device=x.device, dtype=out.dtype)
    strides = [math.prod(frames[i + 1:]) for i in range(d)]
    flat_index = sum(v * s for v, s in zip(views, strides, strict=True)).reshape(-1)
    acc.view(b, c, -1).index_add_(2, flat_index, out.reshape(b, c, -1))
    weight.view(-1).index_add_(0, flat_index, torch.ones_like(flat_index, dtype=out.dtype))
    return _crop(acc / weight, los, spatial)
