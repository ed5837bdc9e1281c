"""WSGM (wavelet score-based generative model): scale bookkeeping against PyWavelets, whitening, loss, checkpoints,
coarse-to-fine sampling with the same steps per scale, exact Haar super-resolution, and the CLI with a tiny model."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import pywt
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from wavepatch.cli import main
from wavepatch.physics.superres import SuperResolution
from wavepatch.prior.checkpoint import CheckpointError, load_prior, load_wavelet_prior, save_prior
from wavepatch.prior.model import PriorConfig, build_prior
from wavepatch.prior.train import train
from wavepatch.prior.train_config import TrainConfig
from wavepatch.prior.unet import UNetConfig
from wavepatch.prior.wavelet import (
    WaveletPrior,
    WaveletPriorConfig,
    coefficient_stats,
    periodic_crops,
    split_scales,
    wsgm_loss,
)
from wavepatch.sampling.wsgm import wsgm_sample, wsgm_super_resolve

TINY_UNET = dict(base_channels=8, channel_mult=(1, 2), num_blocks=1, attention=False)
TINY = ["--channels", "8", "--channel-mult", "1,2", "--blocks", "1", "--no-attention", "--batch", "4",
        "--lr", "1e-3", "--warmup", "1", "--log-every", "1", "--no-progress"]


def _images(n: int = 6, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth structure plus a little noise, in [0, 1]: (n, 1, size, size)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    imgs = [np.clip(0.5 + 0.3 * np.sin(3 * xx + k) * np.cos(2 * yy - k) + 0.05 * rng.standard_normal(xx.shape), 0, 1)
            for k in range(n)]
    return torch.tensor(np.stack(imgs)[:, None], dtype=torch.float32)


def _prior(levels: int = 2, images: torch.Tensor | None = None, seed: int = 0) -> WaveletPrior:
    stats = coefficient_stats(images, levels) if images is not None else {}
    cfg = WaveletPriorConfig(levels=levels, coarse_unet=UNetConfig(**TINY_UNET),
                             detail_unet=UNetConfig(in_channels=4, out_channels=3, **TINY_UNET), image_size=16,
                             window=(0.0, 1.0), **stats)
    torch.manual_seed(seed)
    model = WaveletPrior(cfg)
    with torch.no_grad():  # the output convolutions start at zero; perturb so every network does something
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("levels", [1, 2, 3])
def test_scales_match_pywavelets_and_the_coarse_to_fine_chain_is_exact(size, levels):
    x = _images(3, size)
    lows, details = split_scales(x, levels)
    coeffs = pywt.wavedec2(x.numpy()[:, 0].astype(np.float64), "haar", mode="periodization", level=levels)
    for j in range(1, levels + 1):
        side = size // 2**j
        assert lows[j - 1].shape == (3, 1, side, side) and details[j - 1].shape == (3, 3, side, side)
        # bands in pywt's (cH, cV, cD) order; pywt lists levels coarsest first
        for b in range(3):
            assert np.allclose(details[j - 1][:, b].numpy(), coeffs[levels - j + 1][b], atol=1e-5)
        # orthonormal Haar: the low-pass at scale j is 2^j times the local 2^j x 2^j average
        assert torch.allclose(lows[j - 1], 2**j * F.avg_pool2d(x, 2**j), atol=1e-5)
    assert np.allclose(lows[-1][:, 0].numpy(), coeffs[0], atol=1e-5)

    # normalise, then un-normalise and invert one level at a time, coarse to fine, as the sampler does
    prior = _prior(levels, _images(8, size, seed=1))
    coarse, details_n, lows_n = prior.coefficients(x)
    assert coarse.shape == (3, 1, size // 2**levels, size // 2**levels) and torch.equal(coarse, lows_n[-1])
    low = prior.unnormalize_low(coarse, levels)
    for j in range(levels, 0, -1):
        assert torch.allclose(prior.normalize_low(low, j), lows_n[j - 1], atol=1e-5)
        low = prior.finer(low, details_n[j - 1], j)
    assert torch.allclose(low, x, atol=1e-5)


def test_coefficient_stats_whiten_every_band_of_every_scale():
    imgs = _images(10, 32)
    stats = coefficient_stats(imgs, 3)
    chunked = coefficient_stats(imgs, 3, chunk=3)
    for key, value in stats.items():
        assert np.allclose(value, chunked[key], rtol=1e-9, atol=0), key
    prior = _prior(3, imgs)
    coarse, details, lows = prior.coefficients(imgs)
    for j in range(1, 4):
        d = details[j - 1].transpose(0, 1).flatten(1).double()  # (3 bands, values)
        assert torch.allclose(d.mean(1), torch.zeros(3, dtype=torch.float64), atol=1e-4)
        assert torch.allclose(d.std(1, correction=0), torch.ones(3, dtype=torch.float64), atol=1e-4)
        assert abs(lows[j - 1].double().mean()) < 1e-4 and abs(lows[j - 1].double().std(correction=0) - 1) < 1e-4
        # pywt's coefficients give the same stats
        band = pywt.wavedec2(imgs.numpy()[:, 0].astype(np.float64), "haar", mode="periodization", level=j)[1][2]
        assert math.isclose(stats["detail_std"][j - 1][2], band.std(), rel_tol=1e-6)
        raw = torch.randn(2, 3, 4, 4)
        assert torch.allclose(prior.unnormalize_details(prior.normalize_details(raw, j), j), raw, atol=1e-5)
    assert math.isclose(stats["low_mean"][2], 8 * imgs.double().mean().item(), rel_tol=1e-9)  # 2^J x mean
    flat = coefficient_stats(torch.full((2, 1, 16, 16), 0.3), 2)  # constant images: no detail variance
    assert all(s == pytest.approx(1e-6) for band in flat["detail_std"] for s in band)


def test_loss_trains_every_network_and_decreases_on_a_tiny_model():
    imgs = _images(8, 16)
    prior = _prior(2, imgs).train()
    loss = wsgm_loss(prior, imgs, torch.Generator().manual_seed(0), -0.5, 1.2)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in prior.parameters())

    def fixed_loss() -> float:  # same noise and sigmas every time
        with torch.no_grad():
            return float(wsgm_loss(prior, imgs, torch.Generator().manual_seed(123), -0.5, 1.2))

    before = fixed_loss()
    opt = torch.optim.Adam(prior.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(1)
    for _ in range(20):
        opt.zero_grad()
        wsgm_loss(prior, imgs, gen, -0.5, 1.2).backward()
        opt.step()
    assert fixed_loss() < 0.9 * before  # 0.81 here


def test_checkpoint_round_trip_and_clear_errors_on_the_wrong_kind(tmp_path):
    prior = _prior(2, _images(6, 16))
    cfg = prior.config
    path = save_prior(tmp_path / "w.safetensors", prior, cfg, extra={"note": "wsgm"})
    loaded, cfg2 = load_wavelet_prior(path)
    assert cfg2 == cfg and cfg2.detail_std == cfg.detail_std
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["config"]["kind"] == "wavelet" and meta["config"]["low_std"] == cfg.low_std
    x, low = torch.randn(2, 3, 8, 8), torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(loaded.detail_denoiser(1, low)(x, 0.3), prior.detail_denoiser(1, low)(x, 0.3))
        assert torch.allclose(loaded.coarse(x[:, :1, :4, :4], 0.7), prior.coarse(x[:, :1, :4, :4], 0.7))

    for expect, message in ((None, "wavelet (WSGM) prior, not one denoiser"), ("whole", "a whole prior is needed")):
        with pytest.raises(CheckpointError, match=re.escape(message)) as err:
            load_prior(path, expect_kind=expect)
        assert "\n" not in str(err.value)
    whole_cfg = PriorConfig(kind="whole", unet=UNetConfig(**TINY_UNET), image_size=16)
    whole = save_prior(tmp_path / "whole.safetensors", build_prior(whole_cfg), whole_cfg)
    bundled = Path(__file__).resolve().parents[1] / "models" / "ct_patch128.safetensors"
    for other, kind in ((whole, "whole"), (bundled, "patch")):
        with pytest.raises(CheckpointError, match=f"is a {kind} prior; a wavelet"):
            load_wavelet_prior(other)
    assert load_prior(bundled)[1].kind == "patch"  # the existing priors load as before
    # weights of one WSGM under the config of another (3 levels: one detail network too few)
    bad = {**meta["config"], "levels": 3, "low_mean": None, "low_std": None, "detail_mean": None, "detail_std": None}
    save_file(load_file(str(path)), str(tmp_path / "x.safetensors"),
              metadata={"wavepatch": json.dumps({**meta, "config": bad})})
    with pytest.raises(CheckpointError, match="does not match its architecture"):
        load_wavelet_prior(tmp_path / "x.safetensors")
    save_file(load_file(str(path)), str(tmp_path / "y.safetensors"),
              metadata={"wavepatch": json.dumps({**meta, "config": {**meta["config"], "low_std": [1.0]}})})
    with pytest.raises(CheckpointError, match="invalid prior config"):
        load_wavelet_prior(tmp_path / "y.safetensors")


def test_samples_at_two_sizes_take_the_same_steps_per_scale():
    prior = _prior(2, _images(6, 16))
    for size in (16, 32):
        x, info = wsgm_sample(prior, 2, size, "heun", steps=3, generator=torch.Generator().manual_seed(0))
        assert x.shape == (2, 1, size, size) and torch.isfinite(x).all()
        scales = info["per_scale"]
        assert [(s["model"], s["scale"], s["side"]) for s in scales] == [
            ("coarse", 2, size // 4), ("details", 2, size // 4), ("details", 1, size // 2)]
        assert [s["nfe"] for s in scales] == [5, 5, 5] and info["nfe"] == 15  # Heun: 2 * 3 - 1 per scale
        assert info["nfe_pixel_weighted"] == pytest.approx(5 * (1 / 16 + 1 / 16 + 1 / 4))
    _, info = wsgm_sample(prior, 1, 16, "euler", steps=4, generator=torch.Generator().manual_seed(0))
    assert [s["nfe"] for s in info["per_scale"]] == [4, 4, 4]
    with pytest.raises(ValueError, match="multiple of 8"):
        wsgm_sample(prior, 1, 20, steps=2)


class _Wiener(torch.nn.Module):
    """Exact denoiser of N(0, I) data (the normalised coefficients of an independent Gaussian model)."""

    def forward(self, x, sigma, extra=None):
        return x / (1 + sigma**2)


def test_exact_denoisers_give_each_band_of_each_scale_its_stored_mean_and_std():
    # Gaussian model: every wavelet coefficient independent, N(mean, std^2) per scale and band; in normalised units
    # every factor is N(0, I), whose exact denoiser is x / (1 + sigma^2). Sampling must restore each band's stats.
    levels = 2
    detail_mean = [[0.01, -0.02, 0.03], [0.05, 0.0, -0.05]]
    detail_std = [[0.02, 0.05, 0.01], [0.2, 0.1, 0.3]]
    cfg = WaveletPriorConfig(levels=levels, coarse_unet=UNetConfig(**TINY_UNET),
                             detail_unet=UNetConfig(in_channels=4, out_channels=3, **TINY_UNET), image_size=16,
                             low_mean=[1.0, 2.0], low_std=[1.0, 0.4], detail_mean=detail_mean, detail_std=detail_std)
    prior = WaveletPrior(cfg)
    prior.coarse = _Wiener()
    prior.details = torch.nn.ModuleList(_Wiener() for _ in range(levels))
    x, _ = wsgm_sample(prior, 1000, 16, "heun", steps=48, generator=torch.Generator().manual_seed(0))
    lows, details = split_scales(x.double(), levels)
    assert lows[-1].mean().item() == pytest.approx(2.0, abs=0.01)
    assert lows[-1].std().item() == pytest.approx(0.4, rel=0.03)
    for j in range(1, levels + 1):
        bands = details[j - 1].transpose(0, 1).flatten(1)
        assert np.allclose(bands.mean(1).numpy(), detail_mean[j - 1], atol=0.01)
        assert np.allclose(bands.std(1).numpy(), detail_std[j - 1], rtol=0.03)


def test_super_resolution_from_a_box_average_is_the_haar_chain_and_reproduces_the_measurement():
    prior = _prior(2, _images(6, 16))
    x_true = _images(2, 32, seed=5)
    for factor in (2, 4):
        op = SuperResolution(factor, (1, 32, 32), kernel="box")
        y = op.A(x_true)
        x, info = wsgm_super_resolve(prior, y, factor, steps=2, generator=torch.Generator().manual_seed(0))
        assert x.shape == (2, 1, 32, 32)
        assert [s["model"] for s in info["per_scale"]] == ["details"] * int(math.log2(factor))
        assert torch.allclose(op.A(x), y, atol=1e-5)  # exact data consistency, whatever the networks say
        assert not torch.allclose(x, op.A_dagger(y), atol=1e-3)  # and details were added
    with pytest.raises(ValueError, match="times 2\\^k"):
        wsgm_super_resolve(prior, F.avg_pool2d(x_true, 8), 8, steps=2)


def test_periodic_crops_wrap_around_and_share_one_offset_per_item():
    t = torch.arange(2 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8)
    u = torch.stack([t[:, 0] * 10, t[:, 0] * 100, -t[:, 0]], dim=1)  # (2, 3, 8, 8), another channel count
    a, b = periodic_crops([t, u], 4, torch.Generator().manual_seed(3))
    assert a.shape == (2, 1, 4, 4) and b.shape == (2, 3, 4, 4)
    for i in range(2):
        hits = [(dy, dx) for dy in range(8) for dx in range(8)
                if torch.equal(t[i].roll((-dy, -dx), dims=(-2, -1))[..., :4, :4], a[i])]
        assert len(hits) == 1
        assert torch.equal(b[i], torch.stack([a[i, 0] * 10, a[i, 0] * 100, -a[i, 0]]))
    whole = periodic_crops([t, u], 8, torch.Generator().manual_seed(3))
    assert whole[0] is t and whole[1] is u


def test_detail_crop_feeds_crops_to_the_detail_networks_and_whole_bands_to_the_coarse_one():
    imgs = _images(4, 32)
    prior = _prior(2, imgs).train()
    seen = {}
    for name, net in [("coarse", prior.coarse), ("d1", prior.details[0]), ("d2", prior.details[1])]:
        net.register_forward_hook(lambda m, args, out, name=name: seen.__setitem__(name, tuple(args[0].shape)))
    loss = wsgm_loss(prior, imgs, torch.Generator().manual_seed(0), -0.5, 1.2, crop=4)
    assert seen == {"coarse": (4, 1, 8, 8), "d1": (4, 3, 4, 4), "d2": (4, 3, 4, 4)}
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in prior.parameters())
    # a crop as large as every band changes nothing (and draws no random numbers)
    full = wsgm_loss(prior, imgs, torch.Generator().manual_seed(5), -0.5, 1.2)
    same = wsgm_loss(prior, imgs, torch.Generator().manual_seed(5), -0.5, 1.2, crop=16)
    assert torch.equal(full, same)


def test_train_config_for_a_wavelet_prior():
    cfg = TrainConfig(prior="wavelet", size=32, levels=3, channel_mult=(1, 2))
    assert cfg.sigma_data == 1.0 and cfg.p_mean == pytest.approx(-1.2 + math.log(2))
    assert TrainConfig(prior="whole").sigma_data == 0.5 and TrainConfig(prior="whole").p_mean == -1.2
    with pytest.raises(ValueError, match="multiple of 2\\^levels"):
        TrainConfig(prior="wavelet", size=40, levels=3, channel_mult=(1, 2))
    with pytest.raises(ValueError, match="needs the training images"):
        cfg.prior_config()
    with pytest.raises(ValueError, match="orthogonal"):
        TrainConfig(prior="wavelet", size=32, wavelet="bior2.2").prior_config(_images(2, 32))
    assert TrainConfig(prior="wavelet", size=32, channel_mult=(1, 2), detail_crop=8).detail_crop == 8
    with pytest.raises(ValueError, match="multiple of 2"):
        TrainConfig(prior="wavelet", size=32, channel_mult=(1, 2), detail_crop=5)
    with pytest.raises(ValueError, match="for wavelet priors"):
        TrainConfig(prior="whole", detail_crop=8)


def test_training_a_wavelet_prior_resumes_exactly(tmp_path):
    np.save(tmp_path / "d.npy", _images(5, 16)[:, 0].numpy())
    base = dict(data=[str(tmp_path / "d.npy")], prior="wavelet", size=16, levels=2, window=(0, 1), base_channels=8,
                channel_mult=(1, 2), num_blocks=1, attention=False, batch=3, steps=4, lr=1e-3, warmup=1,
                checkpoint_every=2, log_every=1, device="cpu")
    train(TrainConfig(**base, out=str(tmp_path / "a")), progress=False)
    train(TrainConfig(**{**base, "steps": 2}, out=str(tmp_path / "b")), progress=False)
    train(TrainConfig(**base, out=str(tmp_path / "b")), resume=True, progress=False)
    a, cfg_a = load_wavelet_prior(tmp_path / "a" / "prior.safetensors")
    b, _ = load_wavelet_prior(tmp_path / "b" / "prior.safetensors")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    assert cfg_a.low_std == pytest.approx(coefficient_stats(torch.cat([_images(5, 16), _images(5, 16).flip(-1)]), 2)
                                          ["low_std"], rel=1e-6)
    with pytest.raises(ValueError, match="levels"):
        train(TrainConfig(**{**base, "levels": 1, "steps": 6}, out=str(tmp_path / "b")), resume=True, progress=False)
    train(TrainConfig(**{**base, "detail_crop": 4}, out=str(tmp_path / "c")), progress=False)
    assert json.loads((tmp_path / "c" / "train_config.json").read_text())["detail_crop"] == 4


@pytest.fixture()
def data(tmp_path):
    path = tmp_path / "images.npy"
    np.save(path, _images(5, 24)[:, 0].numpy())
    return path


@pytest.mark.slow
def test_cli_train_sample_eval_with_a_tiny_wavelet_prior(tmp_path, data, capsys):
    run = tmp_path / "run"
    args = ["train", str(data), "--window", "0", "1", "--prior", "wavelet", "--levels", "2", "--size", "16",
            "--steps", "4", "--checkpoint-every", "2", "--out", str(run), *TINY]
    assert main(args) == 0
    for name in ("prior.safetensors", "prior.json", "train_state.safetensors", "train_config.json", "train_log.csv",
                 "loss.png"):
        assert (run / name).is_file(), name
    meta = json.loads((run / "prior.json").read_text())
    assert meta["config"]["kind"] == "wavelet" and meta["config"]["levels"] == 2 and meta["info"]["step"] == 4
    assert len(meta["config"]["detail_std"]) == 2 and len(meta["config"]["detail_std"][0]) == 3
    assert main([*args[:-len(TINY)], "--steps", "6", "--resume", *TINY]) == 0
    assert json.loads((run / "prior.json").read_text())["info"]["step"] == 6

    ckpt = str(run / "prior.safetensors")
    for size in (16, 32):
        out = tmp_path / f"s{size}"
        assert main(["sample", "--prior", ckpt, "--n", "3", "--size", str(size), "--steps", "2", "--batch", "2",
                     "--out", str(out), "--no-progress"]) == 0
        samples = np.load(out / "samples.npy")
        assert samples.shape == (3, size, size) and np.isfinite(samples).all()
        info = json.loads((out / "sample_info.json").read_text())
        assert info["kind"] == "wavelet" and info["steps_per_scale"] == 2 and info["nfe_per_image"] == 9
        assert [s["nfe"] for s in info["nfe_per_scale"]] == [3, 3, 3]
        assert (out / "grid.png").stat().st_size > 0 and (out / "samples.nii.gz").is_file()
    capsys.readouterr()
    assert main(["sample", "--prior", ckpt, "--size", "20", "--out", str(tmp_path / "bad"), "--no-progress"]) == 2
    assert "multiple of 8" in capsys.readouterr().err
    assert main(["eval-samples", str(tmp_path / "s16"), "--real", str(data), "--window", "0", "1"]) == 0
    assert "| generated |" in capsys.readouterr().out
    # where one denoiser is needed, a wavelet prior is refused in one line
    assert main(["reconstruct", str(data), "--task", "sr", "--method", "dps", "--prior", ckpt, "--size", "16",
                 "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "wavelet (WSGM) prior" in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_ddp_training_of_a_wavelet_prior_with_two_gloo_processes(tmp_path, data, torchrun_train):
    run = tmp_path / "ddp"
    proc = torchrun_train([str(data), "--window", "0", "1", "--prior", "wavelet", "--levels", "2", "--size", "16",
                           "--steps", "2", "--checkpoint-every", "2", "--device", "cpu", "--out", str(run), *TINY])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((run / "prior.json").read_text())["info"]["step"] == 2
