"""Score priors from noisy training data (Wu et al.): the wavelet denoising sub-network, the noise simulators, the
joint training loss, the wavelet-regularised sampler and ``wavepatch train --noisy-data ... --wavelet-denoiser``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from wavepatch.cli import main
from wavepatch.io import SliceDataset
from wavepatch.linalg import soft_threshold
from wavepatch.physics.ct import ParallelBeamCT
from wavepatch.physics.mri import SingleCoilMRI, uniform_1d_mask
from wavepatch.prior.model import PriorConfig, build_prior
from wavepatch.prior.noisy_data import noise_sampler, noisy_training_set, simulate
from wavepatch.prior.noisy_training import JointNoisyPrior
from wavepatch.prior.unet import UNetConfig
from wavepatch.prior.wavelet_denoiser import WaveletDenoiser, band_noise_std, mad_noise_std
from wavepatch.sampling.unconditional import geometric_sigmas
from wavepatch.sampling.wavelet_regularized import data_step, wavelet_regularized_langevin
from wavepatch.wavelets import wavelet_shrink

TINY = ["--channels", "8", "--channel-mult", "1,2", "--blocks", "1", "--no-attention", "--batch", "4",
        "--lr", "1e-3", "--warmup", "1", "--log-every", "1", "--no-progress"]


def smooth_image(n: int = 64, batch: int = 1) -> torch.Tensor:
    """A smooth test image in [0, 1] (B, 1, n, n): a soft-edged disc on a gentle ramp."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, n), torch.linspace(-1, 1, n), indexing="ij")
    img = 0.3 + 0.2 * xx + 0.4 * torch.sigmoid((0.5 - (xx**2 + yy**2).sqrt()) * 20)
    return img.expand(batch, 1, n, n).clone()


def gaussian_denoiser(mean: float = 0.5, std: float = 0.2):
    """The exact denoiser of x0 ~ N(mean, std^2 I): D(x, sigma) = (std^2 x + sigma^2 mean) / (std^2 + sigma^2)."""
    return lambda x, s: (std**2 * x + float(s) ** 2 * mean) / (std**2 + float(s) ** 2)


# --- the sub-network -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shifts,band_filter", [(1, False), (3, True)])
def test_zero_thresholds_give_the_identity(shifts, band_filter):
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    net = WaveletDenoiser(levels=3, shifts=shifts, tau_init=0.0, band_filter=band_filter)
    assert torch.allclose(net(x, 0.1), x, atol=1e-5)


def test_thresholds_reduce_white_noise_on_a_smooth_image():
    x = smooth_image(64, batch=2)
    noisy = x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    for shifts in (1, 4):
        net = WaveletDenoiser(levels=3, shifts=shifts, tau_init=2.0)
        with torch.no_grad():
            out = net(noisy, 0.1)
        assert ((out - x) ** 2).mean() < 0.3 * ((noisy - x) ** 2).mean()


def test_noise_std_estimates():
    n = 0.07 * torch.randn(3, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    s = band_noise_std(n, 3)
    assert s.shape == (3, 3, 3) and torch.allclose(s[:, 1:], torch.tensor(0.07), rtol=0.15)  # 16x16+ bands
    assert torch.allclose(mad_noise_std(smooth_image(64, 3) + n, 3), torch.tensor(0.07), rtol=0.1)
    assert torch.equal(soft_threshold(torch.tensor([-3.0, -0.5, 0.5, 2.0]), 1.0), torch.tensor([-2.0, 0, 0, 1.0]))


def test_gradients_reach_thresholds_gains_and_filters():
    x = smooth_image(32, batch=2)
    noisy = x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    net = WaveletDenoiser(levels=2, shifts=2, tau_init=0.5, band_filter=True)
    ((net(noisy, band_noise_std(noisy - x, 2)) - x) ** 2).mean().backward()
    for p in (net.tau, net.gain, net.filters):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    again = WaveletDenoiser.from_info(json.loads(json.dumps(net.info())))
    with torch.no_grad():
        assert torch.allclose(again(noisy, 0.1), net(noisy, 0.1), atol=1e-6)


# --- noise simulators -------------------------------------------------------------------------------------------

def test_gaussian_noise_has_the_requested_std():
    x = smooth_image(64, batch=4)
    g = torch.Generator().manual_seed(4)
    assert abs(float((simulate("gaussian", 0.03)(x, g) - x).std()) - 0.03) < 0.001
    assert abs(float(noise_sampler("gaussian", 0.03, 64)(x, g).std()) - 0.03) < 0.001


def test_lowdose_noise_follows_the_dose_and_its_sampler_matches_it(ct_dir):
    x = SliceDataset(ct_dir, size=32, window=(-1000.0, 1000.0)).images
    g = torch.Generator().manual_seed(0)
    assert (simulate("lowdose", 1e12)(x, g) - x).abs().max() < 1e-3  # noise insertion: no noise at infinite dose
    fbp = simulate("lowdose-fbp", 1e12)(x, g)  # the low-dose FBP image: at infinite dose, the FBP of x
    assert torch.allclose(fbp, ParallelBeamCT(32, 180).fbp(ParallelBeamCT(32, 180).A(x), "hann"), atol=1e-3)
    rms = {}
    for i0 in (1e3, 4e3):
        noisy = noisy_training_set(x, "lowdose", i0, (-1000.0, 1000.0), seed=1)
        rms[i0] = float(((noisy - x) ** 2).mean().sqrt())
        fbp_noise = noisy_training_set(x, "lowdose-fbp", i0, (-1000.0, 1000.0), seed=1) - fbp
        assert abs(float(fbp_noise.pow(2).mean().sqrt()) / rms[i0] - 1) < 0.25
        assert torch.equal(noisy, noisy_training_set(x, "lowdose", i0, (-1000.0, 1000.0), seed=1))  # reproducible
        sampled = noise_sampler("lowdose", i0, 32)(noisy, torch.Generator().manual_seed(5))
        assert abs(float(sampled.pow(2).mean().sqrt()) / rms[i0] - 1) < 0.25  # the scanner's noise, drawn on y
    assert abs(rms[1e3] / rms[4e3] - 2.0) < 0.3  # Poisson: noise std ~ 1 / sqrt(dose)
    with pytest.raises(ValueError, match="HU window"):
        noise_sampler("lowdose", 1e4, 32, window=(0.0, 1.0))


# --- joint training ---------------------------------------------------------------------------------------------

def _tiny_joint(feedback_after: int = 5) -> JointNoisyPrior:
    unet = UNetConfig(base_channels=8, channel_mult=(1, 2), num_blocks=1, attention=False)
    score = build_prior(PriorConfig(kind="whole", unet=unet, image_size=16))
    return JointNoisyPrior(score, WaveletDenoiser(levels=2), noise_sampler("gaussian", 0.1, 16),
                           feedback=1.0, feedback_after=feedback_after)


def test_joint_loss_is_finite_and_decreases():
    torch.manual_seed(0)
    model = _tiny_joint()
    clean = smooth_image(16, batch=8) * torch.linspace(0.6, 1.0, 8).reshape(-1, 1, 1, 1)
    y = clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(6))
    opt = torch.optim.Adam([{"params": model.score.parameters(), "lr": 3e-3},
                            {"params": model.cleaner.parameters(), "lr": 3e-2}])

    def evaluate() -> float:
        model.eval()
        with torch.no_grad():
            loss = model(y, torch.Generator().manual_seed(123), -1.2, 1.2)
        model.train()
        return float(loss)

    before = evaluate()
    for step in range(40):
        loss = model(y, torch.Generator().manual_seed(step), -1.2, 1.2)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        if step == 0:  # both blocks learn; the cleaner only from its own terms (stop-gradient on the DSM input)
            assert model.cleaner.tau.grad.abs().sum() > 0
            assert all(p.grad is not None for p in model.score.parameters())
        opt.step()
    assert int(model.step) == 40 and model.gamma() == 1.0 and model.last_losses["feedback"] > 0
    assert evaluate() < 0.8 * before


def test_score_model_gets_no_gradient_through_the_cleaner():
    model = _tiny_joint(feedback_after=0)
    y = smooth_image(16, batch=2)
    model.score.requires_grad_(False)
    model.feedback = 0.0
    model(y, torch.Generator().manual_seed(0), -1.2, 1.2).backward()
    tau_grad_self_only = model.cleaner.tau.grad.clone()
    model.cleaner.zero_grad()
    model.score.requires_grad_(True)  # adding the DSM term must not change the cleaner's gradient
    model(y, torch.Generator().manual_seed(0), -1.2, 1.2).backward()
    assert torch.allclose(model.cleaner.tau.grad, tau_grad_self_only)


# --- the wavelet-regularised sampler ----------------------------------------------------------------------------

def test_wavelet_shrink_and_data_steps():
    x = smooth_image(32)
    assert torch.equal(wavelet_shrink(x, 0.0, "haar"), x)
    low = wavelet_shrink(x, 1e3, "haar", levels=2)  # every detail removed: the 4 x 4 block means of the Haar low-pass
    assert torch.allclose(low, torch.nn.functional.avg_pool2d(x, 4).repeat_interleave(4, -1).repeat_interleave(4, -2),
                          atol=1e-5)
    mri = SingleCoilMRI(uniform_1d_mask(32, 4.0), (1, 32, 32))
    y = mri.A(x)
    z = torch.zeros_like(x)
    for op in (mri, ParallelBeamCT(32, 8)):  # gradient path (complex k-space), SART (CT)
        y = op.A(x)
        assert (op.A(z + data_step(op)(z, y)) - y).abs().norm() < 0.75 * (op.A(z) - y).abs().norm()


@pytest.mark.parametrize("data", ["sart", "map"])
@pytest.mark.parametrize("kind", ["ct", "mri"])
def test_sampler_runs_and_improves_data_consistency(kind, data):
    from wavepatch.fidelity import GaussianFidelity  # local: this file's import lines are edited elsewhere

    n = 16
    x0 = smooth_image(n)
    op = ParallelBeamCT(n, 8) if kind == "ct" else SingleCoilMRI(uniform_1d_mask(n, 2.0), (1, n, n))
    y = op.A(x0)
    g = torch.Generator().manual_seed(7)
    sigmas = geometric_sigmas(8, 0.01, 1.0)
    x_init = sigmas[0] * torch.randn(2, 1, n, n, generator=g)
    calls = [0]
    base = gaussian_denoiser()

    def denoise(x, s):
        calls[0] += 1
        return base(x, s)

    out = wavelet_regularized_langevin(denoise, GaussianFidelity(op, y).expand(2), x_init, sigmas, n_inner=2,
                                       data=data, generator=g)
    assert out.shape == x_init.shape and torch.isfinite(out).all() and calls[0] == 2 * 8 + 1

    def residual(x):
        return float((op.A(x) - y).abs().pow(2).sum().sqrt())

    assert residual(out) < 0.25 * residual(x_init)
    assert float(((out - x0) ** 2).mean()) < float(((x_init - x0) ** 2).mean())


def test_map_data_step_is_the_closed_form_map_on_a_denoising_problem():
    from wavepatch.fidelity import GaussianFidelity
    from wavepatch.physics.inpaint import Inpainting
    from wavepatch.sampling.steps import langevin_step

    n, std, s, eps = 8, 0.1, 0.3, 1.0
    x0 = smooth_image(n)
    y = x0 + std * torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    identity = Inpainting(torch.ones(n, n))
    noisy, clean = GaussianFidelity(identity, y, std), GaussianFidelity(identity, y)
    x_init = torch.rand(1, 1, n, n, generator=torch.Generator().manual_seed(2))
    den = gaussian_denoiser()

    def run(fidelity, data):
        return wavelet_regularized_langevin(den, fidelity, x_init, torch.tensor([s, 0.0]), n_inner=1, eps=eps, lam=0.0,
                                            data=data, generator=torch.Generator().manual_seed(3))

    # by hand: one Langevin step, then the MAP combination of the iterate (std s) with y (std `std`), then D
    x = langevin_step(x_init, (den(x_init, s) - x_init) / s**2, eps * s**2 / 2, torch.Generator().manual_seed(3))
    x = (x / s**2 + y / std**2) / (1 / s**2 + 1 / std**2)
    assert torch.allclose(run(noisy, "map"), den(x, s), atol=1e-6)
    assert torch.equal(run(noisy, "auto"), run(noisy, "map"))  # noisy data: auto is map
    assert torch.equal(run(clean, "auto"), run(clean, "sart"))  # noiseless: auto is the paper's SART step
    with pytest.raises(ValueError, match="data must be"):
        run(noisy, "exact")


# --- the CLI ------------------------------------------------------------------------------------------------------

@pytest.fixture()
def npy_data(tmp_path):
    yy, xx = np.meshgrid(np.linspace(-1, 1, 24), np.linspace(-1, 1, 24), indexing="ij")
    imgs = [np.clip(0.5 + 0.3 * np.cos(4 * xx + k) * yy, 0, 1) for k in range(5)]
    path = tmp_path / "images.npy"
    np.save(path, np.stack(imgs).astype(np.float32))
    return path


@pytest.mark.slow
def test_cli_train_on_noisy_data_with_the_wavelet_denoiser(tmp_path, npy_data, ct_dir, capsys):
    from wavepatch.prior.checkpoint import load_prior
    from wavepatch.prior.model import make_denoiser

    run = tmp_path / "joint"
    common = ["--prior", "whole", "--size", "16", "--levels", "2", "--feedback-after", "2", "--checkpoint-every", "2",
              *TINY]
    assert main(["train", str(ct_dir), "--noisy-data", "lowdose", "--noise-level", "2e3", "--wavelet-denoiser",
                 "--steps", "4", "--out", str(run), *common]) == 0
    assert "lowdose noisy scans (level 2000)" in capsys.readouterr().out
    meta = json.loads((run / "prior.json").read_text())
    info = meta["info"]
    assert meta["config"]["kind"] == "whole" and info["step"] == 4
    assert math.isfinite(info["noisy_data"]["psnr_vs_clean"]) and info["noisy_data"]["kind"] == "lowdose"
    assert np.array(info["wavelet_denoiser"]["tau"]).shape == (2, 3)
    assert info["train_config"]["wavelet_denoiser"] is True
    model, cfg = load_prior(run / "prior.safetensors")  # a plain whole-image prior
    with torch.no_grad():
        assert torch.isfinite(make_denoiser(model, cfg)(torch.rand(1, 1, 16, 16), 0.1)).all()
    # resume continues the joint run (sub-network state, optimizer groups and step counter included)
    assert main(["train", str(ct_dir), "--noisy-data", "lowdose", "--noise-level", "2e3", "--wavelet-denoiser",
                 "--steps", "6", "--out", str(run), "--resume", *common]) == 0
    assert json.loads((run / "prior.json").read_text())["info"]["step"] == 6

    gauss = tmp_path / "gauss"
    assert main(["train", str(npy_data), "--window", "0", "1", "--noisy-data", "gaussian", "--noise-level", "0.1",
                 "--steps", "2", "--out", str(gauss), *common]) == 0
    nd = json.loads((gauss / "prior.json").read_text())["info"]["noisy_data"]
    assert abs(nd["rms_vs_clean"] - 0.1) < 0.02 and "wavelet_denoiser" not in json.loads(
        (gauss / "prior.json").read_text())["info"]

    capsys.readouterr()
    assert main(["train", str(npy_data), "--window", "0", "1", "--wavelet-denoiser", "--steps", "2",
                 "--out", str(tmp_path / "x"), *common]) == 2
    assert "needs --prior whole and --noisy-data" in capsys.readouterr().err
    assert main(["train", str(npy_data), "--window", "0", "1", "--noisy-data", "lowdose", "--steps", "2",
                 "--out", str(tmp_path / "y"), *common]) == 2
    assert "HU window" in capsys.readouterr().err
