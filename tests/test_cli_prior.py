"""`wavepatch train`, `sample` and `eval-samples` as a user runs them, with a tiny model; DDP with 2 CPU processes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from wavepatch.cli import main

TINY = ["--channels", "8", "--channel-mult", "1,2", "--blocks", "1", "--no-attention", "--batch", "4",
        "--lr", "1e-3", "--warmup", "1", "--log-every", "1", "--no-progress"]


def _train(data, out, *extra):
    return main(["train", str(data), "--window", "0", "1", "--prior", "patch", "--size", "16",
                 "--patch-sizes", "8,16", "--patch-probs", "0.5,0.5", "--steps", "4", "--checkpoint-every", "2",
                 "--out", str(out), *TINY, *extra])


@pytest.mark.slow
def test_train_sample_eval_end_to_end(tmp_path, data, capsys):
    run = tmp_path / "run"
    assert _train(data, run) == 0
    for name in ("prior.safetensors", "prior.json", "train_state.safetensors", "train_config.json",
                 "train_log.csv", "loss.png"):
        assert (run / name).is_file(), name
    info = json.loads((run / "prior.json").read_text())
    assert info["config"]["kind"] == "patch" and info["info"]["step"] == 4
    # resume to 6 steps
    assert main(["train", str(data), "--window", "0", "1", "--prior", "patch", "--size", "16", "--patch-sizes",
                 "8,16", "--patch-probs", "0.5,0.5", "--steps", "6", "--checkpoint-every", "2", "--out", str(run),
                 "--resume", *TINY]) == 0
    assert json.loads((run / "prior.json").read_text())["info"]["step"] == 6

    out = tmp_path / "samples"
    for mode in ("padis", "stitch", "average"):
        assert main(["sample", "--prior", str(run / "prior.safetensors"), "--n", "3", "--size", "20", "--steps", "3",
                     "--batch", "2", "--patch-mode", mode, "--out", str(out), "--no-progress"]) == 0
    samples = np.load(out / "samples.npy")
    assert samples.shape == (3, 20, 20) and np.isfinite(samples).all()
    meta = json.loads((out / "sample_info.json").read_text())
    assert meta["nfe_per_image"] == 5 and meta["patch_mode"] == "average"
    assert (out / "grid.png").stat().st_size > 0 and (out / "samples.nii.gz").is_file()
    assert main(["sample", "--prior", str(run / "prior.safetensors"), "--dicom", "--out", str(tmp_path / "d"),
                 "--no-progress"]) == 2  # not a CT prior: no HU to write

    capsys.readouterr()
    report = tmp_path / "eval.json"
    assert main(["eval-samples", str(out), "--real", str(data), "--train", str(data), "--window", "0", "1",
                 "--out", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "| generated |" in printed and "| baseline |" in printed and "| training data |" in printed
    rep = json.loads(report.read_text())
    assert rep["generated"]["count"] == 3 and rep["real_count"] == 5 and len(rep["generated"]["swd_per_level"]) == 1
    assert rep["training data"]["histogram_w1"] < 1e-9  # the training set scored against itself


@pytest.mark.slow
def test_train_refusals(tmp_path, data, capsys):
    run = tmp_path / "run"
    assert _train(data, run) == 0
    capsys.readouterr()
    assert _train(data, run) == 2
    assert "already holds a training run" in capsys.readouterr().err
    assert _train(data, run, "--resume", "--channels", "16") == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "base_channels" in err and len(err.strip().splitlines()) == 1
    assert _train(data, tmp_path / "other", "--resume") == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert _train(data, data.parent / "x", "--patch-sizes", "7,16") == 2
    assert "multiples of 2" in capsys.readouterr().err


def test_sample_refuses_files_that_are_not_wavepatch_priors(tmp_path, capsys):
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(3)}, str(plain))
    pickle_file = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(3)}, pickle_file)
    for path, why in ((plain, "not a wavepatch prior"), (pickle_file, "not a safetensors file"),
                      (tmp_path / "none.safetensors", "does not exist")):
        capsys.readouterr()
        assert main(["sample", "--prior", str(path), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert why in err and len(err.splitlines()) == 1 and err.startswith("wavepatch: error:")


def test_ct_prior_samples_are_written_in_hu_as_nifti_and_dicom(tmp_path):
    from wavepatch.io import read_image
    from wavepatch.prior.checkpoint import save_prior
    from wavepatch.prior.model import PriorConfig, build_prior
    from wavepatch.prior.unet import UNetConfig

    cfg = PriorConfig(kind="whole", unet=UNetConfig(base_channels=8, channel_mult=(1, 2), num_blocks=1),
                      image_size=16, window=(-1000.0, 1000.0), modality="ct")
    ckpt = save_prior(tmp_path / "ct.safetensors", build_prior(cfg), cfg)
    out = tmp_path / "s"
    assert main(["sample", "--prior", str(ckpt), "--n", "2", "--steps", "2", "--dicom", "--out", str(out),
                 "--no-progress"]) == 0
    unit = np.load(out / "samples.npy")
    series = read_image(out / "samples_dicom")
    assert series.kind == "ct" and series.data.shape == (2, 16, 16)
    assert np.allclose(np.sort(series.data.ravel()), np.sort((unit * 2000 - 1000).ravel()), atol=1.0)
    assert read_image(out / "samples_hu.nii.gz").data.shape[0] == 2


def test_bundled_priors_load_and_denoise():
    from wavepatch.prior.checkpoint import load_prior
    from wavepatch.prior.model import make_denoiser
    from wavepatch.resources import bundled_priors, prior_path

    names = ["ct_patch128", "ct_patch256", "ct_whole128", "ct_whole256", "mri_patch256"]
    # the CT noise-level classifier (tests/test_fast_generators.py), the low-dose CT translator
    # (tests/test_ldct.py) and the 3-D shape prior (tests/test_shape_cli.py)
    assert bundled_priors() == ["ct_noise128", *names[:4], "ldct_metric256", names[4], "shape_adrenal64"]
    for name in names:
        model, cfg = load_prior(prior_path(name))
        denoise = make_denoiser(model, cfg, generator=torch.Generator().manual_seed(0))
        x = torch.full((1, 1, 32, 32), 0.5)
        with torch.no_grad():
            out = denoise(x + 0.1 * torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(1)), 0.1)
        assert torch.isfinite(out).all() and (out - x).abs().mean() < 0.1, name


@pytest.mark.slow
def test_ddp_training_with_two_gloo_processes(tmp_path, data, torchrun_train):
    run = tmp_path / "ddp"
    proc = torchrun_train([str(data), "--window", "0", "1", "--prior", "whole", "--size", "16", "--steps", "4",
                           "--checkpoint-every", "2", "--device", "cpu", "--out", str(run), *TINY])
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads((run / "prior.json").read_text())
    assert info["info"]["step"] == 4
    assert [int(r.split(",")[0]) for r in (run / "train_log.csv").read_text().splitlines()[1:]] == [1, 2, 3, 4]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["padis", "dps", "pigdm", "mcg", "langevin", "pc", "ddnm", "wavelet-langevin"])
def test_reconstruct_with_a_learned_prior_from_the_cli(tmp_path, method):
    ct = Path(__file__).resolve().parents[1] / "data" / "ct" / "A0002_B40f_015.dcm"
    out = tmp_path / method
    args = ["reconstruct", str(ct), "--task", "ct-parallel", "--views", "20", "--method", method, "--size", "64",
            "--steps", "3", "--samples", "2", "--out", str(out), "--no-progress"]
    if method in ("padis", "langevin", "wavelet-langevin"):
        args += ["--param", "n_inner=1"]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == method and metrics["nfe"] > 0 and np.isfinite(metrics["psnr"])
    assert metrics["method_params"]["prior"].endswith(".safetensors")
    assert np.load(out / "std.npy").shape == (64, 64) and (out / "uncertainty.png").stat().st_size > 0


def test_reconstruct_fast_mode_and_bad_prior(tmp_path, capsys):
    ct = Path(__file__).resolve().parents[1] / "data" / "ct" / "A0002_B40f_015.dcm"
    out = tmp_path / "fast"
    assert main(["reconstruct", str(ct), "--task", "ct-parallel", "--views", "20", "--method", "padis", "--fast",
                 "--size", "64", "--steps", "2", "--compare", "admm-tv", "cgls", "--out", str(out),
                 "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["nfe"] == 2 and metrics["method_params"]["fast"] is True
    # the compared methods ran on the same measurement; in fast mode the ADMM-TV warm start is the one compared
    assert set(metrics["compared"]) == {"admm-tv", "cgls"}
    admm = main(["reconstruct", str(ct), "--task", "ct-parallel", "--views", "20", "--method", "admm-tv",
                 "--size", "64", "--out", str(tmp_path / "admm"), "--no-progress"])
    assert admm == 0
    alone = json.loads((tmp_path / "admm" / "metrics.json").read_text())
    assert metrics["compared"]["admm-tv"]["psnr"] == pytest.approx(alone["psnr"], abs=1e-4)
    assert metrics["psnr"] > metrics["baseline_psnr"]
    # sigma_start = 0: no prior step, the warm start itself (a candidate of --auto), no network call
    assert main(["reconstruct", str(ct), "--task", "ct-parallel", "--views", "20", "--method", "padis", "--fast",
                 "--size", "64", "--param", "sigma_start=0", "--compare", "admm-tv", "--out", str(tmp_path / "zero"),
                 "--no-progress"]) == 0
    zero = json.loads((tmp_path / "zero" / "metrics.json").read_text())
    assert zero["nfe"] == 0 and zero["psnr"] == pytest.approx(alone["psnr"], abs=1e-4)
    whole = Path(__file__).resolve().parents[1] / "models" / "ct_whole256.safetensors"
    capsys.readouterr()
    assert main(["reconstruct", str(ct), "--task", "ct-parallel", "--method", "padis", "--prior", str(whole),
                 "--size", "64", "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    assert "padis needs a patch prior" in capsys.readouterr().err


def test_pnp_admm_with_the_learned_denoiser(tmp_path):
    ct = Path(__file__).resolve().parents[1] / "data" / "ct" / "A0002_B40f_015.dcm"
    out = tmp_path / "pnp"
    assert main(["reconstruct", str(ct), "--task", "ct-parallel", "--views", "20", "--method", "pnp-admm",
                 "--param", "denoiser=learned", "--param", "n_iter=2", "--size", "64", "--out", str(out),
                 "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    params = metrics["method_params"]
    assert metrics["nfe"] == 2  # one learned-denoiser call per iteration
    # a 64^2 image gets the CT prior trained at 128^2 (learned.default_prior, CT_128_BELOW)
    assert params["sigma"] == 0.03 and params["prior"].endswith("ct_patch128.safetensors")


@pytest.mark.parametrize("task,extra", [("ct-lowdose", ["--method", "padis", "--fast", "--no-auto"]),
                                        ("deblur", ["--method", "ddnm"]), ("ct-parallel", ["--method", "ddnm"])])
def test_noisy_tasks_use_the_map_data_step_noiseless_ones_the_projection(tmp_path, monkeypatch, task, extra):
    from wavepatch.fidelity import DataFidelity, GaussianFidelity, PoissonFidelity
    from wavepatch.learned import noise_schedule
    from wavepatch.methods import get_method

    calls = {"prox": [], "project": 0}

    def spy(cls, name):
        real = getattr(cls, name)

        def wrapped(self, x, *args, **kwargs):
            if name == "prox":
                calls["prox"].append(args[0] if args else kwargs["weight"])
            else:
                calls["project"] += 1
            return real(self, x, *args, **kwargs)

        monkeypatch.setattr(cls, name, wrapped)

    for cls in (GaussianFidelity, PoissonFidelity):
        spy(cls, "prox")
    spy(DataFidelity, "project")
    ct = Path(__file__).resolve().parents[1] / "data" / "ct" / "A0002_B40f_015.dcm"
    out = tmp_path / task
    assert main(["reconstruct", str(ct), "--task", task, *extra, "--size", "64", "--steps", "3", "--out", str(out),
                 "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert np.isfinite(metrics["psnr"])
    if task == "ct-parallel":  # noiseless: exact data consistency (one projection per level), no MAP step
        assert calls["prox"] == [] and calls["project"] == 3
    else:  # one MAP step per level with weight 1 / sigma^2: the data is trusted more as the noise level falls
        method, fast = get_method(extra[1]), "--fast" in extra
        sigmas = noise_schedule(method, method.resolve(task, {"steps": 3}, fast), fast)
        assert calls["project"] == 0
        assert calls["prox"] == pytest.approx([1 / float(s) ** 2 for s in sigmas[:-1]])


def test_default_prior_follows_the_image_size():
    """CT images below 181 px per side get the priors trained at 128^2, larger ones those trained at 256^2
    (benchmarks/results/prior_size); MRI has one bundled prior; without a size the 256^2 ones."""
    from wavepatch.learned import default_prior

    assert default_prior("ct-parallel", "patch", 128).name == "ct_patch128.safetensors"
    assert default_prior("deblur", "whole", 180).name == "ct_whole128.safetensors"
    assert default_prior("ct-fan", "patch", 181).name == "ct_patch256.safetensors"
    assert default_prior("ct-lowdose", "whole", 512).name == "ct_whole256.safetensors"
    assert default_prior("ct-parallel", "patch").name == "ct_patch256.safetensors"
    assert default_prior("mri", "patch", 64).name == "mri_patch256.safetensors"
