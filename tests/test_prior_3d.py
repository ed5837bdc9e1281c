"""3-D score priors: the N-D UNet, N-D patch layout / positions / denoisers, volume data, and 3-D training."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from wavepatch.io.dataset import VolumeDataset, random_patches, resize_volume
from wavepatch.prior.checkpoint import load_prior
from wavepatch.prior.model import PriorConfig, build_prior, make_denoiser
from wavepatch.prior.patches import (
    denoise_fixed_grid,
    denoise_overlapping,
    denoise_random_shift,
    denoise_shifted_grid,
    extract_patches,
    grid_layout,
    pad_with_noise,
    stitch_patches,
)
from wavepatch.prior.precond import edm_loss, edm_loss_weight
from wavepatch.prior.train import draw_batch, train
from wavepatch.prior.train_config import TrainConfig, check_resume_config
from wavepatch.prior.unet import UNet, UNetConfig


def _coords(n):
    return (2 * torch.arange(n) + 1) / n - 1


def _tiny_unet(dims=3, in_channels=4, attention=True):
    return UNetConfig(in_channels=in_channels, base_channels=8, channel_mult=(1, 2), num_blocks=1,
                      attention=attention, dims=dims)


def test_unet_3d_shapes_divisor_and_2d_layout():
    net = UNet(_tiny_unet())
    assert net(torch.randn(2, 4, 8, 12, 6), torch.zeros(2)).shape == (2, 1, 8, 12, 6)
    with pytest.raises(ValueError, match="multiple of 2"):
        net(torch.randn(1, 4, 8, 9, 8), torch.zeros(1))
    with pytest.raises(ValueError, match="3-D UNet"):
        net(torch.randn(1, 4, 8, 8), torch.zeros(1))
    with pytest.raises(ValueError, match="dims"):
        UNetConfig(dims=4)
    # the same modules in 2-D and 3-D: conv kernels gain one axis, nothing else changes
    flat = {k: v.shape for k, v in UNet(_tiny_unet(dims=2, in_channels=3)).state_dict().items()}
    vol = {k: v.shape for k, v in UNet(_tiny_unet(dims=3, in_channels=3)).state_dict().items()}
    assert flat.keys() == vol.keys()
    assert all(vol[k] == (flat[k] + flat[k][-1:] if len(flat[k]) == 4 else flat[k]) for k in flat)


@pytest.mark.parametrize("shape,p", [((5, 12, 9), (4, 8, 2)), ((8, 8, 8), 4), ((3, 7, 10), (3, 2, 5))])
def test_extract_and_stitch_are_exact_inverses_3d(shape, p):
    ks, ms = grid_layout(shape, p)
    ps = (p,) * 3 if isinstance(p, int) else p
    assert all(k * q == n + m and 1 <= m <= q for k, q, n, m in zip(ks, ps, shape, ms, strict=True))
    window = torch.randn(2, 3, *[k * q for k, q in zip(ks, ps, strict=True)])
    patches = extract_patches(window, p)
    assert patches.shape == (2 * ks[0] * ks[1] * ks[2], 3, *ps)
    assert torch.equal(stitch_patches(patches, 2, ks), window)
    p0, p1, p2 = ps
    assert torch.equal(patches[1], window[0, :, :p0, :p1, p2:2 * p2])  # row-major: the last axis runs fastest
    assert torch.equal(patches[ks[2]], window[0, :, :p0, p1:2 * p1, :p2])


def _pos_net(channel):
    return lambda patches, sigma, pos: pos[:, channel:channel + 1]


def test_every_shift_denoises_each_voxel_once_with_its_position_3d():
    shape, p = (5, 7, 6), (4, 3, 6)  # anisotropic image and patch shape
    _, ms = grid_layout(shape, p)
    x = torch.randn(2, 1, *shape)
    for shift in itertools.product(*[range(m + 1) for m in ms]):
        assert torch.equal(denoise_shifted_grid(lambda q, s, pos: q + 1, x, 0.1, p, shift), x + 1)
        for axis in range(3):
            pos = denoise_shifted_grid(_pos_net(axis), x, 0.1, p, shift)[1, 0]
            view = [1, 1, 1]
            view[axis] = shape[axis]
            assert torch.allclose(pos, _coords(shape[axis]).reshape(view).expand(shape))
    with pytest.raises(ValueError, match="outside"):
        denoise_shifted_grid(lambda q, s, pos: q, x, 0.1, p, (0, 0))


def test_random_shift_3d_identity_is_exact_and_shifts_move_per_axis():
    gen = torch.Generator().manual_seed(0)
    seen = set()

    def identity(q, s, pos):
        assert pos.shape == (q.shape[0], 3, *q.shape[2:])
        seen.add(tuple(round(float(pos[0, i].flatten()[0]), 4) for i in range(3)))
        return q

    x = torch.randn(2, 1, 12, 20, 16)
    assert grid_layout(x.shape[2:], (8, 8, 6))[1] == (4, 4, 2)  # unequal M: one draw per axis
    for _ in range(10):
        assert torch.equal(denoise_random_shift(identity, x, 0.5, (8, 8, 6), generator=gen), x)
    assert len({s[0] for s in seen}) > 2 and len({s[2] for s in seen}) > 2
    assert torch.equal(denoise_random_shift(lambda q, s, pos: q + 1, x, 0.5, 8, generator=gen), x + 1)


def test_overlapping_and_fixed_grid_baselines_3d():
    x = torch.randn(1, 1, 10, 13, 7)
    identity = lambda q, s, pos: q  # noqa: E731
    assert torch.allclose(denoise_overlapping(identity, x, 0.3, (4, 6, 4), overlap=(1, 2, 1)), x, atol=1e-6)
    assert torch.equal(denoise_fixed_grid(identity, x, 0.3, (4, 6, 4)), x)
    cols = denoise_overlapping(_pos_net(2), x, 0.3, 4, overlap=1)
    assert torch.allclose(cols[0, 0, 3, 5], _coords(7), atol=1e-6)


def test_pad_with_noise_3d_border_has_sigma():
    x = torch.zeros(2, 1, 4, 6, 5)
    out = pad_with_noise(x, (3, 2, 4), torch.tensor([1.0, 3.0]), torch.Generator().manual_seed(0))
    assert out.shape == (2, 1, 10, 10, 13)
    assert torch.equal(out[:, :, 3:7, 2:8, 4:9], x)
    border = out.clone()
    border[:, :, 3:7, 2:8, 4:9] = float("nan")
    stds = [b[~b.isnan()].std().item() for b in border]
    assert abs(stds[0] - 1.0) < 0.15 and abs(stds[1] - 3.0) < 0.45


def test_prior_config_3d_channels_tuples_and_json_round_trip():
    cfg = PriorConfig(kind="patch", unet=_tiny_unet(), image_size=(12, 20, 16), patch_size=(8, 8, 4))
    assert cfg.dims == 3
    back = PriorConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and back.patch_size == (8, 8, 4)
    with pytest.raises(ValueError, match="in_channels = 4"):
        PriorConfig(kind="patch", unet=_tiny_unet(in_channels=3))
    with pytest.raises(ValueError, match="entries"):
        PriorConfig(kind="patch", unet=_tiny_unet(), patch_size=(8, 8))
    with pytest.raises(ValueError, match="multiple of 2"):
        PriorConfig(kind="patch", unet=_tiny_unet(), patch_size=(8, 8, 3))
    old = {"kind": "patch", "unet": {"in_channels": 3, "out_channels": 1, "base_channels": 8, "channel_mult": [1, 2],
                                     "num_blocks": 1, "attention": True, "dropout": 0.0},
           "sigma_data": 0.5, "image_size": 16, "patch_size": 8, "window": [-1000.0, 1000.0]}
    legacy = PriorConfig.from_dict(old)  # a 2-D config of older checkpoints: no dims key
    assert legacy.dims == 2 and legacy.patch_size == 8 and legacy.image_size == 16


def test_make_denoiser_3d_whole_pads_and_patch_takes_any_size():
    for kind in ("whole", "patch"):
        cfg = PriorConfig(kind=kind, unet=_tiny_unet(in_channels=4 if kind == "patch" else 1), image_size=8,
                          patch_size=(4, 8, 4))
        model = build_prior(cfg).eval()
        for mode in ("padis", "stitch", "average"):
            denoise = make_denoiser(model, cfg, mode=mode, generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                out = denoise(torch.randn(2, 1, 5, 9, 6), torch.tensor([0.5, 1.0]))
            assert out.shape == (2, 1, 5, 9, 6) and torch.isfinite(out).all()
        with pytest.raises(ValueError, match="3-D prior"):
            make_denoiser(model, cfg)(torch.randn(1, 1, 8, 8), 0.5)


def test_edm_loss_broadcasts_over_volumes():
    class Zero(torch.nn.Module):
        sigma_data = 0.5

        def forward(self, x, sigma, extra=None):
            return torch.zeros_like(x)

    x0 = torch.rand(3, 1, 4, 5, 6)
    loss = edm_loss(Zero(), x0, torch.Generator().manual_seed(0), -1.2, 1.2)
    sigma = (torch.randn(3, generator=torch.Generator().manual_seed(0)) * 1.2 - 1.2).exp()
    expected = (edm_loss_weight(sigma, 0.5) * x0.pow(2).mean(dim=(1, 2, 3, 4))).mean()
    assert torch.allclose(loss, expected)


def _smooth(shape, k):
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    return (0.5 + 0.3 * np.sin(2 * x + k) * np.cos(1.5 * y) * np.cos(z + 0.5 * k)).astype(np.float32)


def test_volume_dataset_resizes_and_random_patches_match_a_padded_copy(tmp_path):
    np.save(tmp_path / "a.npy", _smooth((10, 20, 24), 0) * 100)
    np.save(tmp_path / "b.npy", _smooth((12, 16, 16), 1))
    ds = VolumeDataset(tmp_path, size=(8, 12, 16))
    assert len(ds) == 2 and ds.images.shape == (2, 1, 8, 12, 16) and ds[1].shape == (1, 8, 12, 16)
    assert 0.0 <= ds.images.min() and ds.images.max() <= 1.0 and ds.volumes[0]["shape"] == (10, 20, 24)
    vol = _smooth((6, 7, 8), 2)
    np.testing.assert_allclose(resize_volume(vol, (6, 7, 8)), vol, atol=1e-6)
    gen = torch.Generator().manual_seed(0)
    p, pad = (4, 6, 8), (2, 3, 4)
    patches, pos = ds.random_patches(60, p, gen, pad=pad)
    assert patches.shape == (60, 1, 4, 6, 8) and pos.shape == (60, 3) and pos.dtype == torch.int64
    gen.manual_seed(0)
    which = torch.randint(0, len(ds), (60,), generator=gen)
    padded = torch.nn.functional.pad(ds.images, (4, 4, 3, 3, 2, 2))
    for k in range(0, 60, 7):
        a, b, c = pos[k].tolist()
        assert torch.equal(patches[k], padded[which[k], :, a:a + 4, b:b + 6, c:c + 8])
    with pytest.raises(ValueError):
        ds.random_patches(1, 17)
    flipped, _ = random_patches(ds.images, 3, 4, torch.Generator().manual_seed(1), flip=True)
    assert flipped.shape == (3, 1, 4, 4, 4)


def test_draw_batch_3d_positions_follow_the_content_under_flips(tmp_path):
    size = 8
    cols = (2 * np.arange(size) + 1) / size - 1  # each volume stores its own last-axis coordinate
    for k in range(2):
        np.save(tmp_path / f"v{k}.npy", np.broadcast_to(cols, (size, size, size)).astype(np.float32) * 0.5 + 0.5)
    data = VolumeDataset(tmp_path, size=size, window=(0.0, 1.0))
    cfg = TrainConfig(data=[str(tmp_path)], prior="patch", dims=3, size=size, window=None, patch_sizes=(4,),
                      patch_probs=(1.0,), pad=2, channel_mult=(1, 2), batch=6, flip=True)
    gen = torch.Generator().manual_seed(3)
    signs = set()
    for _ in range(3):
        patches, pos = draw_batch(data, cfg, gen)
        assert patches.shape == (6, 1, 4, 4, 4) and pos.shape == (6, 3, 4, 4, 4)
        for axis in range(2):
            assert bool((pos[:, axis].diff(dim=axis - 3) > 0).all())
        content = (patches - 0.5) / 0.5
        for q in range(patches.shape[0]):
            inside = (pos[q].abs() < 1).all(dim=0)
            if not inside.any():
                continue
            same = torch.allclose(content[q, 0][inside], pos[q, 2][inside], atol=1e-5)
            mirrored = torch.allclose(content[q, 0][inside], -pos[q, 2][inside], atol=1e-5)
            assert same or mirrored
            signs.add(same)
    assert signs == {True, False}


def test_train_config_3d_checks():
    with pytest.raises(ValueError, match="2-D only"):
        TrainConfig(prior="wavelet", dims=3, size=16)
    with pytest.raises(ValueError, match="2-D only"):
        TrainConfig(prior="whole", dims=3, size=16, noisy_data="gaussian")
    with pytest.raises(ValueError, match="one int"):
        TrainConfig(prior="patch", dims=2, size=(16, 16))
    cfg = TrainConfig(prior="patch", dims=3, size=[16, 24, 32], patch_sizes=(8,), patch_probs=(1.0,))
    assert cfg.size == (16, 24, 32) and cfg.prior_config().unet.in_channels == 4
    with pytest.raises(ValueError, match="dims"):
        check_resume_config(TrainConfig(), TrainConfig(dims=3, size=16))


def _volumes(folder, n=2, size=16):
    """A folder of n smooth synthetic volumes (size^3 .npy files)."""
    folder.mkdir()
    for k in range(n):
        np.save(folder / f"vol{k}.npy", _smooth((size, size, size), k))
    return folder


def test_train_3d_patch_prior_loads_and_denoises(tmp_path):
    data = _volumes(tmp_path / "data")
    cfg = TrainConfig(data=[str(data)], out=str(tmp_path / "run"), prior="patch", dims=3, size=16, window=None,
                      patch_sizes=(8, 16), patch_probs=(0.5, 0.5), pad=4, base_channels=8, channel_mult=(1, 2),
                      num_blocks=1, attention=False, batch=2, steps=5, lr=5e-3, warmup=1, ema_halflife=1.0,
                      p_mean=-1.6, checkpoint_every=5, log_every=1, device="cpu")
    model, pcfg = load_prior(train(cfg, progress=False))
    assert pcfg.dims == 3 and pcfg.unet.in_channels == 4 and pcfg.patch_size == 16
    clean = torch.from_numpy(_smooth((12, 20, 16), 0.3))[None, None]
    gen = torch.Generator().manual_seed(1)
    sigma = 0.2
    noisy = clean + sigma * torch.randn(clean.shape, generator=gen)
    with torch.no_grad():
        out = make_denoiser(model, pcfg, mode="padis", generator=gen)(noisy, sigma)
    assert out.shape == (1, 1, 12, 20, 16) and torch.isfinite(out).all() and not torch.equal(out, noisy)
    # After 5 steps most of this gain is the preconditioning's skip term; it checks the pipeline, not quality.
    assert (out - clean).pow(2).mean() < 0.9 * (noisy - clean).pow(2).mean()


def test_train_3d_whole_prior_on_small_volumes(tmp_path):
    data = _volumes(tmp_path / "data", size=8)
    cfg = TrainConfig(data=[str(data)], out=str(tmp_path / "run"), prior="whole", dims=3, size=(8, 8, 12),
                      window=None, base_channels=8, channel_mult=(1, 2), num_blocks=1, attention=True, batch=2,
                      steps=3, lr=1e-3, warmup=1, checkpoint_every=3, log_every=1, device="cpu")
    model, pcfg = load_prior(train(cfg, progress=False))
    assert pcfg.kind == "whole" and pcfg.dims == 3 and pcfg.image_size == (8, 8, 12)
    with torch.no_grad():
        out = make_denoiser(model, pcfg)(torch.rand(1, 1, 7, 9, 12), 0.3)
    assert out.shape == (1, 1, 7, 9, 12) and torch.isfinite(out).all()
