"""Figures and result files that people look at: the comparison figure and metrics.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from wavepatch.io.atomic import atomic_path, atomic_write_bytes  # noqa: E402


def _save_figure(fig, path: str | Path, protect=(), dpi: int = 110) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically (never over a protected input) and close it."""
    with atomic_path(path, protect) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return Path(path)


def compare_figure(path: str | Path, truth: np.ndarray, panels: list[tuple[str, np.ndarray]],
                   error_of: np.ndarray, suptitle: str = "", protect=(), truth_title: str | None = None,
                   error_title: str | None = None) -> Path:
    """Save ground truth | panels... | |error_of - truth| as one PNG. Images are (H, W) on the unit scale,
    shown on [0, 1]; the error map uses its own colour scale (0 to the 99.5th percentile).

    ``truth_title``: measured data have no ground truth; the first panel is then the reconstruction itself
    (titled so), and the last panel its difference from ``error_of`` (the baseline, say). ``error_title``
    overrides the last panel's title."""
    cols = 2 + len(panels)
    fig, axes = plt.subplots(1, cols, figsize=(3.2 * cols, 3.6), constrained_layout=True)
    axes[0].imshow(truth, cmap="gray", vmin=0, vmax=1)
    axes[0].set_title(truth_title or "ground truth", fontsize=9)
    for ax, (title, img) in zip(axes[1:-1], panels, strict=True):
        ax.imshow(np.clip(img, 0, 1), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
    err = np.abs(error_of - truth)
    im = axes[-1].imshow(err, cmap="magma", vmin=0, vmax=max(float(np.percentile(err, 99.5)), 1e-6))
    default = "|recon - truth|" if truth_title is None else f"|{truth_title} - baseline|"
    axes[-1].set_title(error_title or default, fontsize=9)
    fig.colorbar(im, ax=axes[-1], fraction=0.046)
    for ax in axes:
        ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return _save_figure(fig, path, protect, dpi=110)


def uncertainty_figure(path: str | Path, mean: np.ndarray, std: np.ndarray, abs_error: np.ndarray,
                       protect=()) -> Path:
    """Posterior mean | per-pixel standard deviation | absolute error, one PNG (std and error share a scale)."""
    fig, axes = plt.subplots(1, 3, figsize=(9.6, 3.6), constrained_layout=True)
    axes[0].imshow(np.clip(mean, 0, 1), cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("posterior mean", fontsize=9)
    top = max(float(np.percentile(np.concatenate([std.ravel(), abs_error.ravel()]), 99.5)), 1e-6)
    for ax, img, title in ((axes[1], std, "posterior std"), (axes[2], abs_error, "|mean - truth|")):
        im = ax.imshow(img, cmap="magma", vmin=0, vmax=top)
        ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=axes[2], fraction=0.046)
    for ax in axes:
        ax.axis("off")
    return _save_figure(fig, path, protect, dpi=110)


def save_json(path: str | Path, data: dict, protect=()) -> Path:
    """Write ``data`` as indented, strict JSON (non-finite floats such as an identical image's PSNR become null;
    no ``Infinity`` / ``NaN`` tokens), atomically."""
    text = json.dumps(strict_json(data), indent=2, sort_keys=True, allow_nan=False)
    return atomic_write_bytes(path, (text + "\n").encode(), protect)


def strict_json(value):
    """``value`` with every non-finite float replaced by None (recursively through dicts, lists, tuples)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def planes_figure(path: str | Path, truth: np.ndarray, baseline: np.ndarray, recon: np.ndarray,
                  spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
                  titles: tuple[str, str] = ("baseline", "recon"), suptitle: str = "", protect=(),
                  reference: str = "truth") -> Path:
    """Axial, coronal and sagittal mid-planes of (S, H, W) unit-scale volumes, one row each: truth | baseline |
    recon | |recon - truth|. ``spacing`` (slice, row, column) in mm sets each plane's aspect; slice 0 at the
    bottom of the coronal and sagittal planes. ``reference`` names the first column (what ``truth`` is)."""
    s, h, w = truth.shape
    dz, dr, dc = spacing
    cuts = (("axial", lambda v: v[s // 2], dr / dc, "upper"),
            ("coronal", lambda v: v[:, h // 2, :], dz / dc, "lower"),
            ("sagittal", lambda v: v[:, :, w // 2], dz / dr, "lower"))
    fig, axes = plt.subplots(3, 4, figsize=(12.8, 9.6), constrained_layout=True)
    for row, (name, cut, aspect, origin) in zip(axes, cuts, strict=True):
        t, b, r = cut(truth), cut(baseline), cut(recon)
        err = np.abs(np.clip(r, 0, 1) - t)
        for ax, img, title in zip(row[:3], (t, b, r), (reference, *titles), strict=True):
            ax.imshow(np.clip(img, 0, 1), cmap="gray", vmin=0, vmax=1, aspect=aspect, origin=origin)
            ax.set_title(f"{name}: {title}", fontsize=9)
        im = row[3].imshow(err, cmap="magma", vmin=0, vmax=max(float(np.percentile(err, 99.5)), 1e-6),
                           aspect=aspect, origin=origin)
        row[3].set_title(f"{name}: |{titles[1]} - {reference}|", fontsize=9)
        fig.colorbar(im, ax=row[3], fraction=0.046)
    for ax in axes.ravel():
        ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return _save_figure(fig, path, protect, dpi=100)
