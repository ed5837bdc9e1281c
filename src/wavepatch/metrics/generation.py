"""Offline quality figures for generated images (no downloaded networks): compare two sets of images.

- ``sliced_wasserstein_pyramid``: multi-scale sliced Wasserstein distance between 7 x 7 neighbourhoods of
  Laplacian-pyramid levels (Karras et al., "Progressive growing of GANs", 2018), x 1e3 as there;
- ``histogram_distance``: Wasserstein-1 distance between the pixel-value distributions (in HU when a window
  is given: mean absolute HU shift needed to turn one histogram into the other), and
  ``histogram_total_variation``: total-variation distance between 100-bin histograms (their shape);
- ``spectrum_error``: mean |log10 P_a(f) - log10 P_b(f)| of the radially averaged power spectra;
- ``spectral_noise_baseline``: the trivial comparison point, Gaussian noise with the real images' mean and
  mean power spectrum (right second-order statistics, no structure);
- ``one_nna_features``: leave-one-out 1-nearest-neighbour accuracy (1-NNA, as for shapes) between the two sets in a
  fixed feature space (``image_features``: the image averaged to 16 x 16, its log power spectrum, its
  histogram): 50 % = indistinguishable, 100 % = every image is nearest to its own set.
Images are (K, N, N) arrays in [0, 1]; both sets must have the same N.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from wavepatch.metrics.shapes import one_nn_accuracy

Tensor = torch.Tensor


def _as_tensor(images) -> Tensor:
    t = torch.as_tensor(np.asarray(images, dtype=np.float32))
    if t.ndim != 3 or t.shape[1] != t.shape[2]:
        raise ValueError(f"expected (K, N, N) square images, got shape {tuple(t.shape)}")
    return t


_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _blur(x: Tensor) -> Tensor:
    k = (_BINOMIAL[:, None] * _BINOMIAL[None, :]).to(x)[None, None]
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k)


def laplacian_pyramid(images: Tensor, min_size: int = 16) -> list[Tensor]:
    """Band-pass levels of (K, 1, N, N), finest first, down to ``min_size`` (the last level is the low-pass)."""
    levels, x = [], images
    while x.shape[-1] // 2 >= min_size:
        low = _blur(x)[..., ::2, ::2]
        up = F.interpolate(low, scale_factor=2.0, mode="nearest")
        levels.append(x - _blur(up))
        x = low
    levels.append(x)
    return levels


def _descriptors(level: Tensor, per_image: int, size: int, gen: torch.Generator) -> Tensor:
    k, _, n, _ = level.shape
    if n < size:
        raise ValueError(f"pyramid level {n} px is smaller than the {size} px descriptor")
    rows = torch.randint(0, n - size + 1, (k, per_image), generator=gen)
    cols = torch.randint(0, n - size + 1, (k, per_image), generator=gen)
    off = torch.arange(size)
    r = (rows[..., None] + off)[..., :, None]
    c = (cols[..., None] + off)[..., None, :]
    patches = level[torch.arange(k)[:, None, None, None], 0, r, c]  # (K, per_image, size, size)
    d = patches.reshape(-1, size * size)
    return (d - d.mean()) / d.std().clamp_min(1e-8)


def _sliced_wasserstein(a: Tensor, b: Tensor, gen: torch.Generator, directions: int = 128, repeats: int = 4) -> float:
    n = min(a.shape[0], b.shape[0])
    a, b = a[torch.randperm(a.shape[0], generator=gen)[:n]], b[torch.randperm(b.shape[0], generator=gen)[:n]]
    dists = []
    for _ in range(repeats):
        dirs = torch.randn(a.shape[1], directions, generator=gen)
        dirs = dirs / dirs.norm(dim=0, keepdim=True)
        pa, _ = torch.sort(a @ dirs, dim=0)
        pb, _ = torch.sort(b @ dirs, dim=0)
        dists.append((pa - pb).abs().mean().item())
    return float(np.mean(dists))


def sliced_wasserstein_pyramid(a, b, per_image: int = 128, descriptor: int = 7, min_size: int = 16,
                               seed: int = 0) -> list[float]:
    """SWD x 1e3 per Laplacian level (finest first) between image sets a and b, (K, N, N) each."""
    ta, tb = _as_tensor(a)[:, None], _as_tensor(b)[:, None]
    if ta.shape[-1] != tb.shape[-1]:
        raise ValueError(f"image sizes differ: {ta.shape[-1]} vs {tb.shape[-1]}")
    gen = torch.Generator().manual_seed(seed)
    out = []
    for la, lb in zip(laplacian_pyramid(ta, min_size), laplacian_pyramid(tb, min_size), strict=True):
        da = _descriptors(la, per_image, descriptor, gen)
        db = _descriptors(lb, per_image, descriptor, gen)
        out.append(1e3 * _sliced_wasserstein(da, db, gen))
    return out


def histogram_distance(a, b, window: tuple[float, float] | None = None) -> float:
    """Wasserstein-1 distance between all pixel values of a and b (in HU if ``window`` maps [0, 1] to HU)."""
    va, vb = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    scale = (window[1] - window[0]) if window else 1.0
    from scipy.stats import wasserstein_distance  # lazily: scipy.stats is 0.2 s of start-up

    return float(wasserstein_distance(va, vb) * scale)


def histogram_total_variation(a, b, bins: int = 100) -> float:
    """Total-variation distance (half the L1 distance, in [0, 1]) between histograms of a and b on [0, 1]
    with ``bins`` bins (20 HU wide for the default CT window): sensitive to the histogram's shape (air, lung,
    fat, soft tissue, bone peaks), where ``histogram_distance`` measures how far mass must move."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    ha, _ = np.histogram(np.clip(np.asarray(a, dtype=np.float64).ravel(), 0, 1), edges)
    hb, _ = np.histogram(np.clip(np.asarray(b, dtype=np.float64).ravel(), 0, 1), edges)
    return float(0.5 * np.abs(ha / ha.sum() - hb / hb.sum()).sum())


def radial_power_spectrum(images) -> np.ndarray:
    """Mean over images of the radially averaged power spectrum |FFT|^2 / N^2, radii 0 .. N // 2 - 1."""
    x = _as_tensor(images).double()
    n = x.shape[-1]
    power = (torch.fft.fftshift(torch.fft.fft2(x - x.mean(dim=(1, 2), keepdim=True)), dim=(-2, -1)).abs() ** 2)
    power = power.mean(dim=0) / n**2
    yy, xx = torch.meshgrid(torch.arange(n) - n // 2, torch.arange(n) - n // 2, indexing="ij")
    radius = torch.sqrt((yy**2 + xx**2).double()).round().long().ravel()
    sums = torch.zeros(radius.max() + 1, dtype=torch.float64).index_add_(0, radius, power.ravel())
    counts = torch.zeros_like(sums).index_add_(0, radius, torch.ones_like(power.ravel()))
    return (sums / counts)[: n // 2].numpy()


def spectrum_error(a, b) -> float:
    """Mean absolute difference of log10 radially averaged power spectra (radii 1 .. N/2 - 1)."""
    pa, pb = radial_power_spectrum(a)[1:], radial_power_spectrum(b)[1:]
    return float(np.mean(np.abs(np.log10(pa + 1e-20) - np.log10(pb + 1e-20))))


def spectral_noise_baseline(real, count: int, seed: int = 0) -> np.ndarray:
    """``count`` images of Gaussian noise with the real images' mean and mean 2-D power spectrum, clipped to [0, 1]."""
    x = _as_tensor(real).double()
    mean = x.mean()
    power = (torch.fft.fft2(x - mean).abs() ** 2).mean(dim=0)  # mean periodogram (N, N)
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn((count, *x.shape[1:]), generator=gen, dtype=torch.float64)
    noise = torch.fft.ifft2(torch.fft.fft2(z) * power.sqrt() / x.shape[-1]).real
    return (mean + noise).clamp(0, 1).float().numpy()


FEATURE_SIDE = 16  # image_features: side of the area-averaged thumbnail
FEATURE_BINS = 32  # image_features: intensity histogram bins on [0, 1]


def image_features(images) -> list[Tensor]:
    """Fixed, training-free features of each image (K, N, N) in [0, 1], as three blocks (K, F_i): the image
    area-averaged to 16 x 16 (layout and intensity), its log10 radially averaged power spectrum (texture,
    sharpness, noise) and its 32-bin intensity histogram (tissue classes)."""
    x = _as_tensor(images).double()
    thumb = F.adaptive_avg_pool2d(x[:, None], FEATURE_SIDE).flatten(1)
    spectra = torch.from_numpy(np.stack([np.log10(radial_power_spectrum(img[None])[1:] + 1e-20) for img in x]))
    hist = torch.stack([torch.histc(img.clamp(0, 1), FEATURE_BINS, 0.0, 1.0) / img.numel() for img in x])
    return [thumb, spectra, hist]


def one_nna_features(a, b, seed: int = 0) -> float:
    """1-NNA in [0, 1] between image sets a and b in ``image_features`` space.

    The larger set is first subsampled (seeded) to the smaller one's size, since 1-NNA's chance level is 50 % only
    for equal sets. Each feature is standardised with the pooled mean and std of both sets, and each block is
    divided by sqrt(its length), so layout, spectrum and histogram weigh the same in the Euclidean distance."""
    a, b = _as_tensor(a), _as_tensor(b)
    k = min(len(a), len(b))
    if k < 2:
        raise ValueError(f"1-NNA needs at least 2 images per set, got {len(a)} and {len(b)}")
    gen = torch.Generator().manual_seed(seed)
    a, b = (x[torch.randperm(len(x), generator=gen)[:k]] for x in (a, b))
    blocks = []
    for fa, fb in zip(image_features(a), image_features(b), strict=True):
        both = torch.cat([fa, fb])
        z = (both - both.mean(0)) / both.std(0).clamp_min(1e-12)
        blocks.append(z / fa.shape[1] ** 0.5)
    feats = torch.cat(blocks, 1)
    fa, fb = feats[:k], feats[k:]
    return one_nn_accuracy(torch.cdist(fa, fa), torch.cdist(fb, fb), torch.cdist(fa, fb))


def generation_report(generated, real, window: tuple[float, float] | None = None, seed: int = 0,
                      train=None) -> dict:
    """All figures for ``generated`` vs ``real``, and for the spectral-noise baseline vs ``real``.

    train: the images the model was trained on, (K, N, N). When given, the baseline is fitted on them (it then
    knows what the model knew, not the test set) and the training images themselves are scored as a reference
    row: the distance a perfect model of the training distribution would get (patient / protocol shift).
    Without it the baseline is fitted on ``real`` (it then matches the test spectrum by construction).
    """
    generated, real = np.asarray(generated), np.asarray(real)
    baseline = spectral_noise_baseline(real if train is None else np.asarray(train), len(generated), seed)
    sets = [("generated", generated), ("baseline", baseline)]
    if train is not None:
        sets.append(("training data", np.asarray(train)))
    report = {}
    for name, imgs in sets:
        swd = sliced_wasserstein_pyramid(imgs, real, seed=seed)
        report[name] = {"swd_per_level": swd, "swd_mean": float(np.mean(swd)),
                        "histogram_w1": histogram_distance(imgs, real, window),
                        "histogram_tv": histogram_total_variation(imgs, real),
                        "spectrum_log10_error": spectrum_error(imgs, real),
                        "nna_features": one_nna_features(imgs, real, seed) if min(len(imgs), len(real)) > 1
                        else None, "count": int(len(imgs))}
    report["real_count"] = int(len(real))
    report["baseline_fitted_on"] = "real" if train is None else "training data"
    hu = window is not None and window[0] <= -500
    report["histogram_unit"] = "HU" if hu else ("window units" if window else "unit intensity")
    return report
