"""The shape commands as a user runs them: train --prior shape-wavelet / shape-voxel, sample, eval-shapes, and
bad input (one line, exit 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from wavepatch.cli import main

pytest.importorskip("trimesh")
pytest.importorskip("igl")
TINY = ["--channels", "8", "--channel-mult", "1,2", "--blocks", "1", "--no-attention", "--batch", "2",
        "--no-progress"]


def _ellipsoids(n: int, side: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    g = np.stack(np.meshgrid(*[np.arange(side, dtype=np.float64)] * 3, indexing="ij"), -1)
    out = np.zeros((n, side, side, side), np.uint8)
    for i in range(n):
        c = side / 2 + rng.uniform(-3, 3, 3)
        r = rng.uniform(4, 8, 3)
        out[i] = 255 * (((g - c) / r) ** 2).sum(-1) < 255
    return out


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    path = tmp_path_factory.mktemp("shapes") / "ellipsoids.npz"
    np.savez(path, train_images=_ellipsoids(6, 32, 0), val_images=_ellipsoids(2, 32, 1),
             test_images=_ellipsoids(4, 32, 2))
    return path


@pytest.fixture(scope="module")
def trained(shapes, tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "wavelet"
    assert main(["train", str(shapes), "--prior", "shape-wavelet", "--out", str(run), "--steps", "3",
                 "--detail-steps", "2", "--checkpoint-every", "2", *TINY]) == 0
    return run


@pytest.mark.slow
def test_train_sample_eval_end_to_end(trained, shapes, tmp_path, capsys):
    meta = json.loads((trained / "prior.json").read_text())
    assert meta["config"]["kind"] == "shape" and meta["config"]["code"]["grid"] == 32
    assert meta["info"]["generator_steps"] == 3 and meta["info"]["detail_steps"] == 2
    assert "detail_val_loss" in meta["info"]
    out = tmp_path / "samples"
    assert main(["sample", "--prior", str(trained / "prior.safetensors"), "--n", "3", "--steps", "3", "--batch",
                 "2", "--mesh-format", "ply", "--out", str(out), "--no-progress"]) == 0
    tsdf = np.load(out / "tsdf.npy")
    info = json.loads((out / "sample_info.json").read_text())
    assert tsdf.shape == (3, 32, 32, 32) and tsdf.dtype == np.float32
    assert np.abs(tsdf).max() <= info["truncation_voxels"] + 1e-6
    assert info["nfe_per_shape"] == 2 * 3 - 1 + 1 and (out / "grid.png").stat().st_size > 1000
    assert len(list((out / "meshes").glob("*.ply"))) == 3 - len(info["empty_shapes"])
    # the same seed draws the same shapes; the batch size does not change them
    again = tmp_path / "again"
    assert main(["sample", "--prior", str(trained / "prior.safetensors"), "--n", "3", "--steps", "3", "--batch",
                 "2", "--out", str(again), "--no-progress", "--no-detail"]) == 0
    assert not np.allclose(np.load(again / "tsdf.npy"), tsdf)  # without details the field differs
    capsys.readouterr()
    # eval the training set against the test set: real shapes, no empty ones
    np.save(tmp_path / "train_tsdf.npy", np.stack([np.clip(-1.0 + 2.0 * (m == 0), -1, 1) for m in
                                                   np.load(shapes)["train_images"]]).astype(np.float32))
    ev = tmp_path / "eval"
    assert main(["eval-shapes", str(out), "--real", str(shapes), "--train", str(shapes), "--points", "128",
                 "--emd-points", "32", "--out", str(ev), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "1-NNA" in printed and "novelty" in printed
    metrics = json.loads((ev / "metrics.json").read_text())
    assert 0 <= metrics["cov_cd"] <= 1 and metrics["n_reference"] == 4 and (ev / "novelty.png").exists()


@pytest.mark.slow
def test_voxel_prior_trains_and_refuses_no_detail(shapes, tmp_path, capsys):
    run = tmp_path / "voxel"
    assert main(["train", str(shapes), "--prior", "shape-voxel", "--out", str(run), "--steps", "2", *TINY]) == 0
    capsys.readouterr()
    assert main(["sample", "--prior", str(run / "prior.safetensors"), "--n", "1", "--steps", "2", "--no-detail",
                 "--out", str(tmp_path / "s"), "--no-progress"]) == 2
    assert "wavelet-space shape priors only" in capsys.readouterr().err


def _fails(argv, capsys, needle: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err, err


def test_bad_shape_input_is_one_line(shapes, trained, tmp_path, capsys):
    np.savez(tmp_path / "nokeys.npz", a=np.zeros((2, 8, 8, 8)), b=np.zeros(2))
    _fails(["train", str(tmp_path / "nokeys.npz"), "--prior", "shape-wavelet", "--out", str(tmp_path / "r")],
           capsys, "neither split keys")
    np.save(tmp_path / "empty.npy", np.zeros((2, 16, 16, 16), np.uint8))
    _fails(["train", str(tmp_path / "empty.npy"), "--prior", "shape-voxel", "--out", str(tmp_path / "r")],
           capsys, "masks are empty")
    _fails(["train", str(shapes), "--prior", "shape-wavelet", "--window", "0", "1", "--out", str(tmp_path / "r")],
           capsys, "--window does not apply to a shape prior")
    _fails(["train", str(shapes), "--prior", "whole", "--truncation", "3", "--out", str(tmp_path / "r")],
           capsys, "--truncation applies to shape priors")
    _fails(["sample", "--prior", str(trained / "prior.safetensors"), "--size", "64", "--out", str(tmp_path / "s")],
           capsys, "--size does not apply to a shape prior")
    _fails(["eval-shapes", str(tmp_path / "missing"), "--real", str(shapes), "--no-progress"], capsys,
           "does not exist")
    np.save(tmp_path / "bad.npy", np.zeros((2, 8, 8)))
    _fails(["eval-shapes", str(tmp_path / "bad.npy"), "--real", str(shapes), "--no-progress"], capsys,
           "must be finite (N, G, G, G)")
    np.save(tmp_path / "flat.npy", np.ones((2, 8, 8, 8), np.float32))
    _fails(["eval-shapes", str(tmp_path / "flat.npy"), "--real", str(shapes), "--no-progress"], capsys,
           "all 2 generated shapes")
    _fails(["train", str(shapes), "--prior", "shape-wavelet", "--out", str(trained), *TINY], capsys,
           "already holds a shape training run")


@pytest.mark.slow
def test_mesh_folder_trains_on_its_grid_and_refuses_open_meshes(tmp_path, capsys):
    import trimesh

    folder = tmp_path / "meshes"
    folder.mkdir()
    for i, r in enumerate((1.0, 1.5, 2.0)):
        trimesh.creation.icosphere(subdivisions=2, radius=r).export(folder / f"s{i}.obj")
    trimesh.creation.box(extents=(1, 2, 3)).export(folder / "box.ply")
    run = tmp_path / "run"
    assert main(["train", str(folder), "--prior", "shape-wavelet", "--grid", "32", "--out", str(run), "--steps", "2",
                 "--detail-steps", "1", *TINY]) == 0
    meta = json.loads((run / "prior.json").read_text())
    assert meta["config"]["code"]["grid"] == 32 and meta["info"]["train_shapes"] == 4
    _fails(["train", str(folder), "--prior", "shape-wavelet", "--out", str(tmp_path / "r2"), *TINY], capsys,
           "needs a grid size (--grid)")
    box = trimesh.creation.box()
    trimesh.Trimesh(box.vertices, box.faces[:-1]).export(folder / "open.stl")
    _fails(["train", str(folder), "--prior", "shape-wavelet", "--grid", "32", "--out", str(tmp_path / "r3"), *TINY],
           capsys, "not a watertight mesh")


@pytest.mark.slow
def test_shape_training_resumes_from_its_checkpoints(shapes, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", str(shapes), "--prior", "shape-wavelet", "--out", str(run), "--checkpoint-every", "1", *TINY]
    assert main([*args, "--steps", "2", "--detail-steps", "1"]) == 0
    assert (run / "codes_train.safetensors").exists()  # a resumed run skips the signed distances
    assert main([*args, "--steps", "4", "--detail-steps", "2", "--resume"]) == 0
    info = json.loads((run / "prior.json").read_text())["info"]
    assert info["generator_steps"] == 4 and info["detail_steps"] == 2
    capsys.readouterr()
    _fails([*args, "--steps", "4", "--resume", "--channels", "16"], capsys, "cannot resume")


@pytest.mark.slow
def test_bundled_shape_prior_samples_organ_like_shapes(tmp_path, capsys):
    from scipy import ndimage

    out = tmp_path / "bundled"
    assert main(["sample", "--modality", "shape", "--n", "3", "--steps", "12", "--out", str(out),
                 "--no-progress"]) == 0
    assert "bundled shape prior" in capsys.readouterr().out
    tsdf = np.load(out / "tsdf.npy")
    info = json.loads((out / "sample_info.json").read_text())
    assert tsdf.shape == (3, 64, 64, 64) and info["empty_shapes"] == [] and info["space"] == "wavelet"
    for t in tsdf:
        inside = t < 0
        assert 0.001 < inside.mean() < 0.08  # the training masks fill 0.18 % to 5.9 % of the grid
        labels, n = ndimage.label(inside)
        sizes = np.bincount(labels.ravel())[1:]
        assert sizes.max() > 0.8 * sizes.sum()  # one organ, not scattered blobs (an untrained net gives noise)
