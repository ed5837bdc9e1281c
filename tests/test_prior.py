"""Score priors: preconditioning algebra, patch layout, positions, checkpoints, training, analytic Gaussian sampling."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from wavepatch.prior.checkpoint import CheckpointError, load_prior, save_prior
from wavepatch.prior.model import PriorConfig, build_prior, make_denoiser
from wavepatch.prior.patches import (
    denoise_fixed_grid,
    denoise_overlapping,
    denoise_random_shift,
    denoise_shifted_grid,
    extract_patches,
    patch_layout,
    stitch_patches,
)
from wavepatch.prior.precond import edm_loss_weight, edm_scalings, score_from_denoised
from wavepatch.prior.train import draw_batch, train
from wavepatch.prior.train_config import TrainConfig
from wavepatch.prior.unet import UNet, UNetConfig
from wavepatch.sampling.unconditional import karras_sigmas, sample

SIGMAS = torch.tensor([0.002, 0.05, 0.5, 2.0, 80.0], dtype=torch.float64)


def test_edm_scalings_give_unit_variance_input_and_target():
    sd = 0.5
    c_skip, c_out, c_in, c_noise = edm_scalings(SIGMAS, sd)
    # input c_in (x0 + sigma n) has unit variance for Var x0 = sd^2
    assert torch.allclose(c_in**2 * (sd**2 + SIGMAS**2), torch.ones_like(SIGMAS))
    # effective target (x0 - c_skip (x0 + sigma n)) / c_out has unit variance
    var_target = ((1 - c_skip) ** 2 * sd**2 + c_skip**2 * SIGMAS**2) / c_out**2
    assert torch.allclose(var_target, torch.ones_like(SIGMAS))
    # the loss weight undoes c_out^2: lambda * ||D - x0||^2 = ||F - target||^2
    assert torch.allclose(edm_loss_weight(SIGMAS, sd) * c_out**2, torch.ones_like(SIGMAS))
    assert torch.allclose(c_noise, SIGMAS.log() / 4)


def test_tweedie_score_matches_autograd_of_gaussian_log_density():
    sigma, s0 = 0.7, 1.3
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    logp = -(x**2).sum() / (2 * (s0**2 + sigma**2))
    (grad,) = torch.autograd.grad(logp, x)
    wiener = x.detach() * s0**2 / (s0**2 + sigma**2)
    assert torch.allclose(score_from_denoised(x.detach(), wiener, sigma), grad)


@pytest.mark.parametrize("n,p", [(16, 4), (20, 8), (23, 8), (8, 8), (5, 4)])
def test_extract_and_stitch_are_exact_inverses(n, p):
    k, m = patch_layout(n, p)
    assert k * p == n + m and 1 <= m <= p
    window = torch.randn(2, 3, k * p, k * p)
    patches = extract_patches(window, p)
    assert patches.shape == (2 * k * k, 3, p, p)
    assert torch.equal(stitch_patches(patches, 2, k), window)
    assert torch.equal(patches[1], window[0, :, :p, p:2 * p])  # row-major order


def _pos_net(channel):
    return lambda patches, sigma, pos: pos[:, channel:channel + 1]


@pytest.mark.parametrize("n,p", [(16, 4), (23, 8), (12, 12)])
def test_every_shift_denoises_each_pixel_once_with_its_image_position(n, p):
    _, m = patch_layout(n, p)
    x = torch.randn(2, 1, n, n)
    coords = (2 * torch.arange(n) + 1) / n - 1
    for a in range(m + 1):
        for b in range(m + 1):
            plus_one = denoise_shifted_grid(lambda q, s, pos: q + 1, x, 0.1, p, (a, b))
            assert torch.allclose(plus_one, x + 1)
            rows = denoise_shifted_grid(_pos_net(0), x, 0.1, p, (a, b))
            cols = denoise_shifted_grid(_pos_net(1), x, 0.1, p, (a, b))
            assert torch.allclose(rows[0, 0], coords[:, None].expand(n, n))
            assert torch.allclose(cols[1, 0], coords[None, :].expand(n, n))


def test_square_2d_shift_is_one_draw_of_two_and_non_square_images_work():
    # the PaDIS stream of square images: a single randint(0, M + 1, (2,)) per call, as in every earlier version
    shifts = []
    x = torch.zeros(1, 1, 20, 20)
    net = lambda q, s, pos: shifts.append(pos[0, :, 0, 0].clone()) or q  # noqa: E731
    denoise_random_shift(net, x, 0.5, 8, generator=torch.Generator().manual_seed(5))
    _, m = patch_layout(20, 8)
    a, b = torch.randint(0, m + 1, (2,), generator=torch.Generator().manual_seed(5)).tolist()
    assert torch.allclose(shifts[0], (2 * (torch.tensor([a, b]) - m) + 1) / 20 - 1)
    # non-square images and patch shapes: every pixel once, at its own position
    x = torch.randn(2, 1, 13, 22)
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        assert torch.equal(denoise_random_shift(lambda q, s, pos: q + 1, x, 0.1, (4, 8), generator=gen), x + 1)
    cols = denoise_random_shift(_pos_net(1), x, 0.1, (4, 8), generator=gen)
    assert torch.allclose(cols[0, 0], ((2 * torch.arange(22) + 1) / 22 - 1).expand(13, 22))


def test_overlapping_and_fixed_grid_baselines_are_exact_for_the_identity():
    x = torch.randn(2, 1, 30, 30)
    identity = lambda q, s, pos: q  # noqa: E731
    assert torch.allclose(denoise_overlapping(identity, x, 0.3, 8, overlap=3), x, atol=1e-6)
    assert torch.allclose(denoise_fixed_grid(identity, x, 0.3, 8), x)
    rows = denoise_overlapping(_pos_net(0), x, 0.3, 8, overlap=3)
    assert torch.allclose(rows[0, 0, :, 0], (2 * torch.arange(30) + 1) / 30 - 1, atol=1e-6)


def test_random_shift_changes_between_calls_and_border_is_noise_at_sigma():
    seen = set()
    gen = torch.Generator().manual_seed(0)

    def net(q, s, pos):
        seen.add(round(float(pos[0, 0, 0, 0]), 4))
        return q

    x = torch.zeros(1, 1, 16, 16)
    for _ in range(20):
        denoise_random_shift(net, x, 0.5, 8, generator=gen)
    assert len(seen) > 3
    border = []
    denoise_shifted_grid(lambda q, s, pos: border.append(q[0].clone()) or q, x, 2.0, 8, (0, 0))
    assert abs(border[0].std().item() - 2.0) < 0.5  # the first patch lies in the padding: pure N(0, sigma^2)


def test_unet_shapes_and_divisor():
    net = UNet(UNetConfig(in_channels=3, out_channels=1, base_channels=8, channel_mult=(1, 2), num_blocks=1))
    for size in (8, 12, 24):
        assert net(torch.randn(2, 3, size, size), torch.zeros(2)).shape == (2, 1, size, size)
    with pytest.raises(ValueError, match="multiple of 2"):
        net(torch.randn(1, 3, 9, 9), torch.zeros(1))


def _tiny_config(kind="patch"):
    unet = UNetConfig(in_channels=3 if kind == "patch" else 1, base_channels=8, channel_mult=(1, 2), num_blocks=1)
    return PriorConfig(kind=kind, unet=unet, image_size=16, patch_size=8)


def test_whole_prior_pads_odd_sizes_and_patch_prior_takes_any_size():
    for kind in ("whole", "patch"):
        cfg = _tiny_config(kind)
        model = build_prior(cfg).eval()
        for mode in ("padis", "stitch", "average"):
            denoise = make_denoiser(model, cfg, mode=mode, generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                out = denoise(torch.randn(2, 1, 21, 21), 0.5)
            assert out.shape == (2, 1, 21, 21) and torch.isfinite(out).all()


def test_checkpoint_round_trip_and_refusals(tmp_path):
    cfg = _tiny_config()
    model = build_prior(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    x, pos = torch.randn(2, 1, 8, 8), torch.rand(2, 2, 8, 8)
    path = save_prior(tmp_path / "p.safetensors", model, cfg, extra={"note": "test"})
    loaded, cfg2 = load_prior(path)
    assert cfg2 == cfg and json.loads(path.with_suffix(".json").read_text())["info"]["note"] == "test"
    with torch.no_grad():
        assert torch.allclose(loaded(x, 0.3, pos), model(x, 0.3, pos), atol=1e-6)
        half, _ = load_prior(save_prior(tmp_path / "h.safetensors", model, cfg, half=True))
        assert torch.allclose(half(x, 0.3, pos), model(x, 0.3, pos), atol=1e-2)
    with pytest.raises(CheckpointError, match="a whole prior is needed"):
        load_prior(path, expect_kind="whole")
    # weights of one architecture under the config of another
    other = _tiny_config()
    other.unet.base_channels = 16
    meta = {"format": "wavepatch-prior", "version": 1, "config": other.to_dict(), "info": {}}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "x.safetensors"),
              metadata={"wavepatch": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="does not match its architecture"):
        load_prior(tmp_path / "x.safetensors")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="not a wavepatch prior"):
        load_prior(tmp_path / "plain.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x80\x04 not a tensor file")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_prior(tmp_path / "junk.safetensors")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_prior(tmp_path / "missing.safetensors")


def _gaussian_denoiser(mu, cov):
    """Exact D(x, sigma) = mu + Sigma (Sigma + sigma^2 I)^-1 (x - mu) for x (B, 1, h, w), flattened."""
    evals, evecs = torch.linalg.eigh(cov)

    def denoise(x, sigma):
        s = float(sigma)
        flat = x.reshape(x.shape[0], -1).double() - mu
        gain = evecs @ torch.diag(evals / (evals + s**2)) @ evecs.T
        return (mu + flat @ gain.T).reshape(x.shape).to(x.dtype)

    return denoise


@pytest.mark.parametrize("sampler,steps,options,tol", [
    ("heun", 24, {}, 0.08), ("euler", 200, {}, 0.1), ("pc", 100, {}, 0.1), ("langevin", 100, {"n_inner": 10}, 0.1)])
def test_samplers_reproduce_gaussian_covariance_with_the_exact_denoiser(sampler, steps, options, tol):
    # 3x3 images with an exponentially correlated covariance (condition number ~ 30) and non-zero mean
    h = 3
    idx = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(h), indexing="ij"), -1).reshape(-1, 2).double()
    dist = torch.cdist(idx, idx)
    cov = 0.04 * torch.exp(-dist / 1.5) + 1e-3 * torch.eye(h * h, dtype=torch.float64)
    mu = torch.linspace(0.2, 0.8, h * h, dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    x, nfe = sample(_gaussian_denoiser(mu, cov), (4000, 1, h, h), sampler, steps, sigma_min=0.002, sigma_max=20.0,
                    generator=gen, **options)
    flat = x.reshape(4000, -1).double()
    emp_cov = torch.cov(flat.T)
    assert torch.linalg.norm(emp_cov - cov) / torch.linalg.norm(cov) < tol
    assert (flat.mean(0) - mu).abs().max() < 0.02
    assert nfe > 0


def test_karras_sigmas_endpoints():
    s = karras_sigmas(10, 0.002, 80.0)
    assert s.shape == (11,) and math.isclose(float(s[0]), 80.0) and math.isclose(float(s[9]), 0.002)
    assert float(s[10]) == 0 and bool((s[:-1].diff() < 0).all())


def _write_data(tmp_path, n=6, size=16):
    yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    rng = np.random.default_rng(0)
    imgs = [np.clip(0.5 + 0.3 * np.sin(3 * xx + k) * np.cos(2 * yy) + 0.02 * rng.standard_normal((size, size)), 0, 1)
            for k in range(n)]
    path = tmp_path / "train.npy"
    np.save(path, np.stack(imgs).astype(np.float32))
    return path


def _cfg(tmp_path, data, **kw):
    base = dict(data=[str(data)], out=str(tmp_path / "run"), prior="patch", size=16, window=None,
                patch_sizes=(8, 16), patch_probs=(0.5, 0.5), base_channels=8, channel_mult=(1, 2), num_blocks=1,
                attention=False, batch=4, steps=6, lr=1e-3, warmup=1, checkpoint_every=3, log_every=1,
                device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def test_draw_batch_positions_follow_the_content_under_flips(tmp_path):
    """Every patch must look like a patch cut from the image or from its mirror image, positions included."""
    from wavepatch.io import SliceDataset

    size = 16
    cols = (2 * np.arange(size) + 1) / size - 1
    np.save(tmp_path / "c.npy", np.tile(cols, (3, size, 1)).astype(np.float32) * 0.5 + 0.5)
    data = SliceDataset(tmp_path / "c.npy", size=size, window=(0.0, 1.0))
    cfg = _cfg(tmp_path, tmp_path / "c.npy", pad=4, flip=True)
    gen = torch.Generator().manual_seed(3)
    signs = set()
    for _ in range(5):
        patches, pos = draw_batch(data, cfg, gen)
        content = (patches - 0.5) / 0.5  # the image stores its own column coordinate c; its mirror shows -c at c
        assert bool((pos[:, 1].diff(dim=-1) > 0).all()) and bool((pos[:, 0].diff(dim=-2) > 0).all())
        for q in range(patches.shape[0]):
            inside = (pos[q].abs() < 1).all(dim=0)
            if not inside.any():
                continue
            same = torch.allclose(content[q, 0][inside], pos[q, 1][inside], atol=1e-5)
            mirrored = torch.allclose(content[q, 0][inside], -pos[q, 1][inside], atol=1e-5)
            assert same or mirrored
            signs.add(same)
    assert signs == {True, False}


def test_training_loss_decreases_and_resume_is_exact(tmp_path):
    data = _write_data(tmp_path)
    # uninterrupted 6 steps
    straight = _cfg(tmp_path, data, out=str(tmp_path / "a"))
    train(straight, progress=False)
    # 3 steps, "killed", then resumed to 6
    first = _cfg(tmp_path, data, out=str(tmp_path / "b"), steps=3)
    train(first, progress=False)
    train(_cfg(tmp_path, data, out=str(tmp_path / "b")), resume=True, progress=False)
    a, _ = load_prior(tmp_path / "a" / "prior.safetensors")
    b, _ = load_prior(tmp_path / "b" / "prior.safetensors")
    for (ka, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(va, vb), ka
    log = (tmp_path / "b" / "train_log.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in log[1:]] == [1, 2, 3, 4, 5, 6]
    assert (tmp_path / "b" / "loss.png").stat().st_size > 0
    with pytest.raises(ValueError, match="base_channels"):
        train(_cfg(tmp_path, data, out=str(tmp_path / "b"), base_channels=16, steps=8), resume=True, progress=False)
    with pytest.raises(FileExistsError):
        train(_cfg(tmp_path, data, out=str(tmp_path / "b")), progress=False)


@pytest.mark.slow
def test_dsm_loss_decreases_on_a_tiny_problem(tmp_path):
    data = _write_data(tmp_path)
    cfg = _cfg(tmp_path, data, prior="whole", steps=150, batch=8, lr=2e-3, checkpoint_every=150, p_mean=-1.0)
    train(cfg, progress=False)
    losses = [float(r.split(",")[1]) for r in (tmp_path / "run" / "train_log.csv").read_text().splitlines()[1:]]
    assert np.mean(losses[-30:]) < 0.6 * np.mean(losses[:30])


def test_generation_metrics_separate_structure_from_noise():
    from wavepatch.metrics.generation import (
        generation_report,
        radial_power_spectrum,
        sliced_wasserstein_pyramid,
        spectral_noise_baseline,
    )

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64] / 64.0
    discs = np.stack([((xx - 0.5 - 0.1 * rng.random()) ** 2 + (yy - 0.5) ** 2 < 0.1).astype(np.float32) * 0.8
                      for _ in range(12)])
    more = np.stack([((xx - 0.5) ** 2 + (yy - 0.45 - 0.1 * rng.random()) ** 2 < 0.1).astype(np.float32) * 0.8
                     for _ in range(12)])
    noise = spectral_noise_baseline(discs, 12)
    # the baseline reproduces the power spectrum (up to sampling and clipping) but not the structure
    assert np.mean(np.abs(np.log10(radial_power_spectrum(noise)[1:20] / radial_power_spectrum(discs)[1:20]))) < 0.3
    assert np.mean(sliced_wasserstein_pyramid(more, discs)) < 0.5 * np.mean(sliced_wasserstein_pyramid(noise, discs))
    rep = generation_report(more, discs, window=(-1000.0, 1000.0), train=more)
    assert rep["histogram_unit"] == "HU" and rep["baseline_fitted_on"] == "training data"
    assert rep["generated"]["histogram_w1"] < rep["baseline"]["histogram_w1"]


def test_feature_1nna_known_cases_same_distribution_and_noise():
    from wavepatch.metrics.generation import one_nna_features, spectral_noise_baseline

    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:48, :48] / 48.0

    def phantoms(n):
        out = []
        for _ in range(n):
            cx, cy, r = 0.5 + 0.1 * rng.standard_normal(), 0.5 + 0.1 * rng.standard_normal(), 0.15 + 0.15 * rng.random()
            img = 0.7 * (((xx - cx) ** 2 + (yy - cy) ** 2) < r**2) + 0.03 * rng.standard_normal((48, 48))
            out.append(img.clip(0, 1))
        return np.stack(out).astype(np.float32)

    real_a, real_b = phantoms(80), phantoms(80)
    same = one_nna_features(real_a, real_b)
    assert 0.35 < same < 0.65  # same distribution: chance level
    assert one_nna_features(spectral_noise_baseline(real_a, 80), real_b) > 0.95  # right spectrum, no structure
    assert one_nna_features(real_a[:5], real_b) == one_nna_features(real_a[:5], real_b)  # seeded subsample
    with pytest.raises(ValueError, match="at least 2"):
        one_nna_features(real_a[:1], real_b)
