"""Measured k-space readers (wavepatch.io.kspace): round trips for .npy, BART cfl/hdr and fastMRI HDF5,
masks, and one-line KSpaceReadError messages naming the file for bad inputs."""

from __future__ import annotations

import os

import numpy as np
import pytest

from wavepatch.io.kspace import (
    KSpace,
    KSpaceReadError,
    read_kspace,
    read_mask,
    sampling_mask,
    save_kspace_npy,
)

h5py = pytest.importorskip("h5py")

RNG = np.random.default_rng(0)


def _complex(*shape: int) -> np.ndarray:
    return (RNG.standard_normal(shape) + 1j * RNG.standard_normal(shape)).astype(np.complex64)


def _write_bart(base, arr: np.ndarray) -> None:
    """BART's format by hand: name.hdr '# Dimensions' + 16 dims, name.cfl complex64 Fortran order."""
    dims = list(arr.shape) + [1] * (16 - arr.ndim)
    with open(f"{base}.hdr", "w") as f:
        f.write("# Dimensions\n" + " ".join(str(d) for d in dims) + "\n")
        f.write("# Command\nbart fake\n")
    np.asfortranarray(arr.astype(np.complex64)).ravel(order="F").astype("<c8").tofile(f"{base}.cfl")


def _raises_naming(path, match: str | None = None, **kw) -> str:
    with pytest.raises(KSpaceReadError) as info:
        read_kspace(path, **kw)
    msg = str(info.value)
    name = os.path.basename(str(path))
    stem, ext = os.path.splitext(name)
    # a BART pair's problem may lie in either file: the message names the one at fault
    names = {stem + ".cfl", stem + ".hdr"} if ext in (".cfl", ".hdr") else {name}
    assert any(n in msg for n in names), msg
    assert "\n" not in msg
    if match:
        assert match in msg, msg
    return msg


# ------------------------------------------------------------------------------------------- round trips


def test_npy_round_trip_multi_and_single_coil(tmp_path):
    k = _complex(4, 12, 10)
    out = save_kspace_npy(tmp_path / "k.npy", k)
    ks = read_kspace(out)
    assert isinstance(ks, KSpace) and ks.source == "npy"
    assert ks.data.dtype == np.complex64 and ks.data.shape == (4, 12, 10)
    np.testing.assert_array_equal(ks.data, k)
    single = _complex(12, 10).astype(np.complex128)
    np.save(tmp_path / "s.npy", single)
    ks1 = read_kspace(tmp_path / "s.npy")
    assert ks1.data.shape == (1, 12, 10) and ks1.n_coils == 1 and ks1.shape == (12, 10)
    np.testing.assert_allclose(ks1.data[0], single, rtol=1e-6)


def test_save_kspace_npy_is_atomic_and_checks(tmp_path):
    target = tmp_path / "sub" / "k.npy"
    save_kspace_npy(target, _complex(2, 4, 4))
    assert [p.name for p in target.parent.iterdir()] == ["k.npy"]  # no temporary left behind
    with pytest.raises(ValueError, match="complex"):
        save_kspace_npy(tmp_path / "r.npy", np.ones((2, 4, 4)))
    with pytest.raises(ValueError, match="refusing"):
        save_kspace_npy(target, _complex(2, 4, 4), protect=[target])


def test_bart_round_trip_maps_dims(tmp_path):
    # BART dims [x, y, z, coils] = readout rows H, phase-encode columns W, 1 slice, C coils
    arr = _complex(12, 10, 1, 3)
    _write_bart(tmp_path / "scan", arr)
    for p in (tmp_path / "scan.cfl", tmp_path / "scan.hdr", tmp_path / "scan"):
        ks = read_kspace(p)
        assert ks.source == "cfl" and ks.data.shape == (3, 12, 10)
        np.testing.assert_array_equal(ks.data, np.transpose(arr[:, :, 0, :], (2, 0, 1)))


def test_bart_multislice_needs_slice(tmp_path):
    arr = _complex(8, 6, 3, 2)
    _write_bart(tmp_path / "ms", arr)
    _raises_naming(tmp_path / "ms.cfl", "slice")
    ks = read_kspace(tmp_path / "ms.cfl", slice=2)
    np.testing.assert_array_equal(ks.data, np.transpose(arr[:, :, 2, :], (2, 0, 1)))
    _raises_naming(tmp_path / "ms.cfl", "out of range", slice=3)
    _write_bart(tmp_path / "maps", _complex(8, 6, 1, 2, 2))  # two ESPIRiT map sets: not k-space we take
    _raises_naming(tmp_path / "maps.cfl", "must be 1")


def test_h5_fastmri_multicoil_and_singlecoil(tmp_path):
    k = _complex(5, 4, 16, 12)
    mask = np.zeros(12, dtype=np.float32)
    mask[[0, 4, 5, 6, 7, 10]] = 1
    with h5py.File(tmp_path / "mc.h5", "w") as f:
        f.create_dataset("kspace", data=k)
        f.create_dataset("mask", data=mask)
        f.attrs["acquisition"] = "CORPD_FBK"
        f.attrs["max"] = 1.5
    ks = read_kspace(tmp_path / "mc.h5")
    assert ks.source == "hdf5" and ks.info["slice"] == 2 and ks.info["n_slices"] == 5
    assert ks.info["layout"] == "multicoil" and ks.info["attrs"]["acquisition"] == "CORPD_FBK"
    np.testing.assert_array_equal(ks.data, k[2])
    assert ks.mask.shape == (16, 12) and ks.mask.dtype == bool
    np.testing.assert_array_equal(ks.mask[3], mask.astype(bool))
    np.testing.assert_array_equal(read_kspace(tmp_path / "mc.h5", slice=0).data, k[0])
    _raises_naming(tmp_path / "mc.h5", "out of range", slice=5)

    sc = _complex(3, 16, 12)
    with h5py.File(tmp_path / "sc.hdf5", "w") as f:
        f.create_dataset("kspace", data=sc)
        f.create_dataset("other", data=sc[:1])
    ks1 = read_kspace(tmp_path / "sc.hdf5", slice=1)
    assert ks1.data.shape == (1, 16, 12) and ks1.mask is None and ks1.info["layout"] == "singlecoil"
    np.testing.assert_array_equal(ks1.data[0], sc[1])
    assert read_kspace(tmp_path / "sc.hdf5", dataset="other", slice=0).data.shape == (1, 16, 12)


def test_h5_compound_real_imag(tmp_path):
    k = _complex(1, 2, 6, 5)
    rec = np.empty(k.shape, dtype=[("real", "<f4"), ("imag", "<f4")])
    rec["real"], rec["imag"] = k.real, k.imag
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f.create_dataset("kspace", data=rec)
    np.testing.assert_array_equal(read_kspace(tmp_path / "c.h5").data, k[0])


def test_sampling_mask_and_read_mask(tmp_path):
    k = _complex(3, 8, 10)
    cols = np.zeros(10, dtype=bool)
    cols[[1, 4, 5, 6, 9]] = True
    k[:, :, ~cols] = 0
    k[0, :, 9] = 0  # zero in one coil only: still sampled
    m = sampling_mask(KSpace(k, "npy"))
    assert m.shape == (8, 10) and m.dtype == bool
    np.testing.assert_array_equal(m, np.broadcast_to(cols, (8, 10)))
    np.testing.assert_array_equal(sampling_mask(k[1]), m)

    np.save(tmp_path / "m1.npy", cols.astype(np.uint8))
    np.testing.assert_array_equal(read_mask(tmp_path / "m1.npy"), cols)
    np.testing.assert_array_equal(read_mask(tmp_path / "m1.npy", shape=(8, 10)), m)
    np.save(tmp_path / "m2.npy", m)
    np.testing.assert_array_equal(read_mask(tmp_path / "m2.npy"), m)
    with pytest.raises(KSpaceReadError, match="m1.npy"):
        read_mask(tmp_path / "m1.npy", shape=(8, 11))
    np.save(tmp_path / "bad.npy", np.array([0, 0.5, 1]))
    with pytest.raises(KSpaceReadError, match="bad.npy.*other than 0 and 1"):
        read_mask(tmp_path / "bad.npy")
    np.save(tmp_path / "m3.npy", np.ones((2, 3, 4), dtype=bool))
    with pytest.raises(KSpaceReadError, match="m3.npy.*expected"):
        read_mask(tmp_path / "m3.npy")


# ------------------------------------------------------------------------------------------- bad inputs


def test_npy_bad_inputs(tmp_path):
    np.save(tmp_path / "real.npy", np.ones((2, 4, 4), dtype=np.float32))
    _raises_naming(tmp_path / "real.npy", "real dtype")
    np.save(tmp_path / "nd4.npy", _complex(1, 2, 4, 4))
    _raises_naming(tmp_path / "nd4.npy", "expected complex k-space (H, W) or (C, H, W)")
    np.save(tmp_path / "nd1.npy", _complex(8))
    _raises_naming(tmp_path / "nd1.npy", "(8,)")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    _raises_naming(tmp_path / "obj.npy", "pickled")
    nan = _complex(1, 4, 4)
    nan[0, 1, 1] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    _raises_naming(tmp_path / "nan.npy", "NaN")
    np.save(tmp_path / "ok.npy", _complex(4, 4))
    _raises_naming(tmp_path / "ok.npy", "slice", slice=0)


def test_truncated_and_mismatched_cfl(tmp_path):
    arr = _complex(8, 6, 1, 2)
    _write_bart(tmp_path / "t", arr)
    data = (tmp_path / "t.cfl").read_bytes()
    (tmp_path / "t.cfl").write_bytes(data[:-13])
    _raises_naming(tmp_path / "t.cfl", "truncated")
    _write_bart(tmp_path / "m", arr)
    (tmp_path / "m.hdr").write_text("# Dimensions\n8 7 1 2 1\n")  # header disagrees with the data size
    _raises_naming(tmp_path / "m.cfl", "need")
    _write_bart(tmp_path / "nohdr", arr)
    (tmp_path / "nohdr.hdr").unlink()
    _raises_naming(tmp_path / "nohdr.cfl", "missing")
    _write_bart(tmp_path / "badhdr", arr)
    (tmp_path / "badhdr.hdr").write_text("# Dimensions\n8 six 1 2\n")
    _raises_naming(tmp_path / "badhdr.cfl", "not integers")


def test_h5_without_kspace_and_wrong_shape(tmp_path):
    with h5py.File(tmp_path / "nok.h5", "w") as f:
        f.create_dataset("reconstruction_rss", data=np.ones((2, 4, 4), dtype=np.float32))
    _raises_naming(tmp_path / "nok.h5", "no 'kspace' dataset (found: reconstruction_rss)")
    with h5py.File(tmp_path / "ismrmrd.h5", "w") as f:
        f.create_group("dataset").create_dataset("data", data=np.zeros(3))
    _raises_naming(tmp_path / "ismrmrd.h5", "ISMRMRD")
    with h5py.File(tmp_path / "real.h5", "w") as f:
        f.create_dataset("kspace", data=np.ones((2, 4, 4), dtype=np.float32))
    _raises_naming(tmp_path / "real.h5", "real dtype")
    with h5py.File(tmp_path / "5d.h5", "w") as f:
        f.create_dataset("kspace", data=_complex(1, 1, 1, 4, 4))
    _raises_naming(tmp_path / "5d.h5", "expected (slices, coils, H, W)")
    with h5py.File(tmp_path / "badmask.h5", "w") as f:
        f.create_dataset("kspace", data=_complex(1, 2, 4, 6))
        f.create_dataset("mask", data=np.ones(5))
    _raises_naming(tmp_path / "badmask.h5", "mask")


@pytest.mark.parametrize("name", ["junk.npy", "junk.h5", "junk.cfl", "junk.dat", "junk"])
def test_random_bytes(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(1).bytes(777))
    if name.endswith(".cfl"):
        (tmp_path / "junk.hdr").write_bytes(np.random.default_rng(2).bytes(50))
    _raises_naming(path)


def test_missing_file_and_folder(tmp_path):
    _raises_naming(tmp_path / "nothing.npy", "no such file")
    _raises_naming(tmp_path, "folder")
    with pytest.raises(KSpaceReadError, match="nothing.npy"):
        read_mask(tmp_path / "nothing.npy")
