"""Volume mode: 3-D TV over a slice stack, volume metrics, and `reconstruct --volume` end to end (NIfTI and DICOM
out with the input's spacing and slice positions), with its bad inputs."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch

from wavepatch.cli import main
from wavepatch.io import read_image
from wavepatch.recon.tv import div_stack, grad_stack
from wavepatch.tasks import task_options
from wavepatch.volume import reconstruct_volume, volume_metrics


def test_stack_gradient_adjoint():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 1, 9, 7, generator=g, dtype=torch.float64)
    p = torch.rand(5, 1, 3, 9, 7, generator=g, dtype=torch.float64)
    lhs = float((grad_stack(x, 0.4) * p).sum())
    assert lhs == pytest.approx(-float((x * div_stack(p, 0.4)).sum()), rel=1e-12)
    gx = grad_stack(x, 0.4)
    assert torch.allclose(gx[:-1, :, 2], 0.4 * (x[1:] - x[:-1])) and bool((gx[-1, :, 2] == 0).all())


def test_volume_metrics_known_values():
    truth = np.random.default_rng(0).random((12, 16, 16)) * 0.5 + 0.2
    m = volume_metrics(truth + 0.01, truth)  # a uniform 0.01 error: 40 dB in every plane
    for key in ("psnr", "psnr_axial", "psnr_coronal", "psnr_sagittal"):
        assert m[key] == pytest.approx(40.0, abs=1e-6)
    assert m["ssim_kind"] == "3-D" and 0.9 < m["ssim"] < 1.0
    assert volume_metrics(truth, truth)["psnr"] == float("inf")


def test_3d_tv_couples_slices():
    """The same noisy object on 12 slices: 3-D TV (z coupled) leaves less slice-to-slice variation and a
    higher PSNR than the same ADMM-TV with the slices uncoupled (z_weight 0)."""
    yy, xx = np.mgrid[:32, :32]
    phantom = ((yy - 16) ** 2 + (xx - 15) ** 2 < 120).astype(np.float32) * 0.6 + 0.2
    vol = np.repeat(phantom[None], 12, axis=0)
    opts = task_options("ct-parallel", views=12, noise=0.5)
    runs = {zw: reconstruct_volume(vol, "ct-parallel", opts, "admm-tv", {"lam": 3e-3}, z_weight=zw)
            for zw in (0.0, 1.0)}
    zvar = {zw: float(np.diff(r.recon, axis=0).std()) for zw, r in runs.items()}
    psnrs = {zw: volume_metrics(r.recon, vol)["psnr"] for zw, r in runs.items()}
    assert zvar[1.0] < 0.7 * zvar[0.0], zvar
    assert psnrs[1.0] > psnrs[0.0] + 0.5, psnrs


def test_cli_volume_ct_end_to_end(tmp_path, capsys, ct_dir):
    out = tmp_path / "vol"
    code = main(["reconstruct", str(ct_dir), "--volume", "--task", "ct-parallel", "--views", "12", "--size", "32",
                 "--method", "admm-tv", "--dicom", "--no-progress", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    m = json.loads((out / "metrics.json").read_text())
    for key in ("psnr", "ssim", "psnr_axial", "psnr_coronal", "psnr_sagittal", "seconds", "nfe", "peak_memory_mb"):
        assert key in m
    assert m["slices"] == 3 and m["psnr"] > m["baseline_psnr"]
    src = read_image(ct_dir)
    dz = float(np.median(np.abs(np.diff([float(h.ImagePositionPatient[2]) for h in src.dicom_headers]))))
    row_mm = src.spacing[0] * 512 / 32
    img = nib.load(out / "recon.nii.gz")
    assert img.shape[2] == 3 and np.allclose(img.header.get_zooms()[:3], (row_mm, row_mm, dz), rtol=1e-5)
    hu = read_image(out / "recon.nii.gz").data
    assert hu.shape == (3, 32, 32) and -1001 <= hu.min() and hu.max() <= 1001  # HU of the default window
    series = sorted((out / "recon_dicom").glob("*.dcm"))
    positions = [float(pydicom.dcmread(f).ImagePositionPatient[2]) for f in series]
    assert sorted(positions) == pytest.approx(sorted(float(h.ImagePositionPatient[2]) for h in src.dicom_headers))
    assert (out / "planes.png").stat().st_size > 10_000


def test_cli_volume_learned_runs_coupled_and_not(tmp_path, capsys, mri_path):
    runs = {}
    for coupling in (None, "none"):
        out = tmp_path / f"vol{coupling}"
        extra = [] if coupling is None else ["--coupling", coupling]
        code = main(["reconstruct", str(mri_path), "--volume", "--task", "ct-parallel", "--views", "12", "--size",
                     "32", "--method", "padis", "--fast", "--steps", "3", *extra, "--no-progress", "--out", str(out)])
        assert code == 0, capsys.readouterr().err
        runs[coupling] = json.loads((out / "metrics.json").read_text())
        assert runs[coupling]["slices"] == 5 and runs[coupling]["nfe"] == 3
    assert runs[None]["method_params"]["coupling"] == "tv-z" and runs["none"]["method_params"]["coupling"] == "none"
    assert runs[None]["psnr"] != runs["none"]["psnr"]


def test_z_coupling_smooths_across_slices():
    """tv_z_prox is the exact prox of 1-D TV across slices (optimality against perturbations), and ZCoupled
    applies it after the wrapped fidelity's data step."""
    from wavepatch.recon.tv import tv_z_prox
    from wavepatch.tasks import make_task
    from wavepatch.volume import ZCoupled

    g = torch.Generator().manual_seed(0)
    v = torch.rand(6, 1, 4, 4, generator=g, dtype=torch.float64)
    x = tv_z_prox(v, 0.1, 3000)

    def objective(t):
        return float(0.5 * (t - v).pow(2).sum() + 0.1 * (t[1:] - t[:-1]).abs().sum())
    for _ in range(5):
        assert objective(x + 1e-3 * torch.randn(x.shape, generator=g, dtype=x.dtype)) >= objective(x) - 1e-12
    assert torch.equal(tv_z_prox(v, 0.0), v)
    task = make_task("ct-parallel", (16, 16), task_options("ct-parallel", views=6))
    y = task.simulate(torch.rand(6, 1, 16, 16, generator=g), g)
    fid = task.fidelity(y)
    x0 = torch.rand(6, 1, 16, 16, generator=g)
    assert torch.allclose(ZCoupled(fid, 0.05).project(x0), tv_z_prox(fid.project(x0), 0.05))
    assert ZCoupled(fid, 0.05).expand(6).lam == 0.05 and ZCoupled(fid, 0.05).noiseless == fid.noiseless


@pytest.mark.parametrize("argv, words", [
    (["{ct_file}", "--volume"], "needs a volume"),
    (["{ct_dir}", "--volume", "--slice", "1"], "--slice does not apply"),
    (["{ct_dir}", "--slices", "0:2"], "--slices is for --volume"),
    (["{ct_dir}", "--volume", "--slices", "a:b"], "--slices takes A:B"),
    (["{ct_dir}", "--coupling", "none"], "--coupling is for --volume"),
    (["{ct_dir}", "--volume", "--coupling-lam", "-1"], "--coupling-lam must be"),
    (["{ct_dir}", "--volume", "--coupling", "tv-z"], "does not apply to --method fbp"),
])
def test_cli_volume_bad_input(tmp_path, capsys, ct_dir, ct_files, argv, words):
    argv = [a.format(ct_file=ct_files[0], ct_dir=ct_dir) for a in argv]
    code = main(["reconstruct", *argv, "--task", "ct-parallel", "--method", "fbp", "--size", "32", "--no-progress",
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and words in err[0], err
    assert not (tmp_path / "o").exists()


def test_cli_volume_two_series_folder(tmp_path, capsys, ct_files):
    """A folder holding two series: one line listing them without --series; --series picks one."""
    folder = tmp_path / "two"
    folder.mkdir()
    uid = "1.2.826.0.1.3680043.8.498.1"
    for i, f in enumerate(ct_files):
        ds = pydicom.dcmread(f)
        ds.save_as(folder / f"a{i}.dcm")
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = f"{uid}.{i + 1}"
        ds.save_as(folder / f"b{i}.dcm")
    base = ["reconstruct", str(folder), "--volume", "--task", "ct-parallel", "--views", "8", "--size", "32",
            "--method", "fbp", "--no-progress"]
    code = main([*base, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "2 DICOM series" in err[0] and uid in err[0], err
    assert main([*base, "--series", uid, "--out", str(tmp_path / "o")]) == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["slices"] == 3


def test_cli_volume_series_with_mixed_slice_sizes(tmp_path, capsys, ct_files):
    """One series whose slices differ in size: one line naming the sizes, exit 2, no output folder."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    for i, f in enumerate(ct_files):
        ds = pydicom.dcmread(f)
        if i == 1:  # crop one slice to 256 x 256; the header says so, as a real series with a bad slice would
            ds.PixelData = ds.pixel_array[:256, :256].copy().tobytes()
            ds.Rows, ds.Columns = 256, 256
        ds.save_as(folder / f"s{i}.dcm")
    code = main(["reconstruct", str(folder), "--volume", "--task", "ct-parallel", "--views", "8", "--size", "32",
                 "--method", "fbp", "--no-progress", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "mixes slice sizes" in err[0] and "256" in err[0], err
    assert not (tmp_path / "o").exists()


def test_slerp_slice_noise_is_standard_per_slice_and_correlated_between_neighbours():
    from wavepatch.sampling.steps import randn_like, slerp_slice_noise

    x = torch.zeros(24, 1, 48, 48)
    z = slerp_slice_noise(x, torch.Generator().manual_seed(0))
    z0, z1 = randn_like(x[:2], torch.Generator().manual_seed(0))
    assert torch.allclose(z[0], z0, atol=1e-6)  # t = 0 is the first draw itself
    norms = z.flatten(1).norm(dim=1)  # between the two draws' norms (each that of a standard normal draw)
    lo, hi = sorted((float(z0.norm()), float(z1.norm())))
    assert lo * (1 - 1e-5) <= float(norms.min()) and float(norms.max()) <= hi * (1 + 1e-5)
    flat = z.flatten(1) / z.flatten(1).norm(dim=1, keepdim=True)
    neighbours = (flat[1:] * flat[:-1]).sum(1)
    assert float(neighbours.min()) > 0.99 and abs(float((flat[0] * flat[-1]).sum())) < 0.2
    assert torch.equal(z, slerp_slice_noise(x, torch.Generator().manual_seed(0)))


def test_cli_volume_iscs_coupling(tmp_path, capsys, mri_path):
    out = tmp_path / "iscs"
    code = main(["reconstruct", str(mri_path), "--volume", "--task", "ct-parallel", "--views", "12", "--size", "32",
                 "--method", "padis", "--fast", "--steps", "3", "--coupling", "iscs", "--no-progress",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    m = json.loads((out / "metrics.json").read_text())
    assert m["method_params"]["coupling"] == "iscs" and m["method_params"]["coupling_lam"] is None
    code = main(["reconstruct", str(mri_path), "--volume", "--task", "ct-parallel", "--views", "12", "--size", "32",
                 "--method", "dps", "--steps", "3", "--coupling", "iscs", "--no-progress",
                 "--out", str(tmp_path / "dps")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no noise argument" in err[0], err


def test_slabs_cover_the_volume_once():
    from wavepatch.shard import slab

    for n, world, halo in ((30, 2, 0), (7, 3, 2), (5, 4, 4)):
        slabs = [slab(n, r, world, halo) for r in range(world)]
        kept = [i for s in slabs for i in range(s.keep_lo, s.keep_hi)]
        assert kept == list(range(n))
        assert all(max(0, s.keep_lo - halo) == s.lo and min(n, s.keep_hi + halo) == s.hi for s in slabs)


@pytest.mark.slow
@pytest.mark.parametrize("coupling", ["none", "iscs"])
def test_torchrun_two_processes_equal_one(tmp_path, mri_path, coupling):
    """2 gloo processes on the CPU, each a slab of the 5 slices: the written volume equals one process's (every
    random draw is made for the whole volume and cut; float32 so no bf16 rounding enters). Bit for bit on an
    Intel Xeon (AMX); on an AMD EPYC the two differ in the last bits of some batch-size-dependent kernel, grown by
    the sampler to at most 3e-4 of the range (mean 1.3e-5), so the test allows 1e-3 of the range."""
    import os
    import subprocess
    import sys

    args = ["reconstruct", str(mri_path), "--volume", "--task", "ct-parallel", "--views", "12", "--size", "32",
            "--method", "padis", "--fast", "--steps", "4", "--coupling", coupling, "--precision", "fp32",
            "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "wavepatch.cli", *args, "--out", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "wavepatch.cli", *args,
                          "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True)
    assert two.returncode == 0, two.stderr
    a = nib.load(tmp_path / "one" / "recon.nii.gz").get_fdata()
    b = nib.load(tmp_path / "two" / "recon.nii.gz").get_fdata()
    assert np.abs(a - b).max() <= 1e-3 * (a.max() - a.min()), float(np.abs(a - b).max())
    assert np.abs(a - b).mean() <= 1e-4 * (a.max() - a.min()), float(np.abs(a - b).mean())
    m = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert m["method_params"]["processes"] == 2 and m["slices"] == 5


@pytest.mark.slow
def test_cli_patch3d_prior_trains_and_reconstructs_a_volume(tmp_path, capsys, mri_path):
    """train --prior patch3d on a small volume, then reconstruct --volume with it (random 3-D grid shifts; the
    per-slice CT data steps through volume_fidelity); tv-z coupling is refused for a 3-D prior."""
    run = tmp_path / "p3"
    code = main(["train", str(mri_path), "--prior", "patch3d", "--size", "32", "--depth", "8", "--patch-sizes",
                 "8,16", "--patch-probs", "0.5,0.5", "--patch-depth", "4", "--channels", "8", "--channel-mult", "1,2",
                 "--batch", "2", "--steps", "3", "--no-progress", "--out", str(run)])
    assert code == 0, capsys.readouterr().err
    meta = json.loads((run / "prior.json").read_text())
    assert meta["config"]["unet"]["dims"] == 3 and meta["config"]["image_size"] == [8, 32, 32]
    assert meta["config"]["patch_size"] == [4, 16, 16]  # slabs of 4 slices
    out = tmp_path / "vol3d"
    code = main(["reconstruct", str(mri_path), "--volume", "--task", "ct-parallel", "--views", "12", "--size", "32",
                 "--method", "padis", "--fast", "--steps", "2", "--prior", str(run / "prior.safetensors"),
                 "--no-progress", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    m = json.loads((out / "metrics.json").read_text())
    assert m["method_params"]["prior_dims"] == 3 and m["nfe"] == 2 and m["slices"] == 5
    code = main(["reconstruct", str(mri_path), "--volume", "--task", "ct-parallel", "--views", "12", "--size", "32",
                 "--method", "padis", "--fast", "--steps", "2", "--prior", str(run / "prior.safetensors"),
                 "--coupling", "tv-z", "--no-progress", "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "a 3-D prior sees them together" in err[0], err


def test_rotating_planes_denoise_axial_coronal_sagittal_in_turn():
    """A 'denoiser' that adds its input's column index: axial and coronal planes have the volume's x as columns,
    sagittal planes its y; every voxel goes back where it came from."""
    from wavepatch.volume import rotating_planes

    def add_column(x, sigma):
        return x + torch.arange(x.shape[-1], dtype=x.dtype)

    d = rotating_planes(add_column)
    x = torch.rand(4, 1, 5, 6, dtype=torch.float64)
    col_x = torch.arange(6, dtype=torch.float64).reshape(1, 1, 1, 6)
    col_y = torch.arange(5, dtype=torch.float64).reshape(1, 1, 5, 1)
    assert torch.equal(d(x, 0.1), x + col_x)  # axial
    assert torch.equal(d(x, 0.1), x + col_x)  # coronal: (S, W) planes
    assert torch.equal(d(x, 0.1), x + col_y)  # sagittal: (S, H) planes
    assert torch.equal(d(x, 0.1), x + col_x)  # axial again
