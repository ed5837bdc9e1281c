"""Network precision (fp32 / bf16 autocast / auto) and the CPU sparse matrix-vector path of the CT operator."""

from __future__ import annotations

import json

import pytest
import torch

from wavepatch.cli import main
from wavepatch.physics.ct import ParallelBeamCT
from wavepatch.physics.ray_matrix import apply_sparse
from wavepatch.prior.checkpoint import load_prior
from wavepatch.prior.model import make_denoiser, native_bf16, resolve_precision
from wavepatch.resources import prior_path


def test_resolve_precision():
    assert resolve_precision("fp32") == "fp32" and resolve_precision("bf16") == "bf16"
    assert resolve_precision("auto", "cpu") == ("bf16" if native_bf16("cpu") else "fp32")
    assert resolve_precision("auto", "meta") == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp16")


@pytest.mark.parametrize("name", ["ct_patch128", "ct_whole128"])
def test_bf16_denoiser_matches_fp32(name):
    """bf16 autocast changes the denoised image by ~1e-4 relative (the EDM skip path stays float32)."""
    model, cfg = load_prior(prior_path(name))
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    outs = {}
    for precision in ("fp32", "bf16"):
        denoise = make_denoiser(model, cfg, generator=torch.Generator().manual_seed(1), precision=precision)
        with torch.no_grad():
            outs[precision] = denoise(x, 0.1)
    assert outs["bf16"].dtype == torch.float32
    rel = float((outs["bf16"] - outs["fp32"]).norm() / outs["fp32"].norm())
    assert 0 < rel < 5e-3, rel


def test_sparse_vector_and_matrix_paths_agree():
    """One image goes through CSR x vector (torch.mv), several through CSR x matrix: same numbers, and the
    adjoint identity <A x, y> = <x, A^T y> holds on both."""
    op = ParallelBeamCT(48, n_views=9)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 48 * 48, generator=g, dtype=torch.float64)
    y = torch.rand(3, 9 * op.n_detectors, generator=g, dtype=torch.float64)
    batched, single = apply_sparse(op.matrix, x), torch.cat([apply_sparse(op.matrix, x[i:i + 1]) for i in range(3)])
    assert torch.allclose(batched, single, rtol=1e-12, atol=1e-12)
    back = torch.cat([apply_sparse(op.matrix, y[i:i + 1], transpose=True) for i in range(3)])
    assert torch.allclose(back, apply_sparse(op.matrix, y, transpose=True), rtol=1e-12, atol=1e-12)
    assert float((single * y).sum()) == pytest.approx(float((x * back).sum()), rel=1e-12)


def test_cli_precision_is_recorded(tmp_path, capsys, ct_small_path):
    out = tmp_path / "o"
    code = main(["reconstruct", str(ct_small_path), "--task", "ct-parallel", "--views", "12", "--size", "64",
                 "--method", "padis", "--fast", "--steps", "3", "--precision", "fp32", "--no-progress",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert json.loads((out / "metrics.json").read_text())["method_params"]["precision"] == "fp32"
