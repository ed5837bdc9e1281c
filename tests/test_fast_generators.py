"""The seed's accelerators: blur diffusion, pyramidal diffusion, the noise-level classifier and DLG.

Mathematics first (the blur process against its closed form and scipy, the reverse step on a Gaussian prior with
its exact denoiser, DLG on a Gaussian toy, the pyramid's bookkeeping and its exact box-average consistency), then
the CLI with tiny models and its refusals.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.fft
import scipy.ndimage
import torch

from wavepatch.cli import main
from wavepatch.prior.blur import BlurConfig, BlurDiffusion, blur, blur_std, dct2, diffuse, frequencies, gains, idct2
from wavepatch.prior.noise_level import NoiseLevelClassifier, NoiseLevelConfig, noise_level_loss
from wavepatch.prior.pyramidal import box_downsample, check_factors
from wavepatch.prior.train import draw_batch
from wavepatch.prior.train_config import TrainConfig
from wavepatch.prior.unet import UNetConfig
from wavepatch.resources import prior_path
from wavepatch.sampling.blur import blur_sample
from wavepatch.sampling.dlg import dlg_sample
from wavepatch.sampling.pyramidal import (
    patch_grid_pixels,
    project_box,
    pyramidal_sample,
    pyramidal_super_resolve,
    split_steps,
)

TINY_UNET = UNetConfig(base_channels=8, channel_mult=(1, 2), num_blocks=1, attention=False)


# ---- blur diffusion -------------------------------------------------------------------------------------------

def test_dct_is_scipys_orthonormal_dct_and_inverts():
    x = torch.rand(2, 1, 12, 20, dtype=torch.float64)
    ref = scipy.fft.dctn(x.numpy(), axes=(-2, -1), norm="ortho")
    assert np.abs(dct2(x).numpy() - ref).max() < 1e-12
    assert (idct2(dct2(x)) - x).abs().max() < 1e-12


def test_heat_multiplier_is_a_gaussian_filter_with_reflecting_borders():
    """exp(-lambda_k s^2 / 2) in the DCT domain equals scipy's Gaussian filter (mode 'reflect' = the DCT-II's
    half-sample symmetric extension), for a blur std that the grid resolves."""
    img = torch.rand(1, 1, 48, 40, dtype=torch.float64)
    s = 2.5
    ours = idct2(torch.exp(-frequencies(48, 40, torch.float64) * s**2 / 2) * dct2(img))[0, 0].numpy()
    ref = scipy.ndimage.gaussian_filter(img[0, 0].numpy(), s, mode="reflect", truncate=10)
    assert np.abs(ours - ref).max() < 1e-9


def test_forward_process_closed_form_and_identity_at_zero():
    cfg = BlurConfig(unet=TINY_UNET, image_size=32, blur_max=6.0, d_min=1e-3)
    x0 = torch.rand(3, 1, 32, 32)
    z = torch.randn(3, 1, 32, 32)
    assert torch.equal(gains(torch.zeros(3), cfg, 32, 32), torch.ones(3, 1, 32, 32))
    assert (diffuse(x0, torch.zeros(3), z, cfg) - x0).abs().max() < 1e-5
    sigma = torch.tensor([0.3, 0.5, 5.0])  # blur std 1.6 to 5.9 px: the grid resolves the Gaussian
    out = diffuse(x0, sigma, z, cfg)
    for i, sig in enumerate(sigma):
        s = float(blur_std(sig, cfg.blur_max))
        smooth = scipy.ndimage.gaussian_filter(x0[i, 0].double().numpy(), s, mode="reflect", truncate=12)
        mean = (1 - cfg.d_min) * smooth + cfg.d_min * x0[i, 0].double().numpy()
        assert np.abs(out[i, 0].numpy() - mean - float(sig) * z[i, 0].numpy()).max() < 1e-4
    # the image mean is never blurred, and the blur grows with sigma
    assert torch.allclose(blur(x0, sigma, cfg).mean(dim=(1, 2, 3)), x0.mean(dim=(1, 2, 3)), atol=1e-6)
    assert blur_std(torch.tensor(0.1), 6.0) < blur_std(torch.tensor(1.0), 6.0) < 6.0


class _GaussianBlurPrior(torch.nn.Module):
    """Exact posterior mean E[x0 | x_sigma] for x0 ~ N(0, diag(c_k^2)) in the DCT domain: per coefficient
    g c^2 / (g^2 c^2 + sigma^2) times the observation."""

    def __init__(self, cfg: BlurConfig, spectrum: torch.Tensor) -> None:
        super().__init__()
        self.config, self.c2 = cfg, spectrum**2

    def forward(self, x, sigma):
        sigma = torch.as_tensor(sigma, dtype=torch.float32).expand(x.shape[0])
        g = gains(sigma, self.config, *x.shape[-2:])
        s2 = sigma.reshape(-1, 1, 1, 1) ** 2
        return idct2(g * self.c2 / (g**2 * self.c2 + s2) * dct2(x))


class _ShiftedGaussianBlurPrior(_GaussianBlurPrior):
    """The same Gaussian field around the mean 0.5 (so images stay in [0, 1], where ``blur_sample`` clamps);
    blurring keeps a constant, so the denoiser acts on x - 0.5."""

    def forward(self, x, sigma):
        return 0.5 + super().forward(x - 0.5, sigma)


@pytest.mark.parametrize("eta", [1.0, 0.0])
def test_reverse_steps_sample_a_gaussian_prior(eta):
    """With the exact denoiser of a Gaussian prior, ``blur_sample``'s images approach the prior's per-frequency
    variance as the steps grow, at the rate 1 / steps of a first-order scheme (ancestral and deterministic)."""
    cfg = BlurConfig(unet=TINY_UNET, image_size=16, blur_max=6.0)
    spectrum = 0.3 / (1 + 20 * frequencies(16, 16))  # a smooth field, pixel std ~0.05: clamping to [0, 1] is rare
    model = _ShiftedGaussianBlurPrior(cfg, spectrum)
    errors, worst = [], []
    for steps in (75, 300):
        x, nfe = blur_sample(model, 2000, steps, eta, sigma_max=20.0, generator=torch.Generator().manual_seed(0))
        ratio = (dct2(x - 0.5).var(dim=0)[0] / spectrum**2)[spectrum > 0.02]  # the last denoising barely shrinks these
        errors.append(abs(float(ratio.mean()) - 1))
        worst.append(float((ratio - 1).abs().max()))
        assert nfe == steps
    assert errors[1] < 0.06 and errors[1] < 0.45 * errors[0] and worst[1] < 0.15, (errors, worst)


def test_blur_sampler_runs_a_network_and_stays_in_range():
    model = BlurDiffusion(BlurConfig(unet=TINY_UNET, image_size=16))
    x, nfe = blur_sample(model, 3, steps=4, eta=1.0, generator=torch.Generator().manual_seed(1))
    assert x.shape == (3, 1, 16, 16) and nfe == 4 and float(x.min()) >= 0 and float(x.max()) <= 1
    with pytest.raises(ValueError, match="eta"):
        blur_sample(model, 1, eta=2.0)


# ---- pyramidal --------------------------------------------------------------------------------------------------

class _Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, x, sigma):
        self.calls.append((x.shape[-1], float(torch.as_tensor(sigma).max())))
        return x * 0 + 0.5


def test_pyramid_runs_coarse_to_fine_with_the_stated_cost():
    rec = _Recorder()
    x, info = pyramidal_sample(rec, 2, 32, factors=(1, 2, 4), steps=(5, 3, 3), sigma_restart=0.4,
                               generator=torch.Generator().manual_seed(0))
    sides = [c[0] for c in rec.calls]
    assert x.shape == (2, 1, 32, 32)
    assert sides == [8] * 9 + [16] * 5 + [32] * 5  # Heun: 2 levels - 1 calls per pyramid level
    assert [d["side"] for d in info["per_level"]] == [8, 16, 32] and info["nfe"] == 19
    assert math.isclose(info["nfe_pixel_weighted"], (9 * 64 + 5 * 256 + 5 * 1024) / 1024)
    restart = [s for side, s in rec.calls if side == 16]
    assert math.isclose(restart[0], 0.4, rel_tol=1e-6)  # finer levels restart at sigma_restart
    assert split_steps(24, 3) == [12, 6, 6] and split_steps(9, 3) == [8, 3, 3] and split_steps(40, 1) == [40]


def test_pyramid_super_resolution_keeps_the_measured_box_averages():
    gen = torch.Generator().manual_seed(0)
    y = torch.rand(2, 1, 8, 8, generator=gen, dtype=torch.float64)  # converted once, also inside the projection

    def denoise(x, sigma):  # any denoiser: consistency comes from the projection
        assert x.dtype == torch.float32
        return torch.sin(3 * x)

    x, info = pyramidal_super_resolve(denoise, y, 4, steps=3, generator=gen)
    assert x.shape == (2, 1, 32, 32) and info["per_level"][0]["nfe"] == 0
    assert (box_downsample(x, 4) - y.float()).abs().max() < 1e-6
    z = torch.rand(2, 1, 16, 16)
    p = project_box(z, y.float(), 2)
    assert (project_box(p, y, 2) - p).abs().max() < 1e-6  # a projection


def test_pyramid_factor_checks():
    assert check_factors([4, 1, 2], 32) == (1, 2, 4)
    for bad in ([2, 4], [1, 3], [1, 1, 2], [1, 4]):
        with pytest.raises(ValueError, match="1, 2, 4"):
            check_factors(bad, 32)
    with pytest.raises(ValueError, match="multiple"):
        check_factors([1, 2, 4, 8], 20)
    cfg = TrainConfig(prior="pyramidal", size=32, pyramid=(4, 2, 1), pyramid_probs=(0.5, 0.3, 0.2),
                      patch_sizes=(8,), patch_probs=(1.0,), channel_mult=(1, 2))
    assert cfg.pyramid == (1, 2, 4) and cfg.pyramid_probs == (0.2, 0.3, 0.5)  # each stays with its factor


def test_patch_grid_cost_of_a_pyramid_level():
    pixels = patch_grid_pixels(32)
    assert pixels(128) == (5 * 32) ** 2 and pixels(32) == (2 * 32) ** 2  # K = side // p + 1 patches per axis
    _, info = pyramidal_sample(_Recorder(), 1, 32, (1, 2), (2, 2), pixels=patch_grid_pixels(8))
    assert math.isclose(info["nfe_pixel_weighted"], (3 * 24**2 + 3 * 40**2) / 40**2)


def test_pyramidal_training_batches_carry_each_levels_coordinates():
    cfg = TrainConfig(prior="pyramidal", size=32, pyramid=(1, 2, 4), patch_sizes=(8,), patch_probs=(1.0,), pad=0,
                      batch=4, flip=False, channel_mult=(1, 2))
    images = torch.rand(3, 1, 32, 32)
    levels = [box_downsample(images, f) for f in cfg.pyramid]
    gen = torch.Generator().manual_seed(0)
    spacings = set()
    for _ in range(30):
        patches, pos = draw_batch(None, cfg, gen, levels)
        assert patches.shape[1:] == (1, 8, 8) and pos.shape[1:] == (2, 8, 8)
        spacings.add(round(float(pos[0, 1, 0, 1] - pos[0, 1, 0, 0]), 6))
    assert spacings == {round(2 / 32, 6), round(2 / 16, 6), round(2 / 8, 6)}


# ---- noise-level classifier and DLG ---------------------------------------------------------------------------

def _smooth_fields(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    z = torch.randn(n, 1, size, size, generator=gen)
    k = torch.exp(-frequencies(size, size) * 4.0)
    x = idct2(k * dct2(z))
    return 0.5 + 0.25 * x / x.flatten(1).std(dim=1).reshape(-1, 1, 1, 1)


@pytest.mark.slow
def test_noise_level_classifier_recovers_sigma_on_synthetic_images():
    torch.manual_seed(0)
    cfg = NoiseLevelConfig(levels=24, sigma_min=0.01, sigma_max=10.0, channels=16, depth=3, image_size=32,
                           window=None)
    model = NoiseLevelClassifier(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(250):
        loss = noise_level_loss(model, _smooth_fields(32, 32, gen), gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    test = _smooth_fields(64, 32, torch.Generator().manual_seed(1))
    for sigma in (0.03, 0.2, 1.0, 5.0):
        noisy = test + sigma * torch.randn(test.shape, generator=gen)
        est = model.estimate(noisy, "mean")
        assert float((est.log() - math.log(sigma)).abs().median()) < math.log(1.5), (sigma, est[:4])
    noisy = test + 1.0 * torch.randn(test.shape, generator=gen)
    levels = set(model.log_sigmas.exp().tolist())
    for how in ("argmax", "sample"):  # one of the classes, near the truth
        est = model.estimate(noisy, how, generator=torch.Generator().manual_seed(2))
        assert all(min(abs(v - lv) for lv in levels) < 1e-5 * v for v in est.tolist())
        assert float(est.log().abs().median()) < math.log(1.5), (how, est[:4])


def test_dlg_samples_a_gaussian_toy_prior():
    """Data N(mu, s^2 I): exact denoiser and an oracle noise-level estimate; the Gibbs chains and their Heun
    finishes must give the right mean and variance."""
    mu, s = 0.3, 0.2  # 256 pixels: the oracle's noise estimate is accurate

    def denoise(x, sigma):
        sig2 = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1, 1, 1) ** 2
        return (s**2 * x + sig2 * mu) / (s**2 + sig2)

    def estimate(x):
        return ((x - mu).pow(2).flatten(1).mean(dim=1) - s**2).clamp_min(1e-6).sqrt()

    gen = torch.Generator().manual_seed(0)
    x, info = dlg_sample(denoise, estimate, 64, (1, 16, 16), chains=16, gibbs=2, finish_levels=12, init_levels=8,
                         sigma_chain=0.5, generator=gen)
    assert x.shape == (64, 1, 16, 16) and info["outputs_per_chain"] == 4
    assert abs(float(x.mean()) - mu) < 0.01 and abs(float(x.std()) / s - 1) < 0.04
    assert info["nfe_per_image"] == (2 * 7 + 4 * (2 + 23)) / 4
    # a coarse finish (few Heun levels from sigma ~ 0.5) is visibly worse: the finish is where the NFE go
    coarse, _ = dlg_sample(denoise, estimate, 64, (1, 16, 16), chains=16, gibbs=2, finish_levels=4, init_levels=8,
                           sigma_chain=0.5, generator=torch.Generator().manual_seed(0))
    assert abs(float(coarse.std()) / s - 1) > 2 * abs(float(x.std()) / s - 1)
    # consecutive outputs of one chain are different draws, never the same state finished twice
    for i in range(64 - 16):
        assert float((x[i] - x[i + 16]).abs().mean()) > 0.05, i
    with pytest.raises(ValueError, match="chains"):
        dlg_sample(denoise, estimate, 4, (1, 4, 4), chains=5)


# ---- the CLI ------------------------------------------------------------------------------------------------------

TINY = ["--channels", "8", "--channel-mult", "1,2", "--blocks", "1", "--no-attention", "--batch", "4",
        "--lr", "1e-3", "--warmup", "1", "--log-every", "1", "--no-progress", "--steps", "3", "--window", "0", "1"]


@pytest.mark.slow
def test_cli_trains_and_samples_the_fast_generators(tmp_path, data, capsys):
    runs = {}
    for prior, extra in (("pyramidal", ["--patch-sizes", "8", "--patch-probs", "1", "--pyramid", "1,2"]),
                         ("blur", []), ("noise-level", []), ("whole", [])):
        runs[prior] = tmp_path / prior
        assert main(["train", str(data), "--prior", prior, "--size", "16", "--out", str(runs[prior]), *TINY,
                     *extra]) == 0
    assert json.loads((runs["pyramidal"] / "prior.json").read_text())["config"]["pyramid"] == [1, 2]
    ckpt = {k: str(v / "prior.safetensors") for k, v in runs.items()}
    out = tmp_path / "s"
    common = ["--n", "4", "--batch", "4", "--out", str(out), "--no-progress"]
    assert main(["sample", "--prior", ckpt["pyramidal"], "--sampler", "pyramidal", "--steps", "6", *common]) == 0
    info = json.loads((out / "sample_info.json").read_text())
    assert info["sampler"] == "pyramidal" and info["nfe_per_image"] == 15 + 5 and info["nfe_pixel_weighted"] < 15
    assert main(["sample", "--prior", ckpt["blur"], "--steps", "3", "--eta", "1", *common]) == 0
    assert json.loads((out / "sample_info.json").read_text())["nfe_per_image"] == 3
    assert main(["sample", "--prior", ckpt["whole"], "--sampler", "dlg", "--classifier", ckpt["noise-level"],
                 "--chains", "2", "--steps", "2", *common]) == 0
    info = json.loads((out / "sample_info.json").read_text())
    assert np.load(out / "samples.npy").shape == (4, 16, 16)
    assert info["sampler_info"]["outputs_per_chain"] == 2 and info["nfe_per_image"] == (2 * 5 + 2 * (2 + 3)) / 2
    # a CT prior without --classifier: the bundled CT noise-level classifier
    assert main(["sample", "--prior", str(prior_path("ct_whole128")), "--sampler", "dlg", "--size", "32", "--n", "2",
                 "--steps", "1", "--init-levels", "2", "--gibbs", "1", "--out", str(tmp_path / "ct"),
                 "--no-progress"]) == 0
    info = json.loads((tmp_path / "ct" / "sample_info.json").read_text())
    assert info["classifier"].endswith("ct_noise128.safetensors") and info["nfe_per_image"] == (2 + 2 * (1 + 1)) / 2
    # starting a blur prior from a whole-image prior's weights (fine-tuning)
    assert main(["train", str(data), "--prior", "blur", "--size", "16", "--init", ckpt["whole"],
                 "--out", str(tmp_path / "b2"), *TINY]) == 0
    resumed = [*TINY[:TINY.index("--steps")], "--steps", "4", "--window", "0", "1"]  # no --init: the saved one
    assert main(["train", str(data), "--prior", "blur", "--size", "16", "--resume", "--out", str(tmp_path / "b2"),
                 *resumed]) == 0
    saved = json.loads((tmp_path / "b2" / "train_config.json").read_text())
    assert saved["init"] == ckpt["whole"] and json.loads((tmp_path / "b2" / "prior.json").read_text())["info"][
        "step"] == 4

    capsys.readouterr()
    refusals = [
        (["sample", "--prior", ckpt["whole"], "--sampler", "dlg", *common], "needs --classifier"),
        (["sample", "--prior", ckpt["whole"], "--eta", "1", *common], "--eta applies"),
        (["sample", "--prior", ckpt["blur"], "--sampler", "heun", *common], "own reverse process"),
        (["sample", "--prior", ckpt["noise-level"], *common], "noise-level classifier"),
        (["sample", "--prior", ckpt["whole"], "--sampler", "pyramidal", *common], "several resolutions"),
        (["sample", "--prior", ckpt["whole"], "--sampler", "dlg", "--classifier", ckpt["blur"], *common],
         "a noise-level classifier (wavepatch train --prior noise-level) is needed"),
        (["sample", "--prior", ckpt["whole"], "--sampler", "dlg", "--classifier", ckpt["noise-level"],
          "--chains", "9", *common], "exceeds --n"),
        (["train", str(data), "--prior", "patch", "--pyramid", "1,2", "--out", str(tmp_path / "x"), *TINY],
         "--prior pyramidal"),
        (["train", str(data), "--prior", "patch", "--size", "16", "--init", ckpt["whole"],
          "--out", str(tmp_path / "y"), *TINY], "does not match"),
        (["train", str(data), "--prior", "whole", "--size", "16", "--init", ckpt["whole"], "--out",
          str(tmp_path / "z"), *TINY[:-3], "--window", "0", "2"], "trained on window"),
        (["sample", "--prior", ckpt["whole"], "--sampler", "dlg", "--classifier", ckpt["noise-level"],
          "--chains", "3", "--batch", "2", *common[:-5], "--out", str(out), "--no-progress"], "--batch 2"),
        (["sample", "--prior", str(prior_path("shape_adrenal64")), "--eta", "1", *common], "shape priors"),
        (["train", str(data), "--prior", "blur", "--size", "16", "--resume", "--init", ckpt["blur"],
          "--out", str(tmp_path / "b2"), *TINY], "started from --init"),
    ]
    for argv, message in refusals:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
