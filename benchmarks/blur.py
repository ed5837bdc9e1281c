"""Blur operator: wavepatch's FFT convolution vs direct ``torch.nn.functional.conv2d`` vs scipy, side by side.

    python benchmarks/blur.py [--size 256] [--batch 1 8] [--repeats 5] [--threads 2]

For every kernel preset (gaussian 13², uniform 9², motion 17², heavy 31²) and batch: the median wall time per
image of ``Blur.A`` and ``Blur.A_adjoint`` (zero-boundary 'same' convolution and its transpose, computed by FFT
on a grid large enough to avoid wrap-around), of the direct convolution ``conv2d`` / ``conv_transpose2d`` that
``Blur`` used before (the same matrix), and of ``scipy.ndimage.convolve(mode='constant')`` (loops over the
batch, float64). Ratio = other / wavepatch: above 1 means wavepatch is faster. Also printed: the largest
difference between the three results (float64), which must be rounding only.
"""

from __future__ import annotations

import argparse

import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F
from timing import median_seconds

from wavepatch.physics.blur import BLUR_KERNELS, Blur, make_blur_kernel


def _time_ops(op: Blur, x: torch.Tensor, kernel: torch.Tensor, repeats: int) -> dict[str, tuple[float, ...]]:
    """{'A' | 'A_adjoint': (wavepatch ms, conv2d ms, scipy ms)} for the batch x."""
    kh, kw = kernel.shape
    weight = torch.flip(kernel, dims=(0, 1))[None, None].contiguous()
    pad = (kh // 2, kw // 2)
    xn, kn = x.double().numpy(), kernel.double().numpy()
    return {
        "A": tuple(1e3 * median_seconds(f, repeats) for f in (
            lambda: op.A(x), lambda: F.conv2d(x, weight, padding=pad),
            lambda: [scipy.ndimage.convolve(im[0], kn, mode="constant") for im in xn])),
        "A_adjoint": tuple(1e3 * median_seconds(f, repeats) for f in (
            lambda: op.A_adjoint(x), lambda: F.conv_transpose2d(x, weight, padding=pad),
            lambda: [scipy.ndimage.correlate(im[0], kn, mode="constant") for im in xn])),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n = args.size
    print(f"Blur, {n}x{n}, float32 (scipy float64), {args.threads} threads, median of {args.repeats}; ms per image\n")
    print("| kernel | batch | op | wavepatch (FFT) | conv2d (direct) | scipy | conv2d / FFT | scipy / FFT |")
    print("|---|---|---|---|---|---|---|---|")
    diffs = []
    for name in BLUR_KERNELS:
        kernel = make_blur_kernel(name)
        kh, kw = kernel.shape
        op = Blur(kernel, (1, n, n))
        pad = (kh // 2, kw // 2)
        for b in args.batch:
            x = torch.rand(b, 1, n, n, generator=torch.Generator().manual_seed(0))
            for label, times in _time_ops(op, x, kernel, args.repeats).items():
                t_ours, t_direct, t_sp = (t / b for t in times)
                print(f"| {name} {kh}x{kw} | {b} | {label} | {t_ours:.2f} | {t_direct:.2f} | {t_sp:.2f} "
                      f"| {t_direct / t_ours:.1f}x | {t_sp / t_ours:.1f}x |")
        x64 = torch.rand(1, 1, n, n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        w64 = torch.flip(kernel.double(), dims=(0, 1))[None, None]
        ref = scipy.ndimage.convolve(x64[0, 0].numpy(), kernel.double().numpy(), mode="constant")
        diffs.append((name, float((op.A(x64) - F.conv2d(x64, w64, padding=pad)).abs().max()),
                      float(np.abs(op.A(x64)[0, 0].numpy() - ref).max()),
                      float((op.A_adjoint(x64) - F.conv_transpose2d(x64, w64, padding=pad)).abs().max())))
    print("\n| kernel | max abs(FFT A - conv2d) | max abs(FFT A - scipy) | max abs(FFT A^T - conv_transpose2d) |")
    print("|---|---|---|---|")
    for name, a, b, c in diffs:
        print(f"| {name} | {a:.1e} | {b:.1e} | {c:.1e} |")


if __name__ == "__main__":
    main()
