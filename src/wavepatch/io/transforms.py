"""Intensity normalisation and square resizing between stored images and model inputs.

Intensity maps work on NumPy arrays (returned as float32) and on torch tensors (dtype kept if floating).
Every normalisation returns or accepts what is needed to invert it, so results can be written back in the
units of the input (HU for CT).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from wavepatch.io.readers import ImageVolume

# (lo, hi) in HU. lo = -1000 is air: the unit image x = (HU + 1000) / 2000 is then proportional to the linear
# attenuation coefficient, because HU = 1000 (mu - mu_water) / mu_water with mu_air ~ 0 gives
# mu = mu_water (1 + HU / 1000) = 2 mu_water x. So a CT forward model can act on x directly (up to the
# constant 2 mu_water), and zero padding of x -- used around patches and outside the scan circle -- is air,
# which is what surrounds the patient. hi = 1000 HU keeps soft tissue and most bone unclipped; denser bone
# and metal saturate at 1, where proportionality is lost. Scanner padding (-1024, -3024) clips to 0 = air.
DEFAULT_CT_WINDOW: tuple[float, float] = (-1000.0, 1000.0)

# (center, width) in HU for looking at CT, not for computing on it.
DISPLAY_WINDOWS: dict[str, tuple[float, float]] = {
    "soft_tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
}

ArrayLike = np.ndarray | torch.Tensor


def _as_float(x: Any) -> ArrayLike:
    if isinstance(x, torch.Tensor):
        return x if x.is_floating_point() else x.to(torch.float32)
    return np.asarray(x, dtype=np.float32)


def _clip(x: ArrayLike, lo: float, hi: float) -> ArrayLike:
    return torch.clamp(x, lo, hi) if isinstance(x, torch.Tensor) else np.clip(x, lo, hi)


def _check_window(lo: float, hi: float) -> None:
    if not hi > lo:
        raise ValueError(f"window needs hi > lo, got lo={lo}, hi={hi}")


def hu_window_to_unit(hu: ArrayLike, lo: float = -1000.0, hi: float = 1000.0) -> ArrayLike:
    """Clip HU to [lo, hi] and map linearly to [0, 1] (any shape). See ``DEFAULT_CT_WINDOW`` for why -1000."""
    _check_window(lo, hi)
    return (_clip(_as_float(hu), lo, hi) - lo) / (hi - lo)


def unit_to_hu(x: ArrayLike, lo: float = -1000.0, hi: float = 1000.0) -> ArrayLike:
    """Inverse of ``hu_window_to_unit`` on [0, 1]: lo + x (hi - lo), in HU (outside [0, 1]: extrapolated)."""
    _check_window(lo, hi)
    return _as_float(x) * (hi - lo) + lo


def window_for_display(hu: ArrayLike, center: float = 40.0, width: float = 400.0) -> ArrayLike:
    """Map the HU window [center - width/2, center + width/2] to [0, 1] for viewing (e.g. PNG figures).

    For display only: narrow windows (soft tissue 40/400, lung -600/1500; see ``DISPLAY_WINDOWS``) discard
    most of the HU range, so never feed their output to a model.
    """
    return hu_window_to_unit(hu, center - width / 2.0, center + width / 2.0)


def minmax_to_unit(x: ArrayLike) -> tuple[ArrayLike, tuple[float, float]]:
    """(x - min) / (max - min) over the whole input; returns (unit image, (min, max)) for inversion.

    A constant input maps to zeros (its (min, max) still inverts it).
    """
    x = _as_float(x)
    lo, hi = float(x.min()), float(x.max())
    scale = hi - lo if hi > lo else 1.0
    return (x - lo) / scale, (lo, hi)


# Robust intensity range of magnitude images (MRI and other non-CT inputs): the upper percentile of the volume's
# values is mapped to 1, so a few very bright voxels (vessels, fat, contrast enhancement, JPEG ringing) do not
# set the scale of the whole image, and everything above it is clipped. Chosen, not tuned on any result.
DEFAULT_PERCENTILE = 99.5
NORMALIZATIONS = ("percentile", "minmax")


def percentile_range(data: np.ndarray, q: float = DEFAULT_PERCENTILE) -> tuple[float, float]:
    """(lo, hi) of the percentile normalisation of ``data`` (any shape, finite).

    hi is the ``q``-th percentile of all values. lo is 0 for non-negative data (magnitude images: zero signal
    stays zero, so the map is a pure scale and MRI physics stays linear in the unit image, and zero padding is
    background), else the (100 - q)-th percentile. A constant or all-zero input gives hi = lo + 1.
    """
    if not 50.0 < q <= 100.0:
        raise ValueError(f"percentile must be in (50, 100], got {q}")
    flat = np.asarray(data, dtype=np.float32).ravel()
    lo = 0.0 if float(flat.min()) >= 0.0 else float(np.percentile(flat, 100.0 - q))
    hi = float(np.percentile(flat, q))
    if not hi > lo:  # mostly background: fall back to the maximum, then to a unit range
        hi = float(flat.max()) if float(flat.max()) > lo else lo + 1.0
    return lo, hi


def normalize_volume(
    volume: ImageVolume, window: tuple[float, float] | None = None, method: str = "percentile"
) -> tuple[np.ndarray, dict]:
    """Map a volume's data (S, H, W) to [0, 1]; return (float32 array (S, H, W), inversion info).

    CT: HU window ``window`` (default ``DEFAULT_CT_WINDOW``), clipped. Other kinds: the explicit intensity
    window ``window`` if given (clipped); else ``method``: 'percentile' (default; ``percentile_range`` over
    the whole volume: 0 -> 0, the 99.5th percentile -> 1, clipped) or 'minmax' (min -> 0, max -> 1). The info
    dict holds only plain floats and strings (JSON-safe): {'method': 'window', 'lo', 'hi', 'kind'},
    {'method': 'percentile', 'lo', 'hi', 'q', 'kind'} or {'method': 'minmax', 'min', 'max', 'kind'};
    ``denormalize`` inverts it (on [0, 1]; clipped values stay clipped).
    """
    if method not in NORMALIZATIONS:
        raise ValueError(f"normalisation must be one of {NORMALIZATIONS}, got {method!r}")
    if volume.kind == "ct" and window is None:
        window = DEFAULT_CT_WINDOW
    if window is not None:
        lo, hi = float(window[0]), float(window[1])
        x = hu_window_to_unit(volume.data, lo, hi)
        return np.asarray(x, dtype=np.float32), {"method": "window", "lo": lo, "hi": hi, "kind": volume.kind}
    if method == "percentile":
        lo, hi = percentile_range(volume.data)
        x = hu_window_to_unit(volume.data, lo, hi)
        return np.asarray(x, dtype=np.float32), {"method": "percentile", "lo": lo, "hi": hi,
                                                 "q": DEFAULT_PERCENTILE, "kind": volume.kind}
    x, (lo, hi) = minmax_to_unit(volume.data)
    return np.asarray(x, dtype=np.float32), {"method": "minmax", "min": lo, "max": hi, "kind": volume.kind}


def denormalize(x: ArrayLike, info: dict) -> ArrayLike:
    """Inverse of ``normalize_volume``: unit image -> input units (HU for CT), any shape."""
    if info["method"] in ("window", "percentile"):
        return unit_to_hu(x, info["lo"], info["hi"])
    if info["method"] == "minmax":
        scale = info["max"] - info["min"] if info["max"] > info["min"] else 1.0
        return _as_float(x) * scale + info["min"]
    raise ValueError(f"unknown normalisation method {info.get('method')!r}")


# ------------------------------------------------------------------------------------------------ geometry


def _square_offsets(h: int, w: int) -> tuple[int, int, int]:
    n = max(h, w)
    return n, (n - h) // 2, (n - w) // 2


def pad_to_square(img: np.ndarray, value: float | None = None) -> np.ndarray:
    """Pad (H, W) or (S, H, W) to (.., N, N), N = max(H, W), centred; ``value`` defaults to the input minimum.

    The odd pixel of an odd difference goes to the bottom/right; ``center_crop`` undoes it exactly.
    """
    img = np.asarray(img)
    h, w = img.shape[-2:]
    n, top, left = _square_offsets(h, w)
    fill = float(img.min()) if value is None else value
    pads = [(0, 0)] * (img.ndim - 2) + [(top, n - h - top), (left, n - w - left)]
    return np.pad(img, pads, mode="constant", constant_values=fill)


def center_crop(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Crop the central (H, W) = ``shape`` from (.., N, N); the inverse of ``pad_to_square``."""
    n_h, n_w = img.shape[-2:]
    h, w = shape
    if h > n_h or w > n_w:
        raise ValueError(f"cannot crop {shape} out of {img.shape[-2:]}")
    top, left = (n_h - h) // 2, (n_w - w) // 2
    return img[..., top : top + h, left : left + w]


def _resize(img: np.ndarray, n: int) -> np.ndarray:
    stack = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).reshape(-1, 1, *img.shape[-2:])
    with torch.no_grad():
        out = torch.nn.functional.interpolate(
            stack, size=(n, n), mode="bilinear", antialias=True, align_corners=False
        )
    return out.reshape(*img.shape[:-2], n, n).numpy()


def resize_square(img: np.ndarray, n: int) -> np.ndarray:
    """Resize (H, W) or (S, H, W) to (.., n, n) float32, keeping the aspect ratio.

    Non-square inputs are first padded to square with the input minimum (``pad_to_square``), then resized
    bilinearly with antialiasing (``align_corners=False``: pixel areas, not centres, are matched, so the
    field of view is preserved and the pixel spacing scales by max(H, W) / n).
    """
    img = np.asarray(img)
    if img.ndim not in (2, 3):
        raise ValueError(f"expected (H, W) or (S, H, W), got shape {img.shape}")
    if n < 1:
        raise ValueError(f"size must be positive, got {n}")
    square = pad_to_square(img)
    if square.shape[-1] == n:
        return np.array(square, dtype=np.float32)
    return _resize(square, n)


def restore_from_square(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of ``resize_square`` up to interpolation blur: (.., n, n) -> (.., H, W) float32."""
    n = max(shape)
    img = np.asarray(img, dtype=np.float32)
    square = img if img.shape[-1] == n else _resize(img, n)
    return np.ascontiguousarray(center_crop(square, shape))
