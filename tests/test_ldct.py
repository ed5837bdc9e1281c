"""The low-dose CT translator (issue 22): metric loss, data construction, network, checkpoints, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from wavepatch.ldct_data import low_dose_images, training_pairs, unpaired_split
from wavepatch.prior.checkpoint import CheckpointError, load_prior, load_translator, save_translator
from wavepatch.prior.ldct import LDCTConfig, Translator, hu_guard, wavelet_low_band
from wavepatch.prior.ldct_losses import gather, patch_metric_loss, sample_locations
from wavepatch.prior.ldct_train import LDCTTrainConfig, train_ldct
from wavepatch.resources import prior_path

T = 0.15


@pytest.fixture()
def run_cli(capsys):
    """``wavepatch ARGS`` in process -> (exit status, stderr)."""
    from wavepatch.cli import main

    def run(*argv):
        code = main([str(a) for a in argv])
        return code, capsys.readouterr().err

    return run


def test_metric_loss_known_values():
    # orthonormal features, output = input: every positive similarity 1, every negative 0
    f = torch.eye(4)[None, :3]  # (1, N=3, D=4)
    expected = (-math.exp(1 / T) + 1 + 1) / 4
    assert patch_metric_loss(f, f.clone(), T).item() == pytest.approx(expected, rel=1e-6)
    # output = -input: positives -1; negatives unchanged (0)
    assert patch_metric_loss(f, -f, T).item() == pytest.approx((-math.exp(-1 / T) + 2) / 4, rel=1e-6)
    # all features identical: positives and negatives 1 -> (-e + e + e) / D
    same = torch.nn.functional.normalize(torch.ones(2, 5, 3), dim=-1)
    assert patch_metric_loss(same, same, T).item() == pytest.approx(math.exp(1 / T) / 3, rel=1e-5)


def test_metric_loss_matches_loop():
    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(2, 6, 8, generator=g), dim=-1)
    b = torch.nn.functional.normalize(torch.randn(2, 6, 8, generator=g), dim=-1)
    pos, neg_in, neg_out = [], [], []
    for k in range(2):
        for i in range(6):
            pos.append(math.exp(float(a[k, i] @ b[k, i]) / T))
            for j in range(6):
                if i != j:
                    neg_in.append(math.exp(float(a[k, i] @ a[k, j]) / T))
                    neg_out.append(math.exp(float(b[k, i] @ b[k, j]) / T))
    expected = (-np.mean(pos) + np.mean(neg_in) + np.mean(neg_out)) / 8
    assert patch_metric_loss(a, b, T).item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError):
        patch_metric_loss(a[:, :1], b[:, :1], T)


def test_gather_and_locations():
    fmap = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    idx = sample_locations(fmap, 5, torch.Generator().manual_seed(1))
    assert len(set(idx.tolist())) == 5
    got = gather(fmap, idx)
    assert got.shape == (2, 5, 3)
    r, c = idx[2] // 4, idx[2] % 4
    assert torch.equal(got[1, 2], fmap[1, :, r, c])


def test_unpaired_split_never_pairs_a_slice_with_itself():
    for n in (8, 30, 64, 65):
        low, normal = unpaired_split(n, block=4)
        assert set(low).isdisjoint(normal) and len(low) + len(normal) == n
        assert all((p // 4) % 2 == 0 for p in low) and all((p // 4) % 2 == 1 for p in normal)
    with pytest.raises(ValueError, match="at least 8"):
        unpaired_split(7)


def test_training_pairs_unpaired_and_paired():
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(8, 1, 4, 4, generator=g) * 0.5 + 0.25  # smooth slices: FBP's blur error stays small
    imgs = torch.nn.functional.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False)
    low, normal, info = training_pairs(imgs, "metric", doses=(1e4,), realisations=1)
    assert set(info["low_dose_positions"]).isdisjoint(info["normal_dose_positions"])
    assert low.shape == normal.shape == (4, 1, 32, 32)

    def closest(batch):  # the clean slice each simulated image is nearest to
        return [int((imgs - b).pow(2).mean(dim=(1, 2, 3)).argmin()) for b in batch]

    # each image is its own source slice plus noise: low-dose images come from low-dose positions only
    assert closest(low) == info["low_dose_positions"]
    assert closest(normal) == info["normal_dose_positions"]
    assert info["normal_dose"] > 5 * max(info["doses"])
    low_p, normal_p, info_p = training_pairs(imgs, "supervised", doses=(1e4, 2e4), realisations=1)
    assert low_p.shape == normal_p.shape == (16, 1, 32, 32) and info_p["pairing"] == "paired"
    _, src = low_dose_images(imgs, doses=(1e4, 2e4))
    assert closest(normal_p) == src.tolist() and closest(low_p) == src.tolist()


def test_wavelet_split_is_a_projection_and_translator_starts_at_identity():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 64, 64, generator=g)
    low = wavelet_low_band(x, "db3", 4)
    assert torch.allclose(wavelet_low_band(low, "db3", 4), low, atol=1e-5)
    const = torch.full((1, 1, 48, 40), 0.3)  # not a multiple of 16: padded
    assert torch.allclose(wavelet_low_band(const, "db3", 4), const, atol=1e-5)
    net = Translator(LDCTConfig(levels=4, channels=8, res_blocks=1))
    assert torch.allclose(net(x), x, atol=1e-6)
    assert net(torch.rand(1, 1, 50, 38)).shape == (1, 1, 50, 38)


def _tiny(objective="metric", **kw):
    return LDCTConfig(objective=objective, channels=8, res_blocks=1, levels=3, feature_dim=16, disc_channels=8), \
        LDCTTrainConfig(steps=4, batch=2, crop=16, patches=8, checkpoint_every=2, log_every=1, **kw)


def test_train_resume_equals_one_run_and_checkpoint_roundtrip(tmp_path):
    g = torch.Generator().manual_seed(0)
    low, normal = torch.rand(6, 1, 32, 32, generator=g), torch.rand(4, 1, 32, 32, generator=g)
    mcfg, tcfg = _tiny()
    one = train_ldct(low, normal, mcfg, tcfg, tmp_path / "one", progress=False)
    mcfg, tcfg = _tiny()
    tcfg.steps = 2
    train_ldct(low, normal, mcfg, tcfg, tmp_path / "two", progress=False)
    mcfg, tcfg = _tiny()
    two = train_ldct(low, normal, mcfg, tcfg, tmp_path / "two", resume=True, progress=False)
    a, cfg, info = load_translator(one)
    b, _, _ = load_translator(two)
    assert info["step"] == 4 and info["objective"] == "metric" and cfg.channels == 8
    x = torch.rand(1, 1, 32, 32, generator=g)
    with torch.no_grad():
        assert not torch.allclose(a(x), x, atol=1e-6)  # it trained
        assert torch.allclose(a(x), b(x), atol=1e-5)
    small = save_translator(tmp_path / "t.safetensors", a, cfg, {"objective": "metric"})
    c, _, _ = load_translator(small)
    with torch.no_grad():
        assert torch.allclose(a(x), c(x), atol=2e-3)  # float16 weights
    with pytest.raises(CheckpointError, match="low-dose CT translator"):
        load_prior(small)
    with pytest.raises(CheckpointError, match="not a low-dose CT translator"):
        load_translator(prior_path("ct_patch128"))
    with pytest.raises(ValueError, match="--resume"):
        train_ldct(low, normal, *_tiny(), tmp_path / "one", progress=False)


def test_bundled_translator_loads():
    net, cfg, info = load_translator(prior_path("ldct_metric256"))
    assert cfg.objective == "metric" and cfg.wavelet_split and info["data"]["pairing"].startswith("unpaired")


def test_hu_guard_removes_a_regional_shift_and_keeps_fine_noise_removal():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(1, 1, 32, 32, generator=gen, dtype=torch.float64)
    assert torch.equal(hu_guard(x, x + 0.3, 0.0), x + 0.3)  # width 0: the translator's output
    assert torch.allclose(hu_guard(x, x + 0.05, 1.0), x, atol=1e-12)  # a constant shift is a pure low-pass part
    i, j = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    checker = 0.01 * (-1.0) ** (i + j).double()  # pixel-scale noise removal: 1 - exp(-pi^2 sigma^2) of it kept
    kept = (hu_guard(x, x + checker, 1.0) - x)[0, 0]
    assert torch.allclose(kept[4:-4, 4:-4], checker[4:-4, 4:-4], rtol=1e-3)
    with pytest.raises(ValueError, match="needs images larger"):
        hu_guard(x[..., :4, :4], x[..., :4, :4], 2.0)


@pytest.mark.slow
def test_cli_train_and_reconstruct(tmp_path, ct_files, run_cli):
    run = tmp_path / "run"
    code, err = run_cli("train", *map(str, ct_files), "--prior", "ldct-supervised", "--out", str(run), "--size",
                        "64", "--steps", "3", "--batch", "2", "--crop", "32", "--doses", "1e4", "--realisations",
                        "1", "--channels", "8", "--no-progress")
    assert code == 0, err
    out = tmp_path / "rec"
    code, err = run_cli("reconstruct", str(ct_files[1]), "--task", "ct-lowdose", "--size", "64", "--method",
                        "ldct-metric", "--prior", str(run / "ldct.safetensors"), "--out", str(out), "--no-progress")
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method_params"]["objective"] == "supervised" and "hu" in metrics
    assert np.isfinite(metrics["psnr"])
    # the bundled translator by default
    code, err = run_cli("reconstruct", str(ct_files[1]), "--task", "ct-lowdose", "--method", "ldct-metric",
                        "--out", str(tmp_path / "rec2"), "--no-progress")
    assert code == 0, err
    metrics = json.loads((tmp_path / "rec2" / "metrics.json").read_text())
    assert metrics["method_params"]["prior"].endswith("ldct_metric256.safetensors")
    assert metrics["method_params"]["guard"] == 1.0
    assert metrics["psnr"] > metrics["baseline_psnr"] + 0.3  # 30.27 against FBP's 29.69 dB when bundled
    code, err = run_cli("reconstruct", str(ct_files[1]), "--task", "ct-lowdose", "--method", "ldct-metric",
                        "--param", "guard=0", "--out", str(tmp_path / "rec3"), "--no-progress")
    assert code == 0, err
    unguarded = json.loads((tmp_path / "rec3" / "metrics.json").read_text())
    assert unguarded["method_params"]["guard"] == 0.0 and unguarded["psnr"] != metrics["psnr"]


@pytest.mark.parametrize("argv, message", [
    (["reconstruct", "{ct}", "--task", "ct-parallel", "--method", "ldct-metric"], "applies to --task ct-lowdose"),
    (["reconstruct", "{ct}", "--task", "ct-lowdose", "--method", "ldct-metric", "--prior", "{patch}"],
     "not a low-dose CT translator"),
    (["reconstruct", "{ct}", "--task", "ct-lowdose", "--method", "admm-tv", "--prior", "{patch}"], "does not use"),
    (["train", "{ct}", "--prior", "ldct-gan", "--metric-weight", "0.5"], "--metric-weight applies"),
    (["train", "{ct}", "--prior", "ldct-metric", "--doses", "0"], "positive"),
    (["train", "{ct}", "--prior", "patch", "--crop", "32"], "--crop applies"),
    (["train", "{ct}", "--prior", "ldct-metric", "--window", "-100", "100"], "--window does not apply"),
    (["train", "{ct}", "--prior", "ldct-metric"], "at least 8 slice positions"),
    (["train", "{ct}", "--prior", "ldct-metric", "--steps", "0"], "--steps must be at least 1"),
    (["train", "{ct}", "--prior", "ldct-metric", "--channels", "6"], "--channels for the LDCT"),
])
def test_bad_input_one_line(tmp_path, ct_files, run_cli, argv, message):
    subs = {"{ct}": str(ct_files[1]), "{patch}": str(prior_path("ct_patch128"))}
    argv = [subs.get(a, a) for a in argv] + ["--out", str(tmp_path / "o")]
    code, err = run_cli(*argv)
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_checkpoint_files_get_the_normal_file_mode(tmp_path):
    import os

    old = os.umask(0o022)
    os.umask(old)
    path = save_translator(tmp_path / "t.safetensors", Translator(LDCTConfig(channels=8, res_blocks=1)),
                           LDCTConfig(channels=8, res_blocks=1))
    assert path.stat().st_mode & 0o777 == 0o666 & ~old  # safetensors alone writes 0600
