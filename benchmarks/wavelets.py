"""Multi-level 2D DWT + inverse: wavepatch (periodization) vs PyWavelets vs ptwt, side by side in one run.

    OMP_NUM_THREADS=1 python benchmarks/wavelets.py [--batch 8] [--size 256] [--levels 3] [--repeats 7]
        [--wavelets haar db4 bior4.4] [--threads 1] [--out FILE.md]

ptwt is optional: it is used when importable (e.g. ``pip install --target /tmp/ptwt-site --no-deps ptwt`` and
``PYTHONPATH=/tmp/ptwt-site``). For each wavelet: median wall time in ms of one forward + inverse transform of a
(batch, 1, size, size) float32 tensor, and the max abs difference of the coefficients and of the round trip to
PyWavelets in float64 with the same boundary mode (wavepatch: 'periodization'; ptwt has no periodization, so it is
compared with pywt's 'periodic' mode, and its coefficient arrays are larger).
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pywt
import torch
from timing import median_seconds

from wavepatch.wavelets import wavedec2_periodized, waverec2_periodized

try:
    import ptwt
except ImportError:  # optional comparison
    ptwt = None


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    return 1e3 * median_seconds(fn, repeats)


def _max_diff(coeffs: list, ref: list) -> float:
    """Max abs difference between two pywt-layout coefficient lists (torch or numpy leaves)."""
    flat = lambda c: [c[0], *[b for level in c[1:] for b in level]]  # noqa: E731
    return max(float(np.abs(np.asarray(a) - b).max()) for a, b in zip(flat(coeffs), flat(ref), strict=True))


def bench_wavelet(x: np.ndarray, wavelet: str, levels: int, repeats: int) -> list[dict]:
    """Rows {library, mode, ms, coeff_diff, roundtrip_err} for one wavelet; x is (B, 1, H, W) float32."""
    t = torch.from_numpy(x)
    x64 = x.astype(np.float64)
    axes = (-2, -1)
    rows = []

    def ours():
        low, det = wavedec2_periodized(t, wavelet, levels)
        return waverec2_periodized(low, det, wavelet)

    low, det = wavedec2_periodized(t, wavelet, levels)
    ours_coeffs = [low.numpy(), *[tuple(d[:, :, b].numpy() for b in range(3)) for d in det]]
    ref = pywt.wavedec2(x64, wavelet, mode="periodization", level=levels, axes=axes)
    rows.append(dict(library="wavepatch", mode="periodization", ms=median_ms(ours, repeats),
                     coeff_diff=_max_diff(ours_coeffs, ref), roundtrip_err=float(np.abs(ours().numpy() - x).max())))

    def ref_fn(mode: str) -> Callable[[], np.ndarray]:
        return lambda: pywt.waverec2(pywt.wavedec2(x, wavelet, mode=mode, level=levels, axes=axes), wavelet,
                                     mode=mode, axes=axes)

    rows.append(dict(library="pywt", mode="periodization", ms=median_ms(ref_fn("periodization"), repeats),
                     coeff_diff=_max_diff(pywt.wavedec2(x, wavelet, mode="periodization", level=levels, axes=axes),
                                          ref),
                     roundtrip_err=float(np.abs(ref_fn("periodization")() - x).max())))
    if ptwt is not None:
        def theirs():
            return ptwt.waverec2(ptwt.wavedec2(t, wavelet, mode="periodic", level=levels), wavelet)

        ref_p = pywt.wavedec2(x64, wavelet, mode="periodic", level=levels, axes=axes)
        coeffs = ptwt.wavedec2(t, wavelet, mode="periodic", level=levels)
        coeffs = [coeffs[0].numpy(), *[tuple(b.numpy() for b in level) for level in coeffs[1:]]]
        rows.append(dict(library="ptwt", mode="periodic", ms=median_ms(theirs, repeats),
                         coeff_diff=_max_diff(coeffs, ref_p),
                         roundtrip_err=float(np.abs(theirs().numpy()[..., : x.shape[-2], : x.shape[-1]] - x).max())))
    return rows


def table(rows: list[dict], header: str) -> str:
    lines = [header, "",
             "| wavelet | library | mode | fwd+inv ms | max abs coeff diff to pywt (fp64) | round-trip error |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['wavelet']} | {r['library']} | {r['mode']} | {r['ms']:.1f} | {r['coeff_diff']:.1e} | "
                     f"{r['roundtrip_err']:.1e} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--wavelets", nargs="+", default=["haar", "db4", "bior4.4"])
    ap.add_argument("--out", type=Path, default=None, help="also write the table (markdown) here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Level value of")
    x = np.random.default_rng(0).normal(size=(args.batch, 1, args.size, args.size)).astype(np.float32)
    rows = [dict(wavelet=w, **r) for w in args.wavelets for r in bench_wavelet(x, w, args.levels, args.repeats)]
    versions = f"torch {torch.__version__}, pywt {pywt.__version__}" + (
        f", ptwt {ptwt.__version__}" if ptwt is not None and hasattr(ptwt, "__version__") else
        (", ptwt" if ptwt is not None else ", ptwt not installed"))
    header = (f"Batch {args.batch} x 1 x {args.size}², {args.levels} levels, float32, {args.threads} torch thread(s), "
              f"median of {args.repeats}; {versions}.")
    text = table(rows, header)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
