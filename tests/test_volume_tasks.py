"""Volume tasks whose operator couples the slices (zsr, mri3d): adjoints, pseudo-inverses, the mask, the cubic
baseline, the slice-stack fidelity (one vector for the whole volume), and the CLI end to end with bad input."""

from __future__ import annotations

import json

import pytest
import torch

from wavepatch.cli import main
from wavepatch.linalg import inner
from wavepatch.physics.base import adjoint_mismatch
from wavepatch.physics.volume_ops import Cartesian3DMRI, ThickSliceZ, cubic_z, gaussian_2d_mask
from wavepatch.tasks import task_options
from wavepatch.volume_tasks import make_volume_task, stack_fidelity

SHAPE = (1, 8, 6, 5)


def _operators():
    mask = gaussian_2d_mask(SHAPE[1:3], 3.0, generator=torch.Generator().manual_seed(0))
    return [ThickSliceZ(4, SHAPE), ThickSliceZ(2, SHAPE), Cartesian3DMRI(mask, SHAPE)]


@pytest.mark.parametrize("op", _operators(), ids=["zsr4", "zsr2", "mri3d"])
def test_adjoint_and_pseudo_inverse(op):
    assert adjoint_mismatch(op) < 1e-12
    g = torch.Generator().manual_seed(1)
    x = torch.randn((2, *SHAPE), generator=g, dtype=torch.float64)
    p = op.A_dagger(op.A(x))  # A^+ A x: the orthogonal projection of x onto the row space of A
    assert torch.allclose(op.A(p), op.A(x), atol=1e-12)
    assert float(inner(x - p, p).abs().max()) < 1e-10
    assert torch.allclose(op.A_dagger(op.A(p)), p, atol=1e-12)


def test_thick_slices_are_means_and_cubic_baseline_interpolates_along_z_only():
    x = torch.arange(8, dtype=torch.float64).reshape(1, 1, 8, 1, 1).expand(1, 1, 8, 3, 2)
    y = ThickSliceZ(4, (1, 8, 3, 2)).A(x)
    assert torch.equal(y[0, 0, :, 0, 0], torch.tensor([1.5, 5.5], dtype=torch.float64))
    g = torch.Generator().manual_seed(0)
    vol = torch.rand(1, 1, 5, 4, 3, generator=g, dtype=torch.float64)
    up = cubic_z(vol, 3)
    assert up.shape == (1, 1, 15, 4, 3)
    for i, j in ((0, 0), (2, 1), (3, 2)):  # each z line on its own: no in-plane mixing
        assert torch.allclose(up[..., i, j], cubic_z(vol[..., i:i + 1, j:j + 1], 3)[..., 0, 0], atol=1e-14)
    assert torch.allclose(cubic_z(torch.full((1, 1, 4, 2, 2), 0.7, dtype=torch.float64), 4),
                          torch.full((1, 1, 16, 2, 2), 0.7, dtype=torch.float64), atol=1e-14)
    line = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0], dtype=torch.float64).reshape(1, 1, 5, 1, 1)
    assert float(cubic_z(line, 2)[0, 0, 4:6].min()) > 0.8  # thin slices 4 and 5 sit beside thick slice 2
    with pytest.raises(ValueError, match="multiple of 4"):
        ThickSliceZ(4, (1, 6, 3, 2))


def test_phase_encode_mask():
    m = gaussian_2d_mask((40, 32), 8.0, generator=torch.Generator().manual_seed(3))
    assert int(m.sum()) == round(40 * 32 / 8)
    cs, ch = round(40 * 0.2), round(32 * 0.2)  # centre fraction sqrt(0.32 / 8) = 0.2 per side
    assert bool(m[(40 - cs + 1) // 2:(40 - cs + 1) // 2 + cs, (32 - ch + 1) // 2:(32 - ch + 1) // 2 + ch].all())
    assert torch.equal(m, gaussian_2d_mask((40, 32), 8.0, generator=torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("name, opts", [("zsr", {"factor": 2, "noise": 0.02}), ("mri3d", {"accel": 3.0,
                                                                                         "noise": 0.02})])
def test_stack_fidelity_solves_the_volume_as_one_vector(name, opts):
    """prox through stack_fidelity meets the volume's optimality condition A^T(A x - y) / s^2 + w (x - x0) = 0,
    which a per-slice conjugate gradient (one step size per slice) would not reach."""
    s, h, w = 6, 8, 8
    task = make_volume_task(name, (s, h, w), task_options(name, **opts))
    g = torch.Generator().manual_seed(0)
    vol = torch.rand(1, 1, s, h, w, generator=g, dtype=torch.float64)
    fid = stack_fidelity(task.fidelity(task.simulate(vol, g)), s)
    x0 = torch.rand(s, 1, h, w, generator=g, dtype=torch.float64)
    x = fid.prox(x0, 30.0, n_iter=300)
    kkt = fid.grad(x) + 30.0 * (x - x0)
    assert float(kkt.norm()) < 1e-6 * float(fid.grad(x0).norm())
    assert fid.residual(x).shape == (1,) and fid.expand(s) is fid
    assert torch.allclose(fid.op.A(x), task.op.A(x.reshape(1, 1, s, h, w)))
    with pytest.raises(ValueError, match="one estimate"):
        fid.expand(2)
    with pytest.raises(ValueError, match="a slice stack"):
        fid.op.A(x[:2])


@pytest.mark.parametrize("task, extra", [("zsr", ["--factor", "2", "--slices", "0:4"]),
                                         ("mri3d", ["--accel", "3"])])
def test_cli_volume_task_end_to_end(tmp_path, capsys, mri_path, task, extra):
    results = {}
    for method in (["admm-tv"], ["padis", "--fast", "--steps", "3"]):
        out = tmp_path / f"{task}_{method[0]}"
        code = main(["reconstruct", str(mri_path), "--volume", "--task", task, *extra, "--size", "32",
                     "--method", *method, "--no-progress", "--out", str(out)])
        assert code == 0, capsys.readouterr().err
        m = json.loads((out / "metrics.json").read_text())
        assert (out / "recon.nii.gz").exists() and (out / "planes.png").exists()
        assert m["baseline"] == ("cubic-z" if task == "zsr" else "zero-filled")
        assert m["slices"] == (4 if task == "zsr" else 5)
        results[method[0]] = m
    assert results["padis"]["nfe"] == 3 and "mri_patch256" in results["padis"]["method_params"]["prior"]
    assert results["admm-tv"]["psnr"] > results["admm-tv"]["baseline_psnr"]


@pytest.mark.parametrize("argv, words", [
    (["--task", "zsr", "--method", "admm-tv"], "add --volume"),
    (["--volume", "--task", "zsr", "--factor", "2", "--method", "admm-tv"], "--slices 0:4"),
    (["--volume", "--task", "zsr", "--factor", "2", "--slices", "0:4", "--method", "fbp"],
     "a learned sampler or smore"),
    (["--volume", "--task", "mri3d", "--views", "20", "--method", "admm-tv"], "--views does not apply to mri3d"),
])
def test_cli_volume_task_bad_input(tmp_path, capsys, mri_path, argv, words):
    code = main(["reconstruct", str(mri_path), *argv, "--size", "32", "--no-progress", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and words in err[0], err
    assert not (tmp_path / "o").exists()
