"""Losses of the unsupervised low-dose CT translator (Jung et al. 2022; the official code's forms).

Patch-wise metric loss. For a low-dose input x and its translation G(x), the translator's encoder features at the
same N sampled locations, projected to unit vectors, give f_in (B, N, D) and f_out (B, N, D). With cosine
similarities s = <f, f'> and temperature T:

    positives  s+      = <f_in[i], f_out[i]>            same location: same anatomy, different noise level
    negatives  s-_in   = <f_in[i], f_in[j]>,  j != i     same image: same noise level, other anatomy
               s-_out  = <f_out[i], f_out[j]>, j != i
    loss = ( -mean exp(s+/T) + mean exp(s-_in/T) + mean exp(s-_out/T) ) / D

(not a softmax InfoNCE: the official code defines a cross-entropy but uses this form), averaged over the feature
layers. Adversarial: least squares (LSGAN), D(real) -> 1, D(fake) -> 0, G wants D(fake) -> 1.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def patch_metric_loss(f_in: Tensor, f_out: Tensor, temperature: float = 0.15) -> Tensor:
    """The module's metric loss for one feature layer; f_in, f_out (B, N, D) unit vectors, N >= 2. Scalar."""
    if f_in.shape != f_out.shape or f_in.ndim != 3 or f_in.shape[1] < 2:
        raise ValueError(f"need two (B, N >= 2, D) feature sets of one shape, got {tuple(f_in.shape)} and "
                         f"{tuple(f_out.shape)}")
    n, d = f_in.shape[1], f_in.shape[2]
    off = ~torch.eye(n, dtype=torch.bool, device=f_in.device)
    pos = (f_in * f_out).sum(-1)
    neg_in = (f_in @ f_in.transpose(1, 2))[:, off]
    neg_out = (f_out @ f_out.transpose(1, 2))[:, off]
    t = temperature
    return (-(pos / t).exp().mean() + (neg_in / t).exp().mean() + (neg_out / t).exp().mean()) / d


def sample_locations(feature: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
    """n distinct flat pixel indices of a feature map (B, C, H, W) (all of them when H W <= n)."""
    hw = feature.shape[-2] * feature.shape[-1]
    perm = torch.randperm(hw, generator=generator)
    return perm[: min(n, hw)].to(feature.device)


def gather(feature: Tensor, index: Tensor) -> Tensor:
    """Feature vectors (B, N, C) of a map (B, C, H, W) at flat pixel indices (N,)."""
    return feature.flatten(2)[:, :, index].transpose(1, 2)


def lsgan_d_loss(d_real: Tensor, d_fake: Tensor) -> Tensor:
    return 0.5 * ((d_real - 1).pow(2).mean() + d_fake.pow(2).mean())


def lsgan_g_loss(d_fake: Tensor) -> Tensor:
    return (d_fake - 1).pow(2).mean()
