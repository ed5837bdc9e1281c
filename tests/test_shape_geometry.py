"""Shape geometry: signed distances against analytic spheres, marching cubes, the wavelet code, shape files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wavepatch.geometry.sdf import fit_mesh_to_grid, mask_surface, mask_to_tsdf, mesh_to_tsdf
from wavepatch.geometry.surface import sample_surface, tsdf_to_mesh, unit_cube
from wavepatch.io.shape_files import ShapeFileError, read_mask_stack, read_mesh
from wavepatch.prior.shape_wavelet import ShapeCodeConfig, code_stats, decode, encode

trimesh = pytest.importorskip("trimesh")


def _sphere_field(side: int, centre: float, radius: float) -> np.ndarray:
    g = np.stack(np.meshgrid(*[np.arange(side, dtype=np.float64)] * 3, indexing="ij"), -1)
    return np.linalg.norm(g - centre, axis=-1) - radius


def test_mesh_sdf_matches_analytic_sphere_to_tessellation_error():
    # an icosphere of 5 subdivisions (radius 10) deviates from the true sphere by < 0.01 voxel between vertices
    mesh = trimesh.creation.icosphere(subdivisions=5, radius=10.0)
    verts = np.asarray(mesh.vertices) + 15.3
    tsdf = mesh_to_tsdf(verts, np.asarray(mesh.faces), (32, 32, 32), truncation=4.0)
    truth = np.clip(_sphere_field(32, 15.3, 10.0), -4.0, 4.0)
    assert np.abs(tsdf - truth).max() < 0.02
    assert (tsdf[16, 16, 16] == -4.0) and tsdf[0, 0, 0] == 4.0  # inside negative, clipped


def test_mask_sdf_is_sub_voxel_and_beats_the_voxel_distance_transform():
    from scipy import ndimage

    truth = _sphere_field(40, 19.6, 11.3)
    mask = truth < 0
    tsdf = mask_to_tsdf(mask, truncation=5.0)
    band = np.abs(truth) < 4.5
    err = np.abs(tsdf - np.clip(truth, -5, 5))[band]
    edt = ndimage.distance_transform_edt(~mask) - ndimage.distance_transform_edt(mask)
    edt_err = np.abs(edt - truth)[band]
    assert np.array_equal(tsdf < 0, mask)  # the sign is the mask's
    assert err.mean() < 0.25 and err.max() < 0.75  # limited by the mask's staircase, not by the distance routine
    assert err.mean() < 0.5 * edt_err.mean()


def test_marching_cubes_of_a_sphere_tsdf_has_the_sphere_area_and_volume():
    r = 12.0
    mesh = tsdf_to_mesh(np.clip(_sphere_field(40, 19.5, r), -4, 4).astype(np.float32))
    assert mesh.is_watertight
    assert mesh.volume == pytest.approx(4 / 3 * np.pi * r**3, rel=0.01)
    assert mesh.area == pytest.approx(4 * np.pi * r**2, rel=0.02)
    pts = sample_surface(mesh, 500, seed=1)
    assert np.abs(np.linalg.norm(pts - 19.5, axis=1) - r).max() < 0.1
    assert np.array_equal(pts, sample_surface(mesh, 500, seed=1))
    assert np.abs(unit_cube(pts, (40, 40, 40))).max() <= 0.5


def test_tsdf_to_mesh_empty_or_full_field_is_none():
    assert tsdf_to_mesh(np.ones((8, 8, 8), np.float32)) is None
    assert tsdf_to_mesh(-np.ones((8, 8, 8), np.float32)) is None


def test_mask_surface_is_outward_and_closed_at_the_border():
    mask = np.zeros((12, 12, 12), bool)
    mask[:6, 3:9, 3:9] = True  # touches the grid border
    verts, faces = mask_surface(mask)
    mesh = trimesh.Trimesh(verts, faces)
    assert mesh.is_watertight and mesh.volume > 0
    with pytest.raises(ValueError, match="empty"):
        mask_surface(np.zeros((4, 4, 4), bool))


def test_wavelet_code_round_trip_and_dropping_fine_details():
    code = ShapeCodeConfig(grid=32, truncation=3.2, levels=2)
    tsdf = torch.from_numpy(np.clip(_sphere_field(32, 15.5, 8.0), -3.2, 3.2)).float()[None, None]
    codes = encode(tsdf, code)
    assert codes.shape == (1, 8, 8, 8, 8)
    rec = decode(codes, code)  # finest level dropped: close, not exact
    assert (rec - tsdf).abs().max() < 0.5 and ((rec < 0) == (tsdf < 0)).float().mean() > 0.99
    one = ShapeCodeConfig(grid=32, truncation=3.2, levels=1)  # nothing dropped: exact inverse
    assert torch.allclose(decode(encode(tsdf, one), one), tsdf, atol=1e-5)
    voxel = ShapeCodeConfig(grid=32, space="voxel")
    assert torch.equal(decode(encode(tsdf, voxel), voxel), tsdf)
    mean, std = code_stats(torch.cat([codes, 2 * codes]))
    assert len(mean) == 8 and min(std) > 0


def test_fit_mesh_to_grid_centres_and_scales():
    verts = np.array([[0, 0, 0], [10, 2, 4], [5, 1, 2.0]])
    out = fit_mesh_to_grid(verts, 32, margin=4)
    assert out.min(0)[0] == pytest.approx(4) and out.max(0)[0] == pytest.approx(27)


def test_shape_files_bad_input(tmp_path):
    np.savez(tmp_path / "wrong.npz", images=np.zeros((2, 4, 4)), labels=np.zeros(2))
    with pytest.raises(ShapeFileError, match="neither split keys"):
        read_mask_stack(tmp_path / "wrong.npz")
    np.savez(tmp_path / "split.npz", test_images=np.ones((1, 4, 4, 4), np.uint8))
    with pytest.raises(ShapeFileError, match="no 'train_images'"):
        read_mask_stack(tmp_path / "split.npz")
    m = np.zeros((3, 4, 4, 4), np.uint8)
    m[0, 1:3, 1:3, 1:3] = 255
    np.save(tmp_path / "empty.npy", m)
    with pytest.raises(ShapeFileError, match="2 of 3 masks are empty"):
        read_mask_stack(tmp_path / "empty.npy")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ShapeFileError, match="not a readable"):
        read_mask_stack(tmp_path / "junk.npz")
    box = trimesh.creation.box()
    open_box = trimesh.Trimesh(box.vertices, box.faces[:-2])
    open_box.export(tmp_path / "open.obj")
    with pytest.raises(ShapeFileError, match="not a watertight"):
        read_mesh(tmp_path / "open.obj")
    box.export(tmp_path / "box.stl")
    verts, faces = read_mesh(tmp_path / "box.stl")
    assert trimesh.Trimesh(verts, faces).volume == pytest.approx(1.0)
