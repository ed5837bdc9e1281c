"""Real acquired multi-coil k-space through the CLI, retrospectively undersampled, against its fully sampled
reference: zero-filled, L1-wavelet, ADMM-TV and PaDIS fast (bundled MRI prior), as a user runs them.

Data (neither is in the repository's test data except the phantom):

* ``phantom``: Siemens Skyra TWIX ``gre.dat`` (2 coils, 160 x 160 after readout-oversampling removal), the
  MIT-licensed example file of twixtools 0.24, bundled as ``tests/data/twix/gre.dat``.
* ``brain``: a 16-coil axial T2 brain slice (768 x 396 centred k-space, readout oversampled 2x), the example of
  the MIRTorch 0.1.2 source distribution (``examples/AXT2_210_6001736_layer11.npz``; the slice comes from
  fastMRI, so it is fetched from the package registry by this script and never bundled):
  ``pip download --no-deps --no-binary :all: mirtorch==0.1.2`` then ``--brain-npz PATH``, or ``--fetch``.
  The readout oversampling is removed here (centre half of the readout in image space, fastMRI practice),
  giving 384 x 396.

Run: ``python benchmarks/real_kspace.py [--brain-npz F | --fetch] [--accel 4] [--out DIR]``; prints a table
(PSNR/SSIM against the fully sampled reference, data residual, seconds) and leaves each run's folder
(compare.png, metrics.json) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PHANTOM = ROOT / "tests" / "data" / "twix" / "gre.dat"
METHODS = (("l1-wavelet", []), ("admm-tv", []), ("padis", ["--fast"]))


def fetch_brain(folder: Path) -> Path:
    """Download the MIRTorch 0.1.2 sdist from the package registry and extract its example k-space."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                    "mirtorch==0.1.2", "-d", str(folder)], check=True, capture_output=True)
    sdist = next(folder.glob("mirtorch-0.1.2*.tar.gz"))
    with tarfile.open(sdist) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("AXT2_210_6001736_layer11.npz"))
        tar.extractall(folder, members=[member], filter="data")
    return folder / member.name


def brain_to_npy(npz: Path, out: Path) -> Path:
    """(16, 768, 396) int16 real/imag -> complex64 (16, 384, 396) .npy, readout oversampling removed."""
    z = np.load(npz, allow_pickle=False)
    k = (z["k_r"].astype(np.float32) + 1j * z["k_i"].astype(np.float32)) / 32767.0
    img = np.fft.fftshift(np.fft.ifft(np.fft.ifftshift(k, axes=1), axis=1, norm="ortho"), axes=1)
    h = img.shape[1]
    img = img[:, h // 4: h // 4 + h // 2]
    k = np.fft.fftshift(np.fft.fft(np.fft.ifftshift(img, axes=1), axis=1, norm="ortho"), axes=1)
    np.save(out, k.astype(np.complex64), allow_pickle=False)
    return out


def run_one(data: Path, method: str, extra: list[str], accel: float, out: Path) -> dict:
    cmd = [str(Path(sys.executable).parent / "wavepatch"), "reconstruct", "--measurement", str(data), "--task", "mri",
           "--method", method, *extra, "--accel", f"{accel:g}", "--out", str(out), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return json.loads((out / "metrics.json").read_text())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--brain-npz", type=Path, default=None, help="the MIRTorch example .npz (see the docstring)")
    ap.add_argument("--fetch", action="store_true", help="download the MIRTorch sdist to get the brain slice")
    ap.add_argument("--accel", type=float, default=4.0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/real_kspace"))
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="wavepatch-kspace-"))
    datasets = [("phantom (2 coils, 160x160)", PHANTOM)]
    npz = fetch_brain(work) if args.fetch and args.brain_npz is None else args.brain_npz
    if npz is not None:
        datasets.append(("brain T2 (16 coils, 384x396)", brain_to_npy(npz, work / "brain_kspace.npy")))
    rows = []
    for name, path in datasets:
        for method, extra in METHODS:
            tag = f"{path.stem}_{method}"
            m = run_one(path, method, extra, args.accel, args.out / tag)
            if not rows or rows[-1][0] != name:
                rows.append((name, "zero-filled", m["baseline_psnr"], m["baseline_ssim"],
                             m["baseline_data_consistency"]["relative_residual"], float("nan")))
            rows.append((name, method + (" fast" if extra else ""), m["psnr"], m["ssim"],
                         m["data_consistency"]["relative_residual"], m["seconds"]))
            noise = m["task_params"]["noise_std_estimate"]
        print(f"{name}: estimated noise std {noise:.4f} (unit scale), x{args.accel:g} Gaussian mask, seed 0")
    print("\n| data | method | PSNR (dB) | SSIM | rel. residual | seconds |\n|---|---|---|---|---|---|")
    for name, method, psnr, ssim, rel, sec in rows:
        print(f"| {name} | {method} | {psnr:.2f} | {ssim:.3f} | {rel:.4f} | {sec:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
