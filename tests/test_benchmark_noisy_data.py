"""benchmarks/noisy_data.py end to end with tiny MRI priors: trains clean / noisy / noisy + wavelet, gives the
sub-network variant the steps 'noisy' reached, and writes the tables and the grid."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from wavepatch.io import SliceDataset

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_noisy_data_benchmark_runs_end_to_end(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    sys.modules.pop("noisy_data", None)
    import noisy_data

    stack = SliceDataset(REPO / "data" / "mri", size=32).images[:, 0].numpy().astype(np.float32)
    np.save(tmp_path / "mri_train.npy", stack)
    out, work = tmp_path / "out", tmp_path / "work"
    noisy_data.main(["--modalities", "mri", "--mri-train", str(tmp_path / "mri_train.npy"), "--size", "32",
                     "--minutes", "0.03", "--slices", "1", "--channels", "8", "--channel-mult", "1,2",
                     "--no-attention", "--batch", "2", "--steps", "2", "--n-inner", "1", "--levels", "2",
                     "--device", "cpu", "--out", str(out), "--work", str(work)])
    res = json.loads((out / "results.json").read_text())
    priors = res["priors"]["mri"]
    assert set(priors) == {"clean", "noisy", "noisy + wavelet"}
    assert priors["noisy + wavelet"]["info"]["step"] == priors["noisy"]["info"]["step"]
    assert priors["clean"]["cleaned_psnr_vs_clean"] is None
    assert math.isfinite(priors["noisy + wavelet"]["cleaned_psnr_vs_clean"])
    assert all(math.isfinite(v) for p in priors.values() for v in p["denoising_psnr"])
    assert {r["prior"] for r in res["rows"]} == {"baseline", "clean", "noisy", "noisy + wavelet"}
    md = (out / "results.md").read_text()
    assert "| mri x4 gaussian |" in md and "| mri noisy + wavelet |" in md
    assert (out / "grid.png").stat().st_size > 0
