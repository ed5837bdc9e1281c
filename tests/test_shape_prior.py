"""Shape priors: config checks, checkpoint round trip and refusals, generation, the PCA shape model."""

from __future__ import annotations

import pytest
import torch

from wavepatch.prior.checkpoint import CheckpointError, load_prior, load_shape_prior, save_prior, save_shape_prior
from wavepatch.prior.model import PriorConfig, build_prior
from wavepatch.prior.shape_train import fit_pca_model, sample_pca_model
from wavepatch.prior.shape_wavelet import ShapeCodeConfig, ShapePrior, ShapePriorConfig
from wavepatch.prior.unet import UNetConfig
from wavepatch.sampling.shape_generation import generate_tsdf


def _config(space: str = "wavelet") -> ShapePriorConfig:
    code = ShapeCodeConfig(grid=16, truncation=2.0, space=space, levels=2)
    unet = UNetConfig(1, 1, 8, (1, 2), 1, False, 0.0, 3)
    gen = PriorConfig(kind="whole", unet=unet, sigma_data=1.0, image_size=code.side, window=None, modality="other")
    detail = UNetConfig(1, 7, 8, (1, 2), 1, False, 0.0, 3) if space == "wavelet" else None
    c = code.channels
    return ShapePriorConfig(code=code, generator=gen, detail=detail, mean=[0.5] * c, std=[2.0] * c)


def test_config_validation():
    cfg = _config()
    with pytest.raises(ValueError, match="mean and std need 8"):
        ShapePriorConfig(code=cfg.code, generator=cfg.generator, detail=cfg.detail, mean=[0.0], std=[1.0])
    with pytest.raises(ValueError, match="needs a 3-D detail UNet"):
        ShapePriorConfig(code=cfg.code, generator=cfg.generator, detail=None, mean=cfg.mean, std=cfg.std)
    with pytest.raises(ValueError, match="multiple of 2"):
        ShapeCodeConfig(grid=18, levels=2)
    with pytest.raises(ValueError, match="truncation"):
        ShapeCodeConfig(truncation=float("nan"))
    x = torch.randn(2, 8, 4, 4, 4)
    assert torch.allclose(cfg.denormalise(cfg.normalise(x)), x, atol=1e-6)


def test_checkpoint_round_trip_and_refusals(tmp_path):
    torch.manual_seed(0)
    cfg = _config()
    model = ShapePrior(cfg)
    path = save_shape_prior(tmp_path / "shape.safetensors", model, cfg, {"note": 1})
    loaded, cfg2 = load_shape_prior(path)
    assert cfg2.to_dict() == cfg.to_dict()
    x = torch.randn(1, 1, 4, 4, 4)
    with torch.no_grad():
        assert torch.allclose(loaded.predict_detail(x), model.predict_detail(x), atol=1e-2)
    with pytest.raises(CheckpointError, match="3-D shape prior, not one denoiser"):
        load_prior(path)
    image_cfg = PriorConfig(kind="whole", unet=UNetConfig(1, 1, 8, (1, 2), 1, False), image_size=16)
    image = save_prior(tmp_path / "image.safetensors", build_prior(image_cfg), image_cfg)
    with pytest.raises(CheckpointError, match="shape prior .* is needed"):
        load_shape_prior(image)


@pytest.mark.parametrize("space", ["wavelet", "voxel"])
def test_generation_shapes_determinism_and_batching(space):
    torch.manual_seed(0)
    cfg = _config(space)
    model = ShapePrior(cfg).eval()
    a, nfe = generate_tsdf(model, cfg, 3, steps=3, batch=2, seed=5, progress=False)
    b, _ = generate_tsdf(model, cfg, 3, steps=3, batch=2, seed=5, progress=False)
    assert a.shape == (3, 16, 16, 16) and torch.equal(a, b)
    assert a.abs().max() <= cfg.code.truncation + 1e-6
    assert nfe == 5 + (1 if space == "wavelet" else 0)
    if space == "wavelet":
        plain, nfe0 = generate_tsdf(model, cfg, 3, steps=3, batch=2, seed=5, detail=False, progress=False)
        assert nfe0 == 5 and not torch.equal(plain, a)
    else:
        with pytest.raises(ValueError, match="wavelet-space"):
            generate_tsdf(model, cfg, 1, steps=2, detail=False, progress=False)


def test_pca_model_recovers_a_low_rank_set_and_its_variances():
    gen = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(50, 3, generator=gen))[0].T  # 3 orthonormal directions in R^50
    coef = torch.randn(1200, 3, generator=gen) * torch.tensor([3.0, 2.0, 1.0])
    data = 1.5 + coef @ basis
    mean, found, std = fit_pca_model(data, variance=0.999)
    assert found.shape == (3, 50)
    assert torch.allclose(mean, torch.full((50,), 1.5), atol=0.15)
    assert torch.allclose(found @ found.T, torch.eye(3), atol=1e-4)
    assert torch.allclose(std, torch.tensor([3.0, 2.0, 1.0]), rtol=0.08)
    assert torch.allclose((found @ basis.T).abs().max(1).values, torch.ones(3), atol=1e-2)  # same subspace
    draws = sample_pca_model(mean, found, std, 20000, seed=1)
    assert torch.allclose((draws - mean).var(0).sum(), (std**2).sum(), rtol=0.05)
    k2 = fit_pca_model(data, variance=0.7)[1].shape[0]
    assert k2 == 2  # 9 / 14 = 64 % < 0.7 <= 13 / 14
