"""Network precision (fp32 / bf16 / auto), the channels-last GroupNorm path, and the CPU sparse matrix-vector path of
the CT operator."""

from __future__ import annotations

import json

import pytest
import torch

from wavepatch.cli import main
from wavepatch.physics.ct import ParallelBeamCT
from wavepatch.physics.ray_matrix import apply_sparse
from wavepatch.prior.checkpoint import load_prior
from wavepatch.prior.model import (
    PriorConfig,
    build_prior,
    inference_network,
    make_denoiser,
    native_bf16,
    resolve_precision,
)
from wavepatch.prior.unet import UNetConfig, norm_act
from wavepatch.resources import prior_path


def test_resolve_precision():
    assert resolve_precision("fp32") == "fp32" and resolve_precision("bf16") == "bf16"
    assert resolve_precision("auto", "cpu") == ("bf16" if native_bf16("cpu") else "fp32")
    assert resolve_precision("auto", "meta") == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp16")


@pytest.mark.parametrize("name", ["ct_patch128", "ct_whole128"])
def test_bf16_denoiser_matches_fp32(name):
    """bf16 (channels-last bf16 weights on the CPU) changes the denoised image by ~2e-3 relative (the EDM skip
    path, the GroupNorm statistics and the output stay float32)."""
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


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("modulate", [False, True])
def test_channels_last_norm_act_equals_group_norm(dims, modulate):
    """The fused channels-last GroupNorm (+ modulation + SiLU) is GroupNorm: float64 to 1e-10, and bfloat16
    within bfloat16 rounding of the float64 result."""
    g = torch.Generator().manual_seed(0)
    shape = (3, 16) + (6,) * dims
    norm = torch.nn.GroupNorm(4, 16).double()
    with torch.no_grad():
        norm.weight.copy_(torch.randn(16, generator=g))
        norm.bias.copy_(torch.randn(16, generator=g))
    norm.requires_grad_(False)
    x = 3 * torch.randn(shape, generator=g, dtype=torch.float64) + 2  # a mean large against the spread
    scale, shift = (torch.randn((3, 16) + (1,) * dims, generator=g, dtype=torch.float64) for _ in range(2))
    mod = (scale, shift) if modulate else (None, None)
    ref = norm_act(norm, x, *mod)
    assert torch.allclose(ref, torch.nn.functional.silu(norm(x) * (1 + scale) + shift if modulate else norm(x)))
    fmt = torch.channels_last if dims == 2 else torch.channels_last_3d
    fast = norm_act(norm, x.contiguous(memory_format=fmt), *mod)
    assert fast.is_contiguous(memory_format=fmt)
    assert torch.allclose(fast, ref, atol=1e-10, rtol=1e-10)
    xb = x.to(torch.bfloat16).contiguous(memory_format=fmt)
    low = norm_act(norm.to(torch.bfloat16), xb, *(m.to(torch.bfloat16) if m is not None else None for m in mod))
    assert low.dtype == torch.bfloat16
    assert float((low.double() - ref).abs().max()) < 0.05 * float(ref.abs().max())


def test_inference_network_copy_is_refreshed_and_passes_gradients():
    """bf16 on the CPU is a cached channels-last copy, rebuilt after an in-place weight update; an input gradient
    (DPS) flows through it and agrees with the float32 one."""
    cfg = PriorConfig(kind="whole", unet=UNetConfig(base_channels=8, channel_mult=(1, 2)), image_size=16)
    model = build_prior(cfg)
    assert inference_network(model, "fp32") is model
    fast = inference_network(model, "bf16")
    assert inference_network(model, "bf16") is fast
    assert fast.net.conv_in.weight.dtype == torch.bfloat16
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))  # an optimizer step
    fresh = inference_network(model, "bf16")
    assert fresh is not fast and torch.allclose(fresh.net.conv_out.weight.float(), model.net.conv_out.weight,
                                                atol=1e-2)
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    grads = {}
    for precision in ("fp32", "bf16"):
        xi = x.clone().requires_grad_(True)
        denoise = make_denoiser(model, cfg, precision=precision)
        denoise(xi, 0.2).square().sum().backward()
        grads[precision] = xi.grad
    assert all(not p.requires_grad for p in fresh.parameters())
    rel = float((grads["bf16"] - grads["fp32"]).norm() / grads["fp32"].norm())
    assert rel < 3e-2, rel


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
