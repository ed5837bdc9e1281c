"""Whole-image denoising from a patch denoiser (PaDIS), and the two patch baselines.

Layout (PaDIS, Hu et al. 2024): an N x N image, patch side P, K = N // P + 1 patches per axis, M = K P - N.
The image is zero-padded by M on every side; a grid offset (a, b) in {0..M}^2 picks K x K non-overlapping
patches starting at (a + i P, b + j P). They tile a K P window that always contains the image, so every pixel is
denoised exactly once; drawing a new offset at every step moves the seams. Patches are denoised as one batch.

Positions: each patch carries 2 extra channels holding the (row, column) coordinate of each of its pixels,
normalised over the *unpadded* image: pixel i of an N-pixel axis has coordinate (2 i + 1) / N - 1, so the
image spans [-1, 1] and the zero border lies outside. Unlike the official code (coordinates over the padded
frame), this frame does not change with the padding, so training pad and inference pad need not match.

The padding is air (zero). At noise level sigma the sampler's state in the border would be 0 + sigma z, so the
border is filled with fresh N(0, sigma^2) noise before cutting patches: the network sees what it was trained on.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Tensor = torch.Tensor
PatchNet = Callable[[Tensor, Tensor, Tensor], Tensor]  # (patches, sigma (n,), positions (n, 2, P, P)) -> denoised


def patch_layout(n: int, p: int) -> tuple[int, int]:
    """(K, M): patches per axis and padding for an n-pixel axis and patch side p (K = n // p + 1, M = K p - n)."""
    if p < 1 or n < 1:
        raise ValueError(f"image size {n} and patch size {p} must be positive")
    k = n // p + 1
    return k, k * p - n


def position_channels(rows: Tensor, cols: Tensor, n: int) -> Tensor:
    """Coordinate channels for patches whose pixels sit at image rows/cols (may be outside 0..n-1).

    rows, cols: (B, P) integer pixel indices in the unpadded image. Returns (B, 2, P, P) float32 with
    channel 0 = row coordinate, channel 1 = column coordinate, each (2 i + 1) / n - 1.
    """
    r = (2 * rows.float() + 1) / n - 1
    c = (2 * cols.float() + 1) / n - 1
    p_r, p_c = rows.shape[1], cols.shape[1]
    return torch.stack([r[:, :, None].expand(-1, p_r, p_c), c[:, None, :].expand(-1, p_r, p_c)], dim=1)


def grid_positions(n: int, p: int, shift: tuple[int, int], batch: int, device=None) -> Tensor:
    """Position channels of the K x K grid at offset ``shift`` for ``batch`` images: (batch K K, 2, P, P)."""
    k, m = patch_layout(n, p)
    start = torch.arange(k, device=device) * p - m  # patch starts in image coordinates (padding offset removed)
    offs = torch.arange(p, device=device)
    rows = (start[:, None] + shift[0] + offs)  # (K, P)
    cols = (start[:, None] + shift[1] + offs)
    rr = rows[:, None, :].expand(k, k, p).reshape(k * k, p)
    cc = cols[None, :, :].expand(k, k, p).reshape(k * k, p)
    pos = position_channels(rr, cc, n)
    return pos.repeat(batch, 1, 1, 1)


def extract_patches(window: Tensor, p: int) -> Tensor:
    """(B, C, K P, K P) -> (B K K, C, P, P), row-major over the K x K grid."""
    b, c, h, w = window.shape
    k_r, k_c = h // p, w // p
    if h != k_r * p or w != k_c * p:
        raise ValueError(f"window {h}x{w} is not a whole number of {p}x{p} patches")
    x = window.reshape(b, c, k_r, p, k_c, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b * k_r * k_c, c, p, p)


def stitch_patches(patches: Tensor, batch: int, k: int) -> Tensor:
    """Inverse of ``extract_patches``: (B K K, C, P, P) -> (B, C, K P, K P)."""
    _, c, p, _ = patches.shape
    x = patches.reshape(batch, k, k, c, p, p).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(batch, c, k * p, k * p)


def pad_with_noise(x: Tensor, m: int, sigma: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Zero-pad (B, C, N, N) by m on every side, the border filled with N(0, sigma^2) (sigma scalar or (B,))."""
    b, c, n, _ = x.shape
    noise = _randn((b, c, n + 2 * m, n + 2 * m), generator, x)
    out = noise * sigma.reshape(-1, 1, 1, 1).to(x.dtype) if sigma.ndim else noise * sigma.to(x.dtype)
    out[:, :, m:m + n, m:m + n] = x
    return out


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    if generator is None:
        return torch.randn(shape, device=like.device, dtype=like.dtype)
    return torch.randn(shape, generator=generator, device=generator.device).to(like.device, like.dtype)


def _sigma_vector(sigma: Tensor | float, b: int, device) -> Tensor:
    sigma = torch.as_tensor(sigma, dtype=torch.float32, device=device)
    return sigma.expand(b) if sigma.ndim == 0 else sigma.reshape(b)


def _run_batched(net: PatchNet, patches: Tensor, sigma: Tensor, pos: Tensor, chunk: int | None) -> Tensor:
    if chunk is None or patches.shape[0] <= chunk:
        return net(patches, sigma, pos)
    outs = [net(patches[i:i + chunk], sigma[i:i + chunk], pos[i:i + chunk]) for i in range(0, patches.shape[0], chunk)]
    return torch.cat(outs)


def denoise_shifted_grid(net: PatchNet, x: Tensor, sigma: Tensor | float, p: int, shift: tuple[int, int],
                         generator: torch.Generator | None = None, chunk: int | None = None) -> Tensor:
    """Denoise (B, C, N, N) with non-overlapping P x P patches on the grid at offset ``shift`` in {0..M}^2.

    Returns (B, C, N, N). ``chunk``: most patches per network call (memory); None = all at once.
    """
    b, c, n, n2 = x.shape
    if n != n2:
        raise ValueError(f"patch denoising needs square images, got {n}x{n2}")
    k, m = patch_layout(n, p)
    if not (0 <= shift[0] <= m and 0 <= shift[1] <= m):
        raise ValueError(f"shift {shift} outside 0..{m}")
    sig = _sigma_vector(sigma, b, x.device)
    padded = pad_with_noise(x, m, sig, generator)
    window = padded[:, :, shift[0]:shift[0] + k * p, shift[1]:shift[1] + k * p]
    patches = extract_patches(window, p)
    pos = grid_positions(n, p, shift, b, device=x.device)
    out = _run_batched(net, patches, sig.repeat_interleave(k * k), pos, chunk)
    stitched = stitch_patches(out, b, k)
    top, left = m - shift[0], m - shift[1]  # image origin inside the window
    return stitched[:, :, top:top + n, left:left + n]


def denoise_random_shift(net: PatchNet, x: Tensor, sigma: Tensor | float, p: int,
                         generator: torch.Generator | None = None, chunk: int | None = None) -> Tensor:
    """PaDIS: one grid offset drawn uniformly from {0..M}^2 per call (shared by the batch)."""
    _, m = patch_layout(x.shape[-1], p)
    shift = torch.randint(0, m + 1, (2,), generator=generator, device=generator.device if generator else "cpu")
    return denoise_shifted_grid(net, x, sigma, p, (int(shift[0]), int(shift[1])), generator, chunk)


def denoise_fixed_grid(net: PatchNet, x: Tensor, sigma: Tensor | float, p: int,
                       generator: torch.Generator | None = None, chunk: int | None = None) -> Tensor:
    """Patch stitching baseline: the same grid (offset M // 2, centred) at every call, so seams never move."""
    _, m = patch_layout(x.shape[-1], p)
    return denoise_shifted_grid(net, x, sigma, p, (m // 2, m // 2), generator, chunk)


def denoise_overlapping(net: PatchNet, x: Tensor, sigma: Tensor | float, p: int, overlap: int = 8,
                        generator: torch.Generator | None = None, chunk: int | None = None) -> Tensor:
    """Patch averaging baseline: P x P patches at stride P - overlap covering the image, outputs averaged."""
    b, c, n, _ = x.shape
    stride = p - overlap
    if stride < 1:
        raise ValueError(f"overlap {overlap} must be smaller than the patch size {p}")
    count = max(1, -(-(n - p) // stride) + 1) if n > p else 1
    frame = max(p, (count - 1) * stride + p)
    m = frame - n  # pad total, split between both sides
    lo = m // 2
    sig = _sigma_vector(sigma, b, x.device)
    noise = _randn((b, c, frame, frame), generator, x)
    padded = noise * sig.reshape(-1, 1, 1, 1).to(x.dtype)
    padded[:, :, lo:lo + n, lo:lo + n] = x
    starts = torch.arange(count, device=x.device) * stride
    idx = starts[:, None] + torch.arange(p, device=x.device)  # (count, P) frame coordinates
    rr = idx[:, None, :].expand(count, count, p).reshape(-1, p)
    cc = idx[None, :, :].expand(count, count, p).reshape(-1, p)
    patches = padded[:, :, rr[:, :, None], cc[:, None, :]]  # (B, C, count^2, P, P)
    patches = patches.permute(0, 2, 1, 3, 4).reshape(b * count * count, c, p, p)
    pos = position_channels(rr - lo, cc - lo, n).repeat(b, 1, 1, 1)
    out = _run_batched(net, patches, sig.repeat_interleave(count * count), pos, chunk)
    out = out.reshape(b, count * count, c, p, p).permute(0, 2, 1, 3, 4)
    acc = torch.zeros((b, c, frame, frame), device=x.device, dtype=out.dtype)
    weight = torch.zeros((frame, frame), device=x.device, dtype=out.dtype)
    flat_index = (rr[:, :, None] * frame + cc[:, None, :]).reshape(-1)
    acc.view(b, c, -1).index_add_(2, flat_index, out.reshape(b, c, -1))
    weight.view(-1).index_add_(0, flat_index, torch.ones_like(flat_index, dtype=out.dtype))
    return (acc / weight)[:, :, lo:lo + n, lo:lo + n]
