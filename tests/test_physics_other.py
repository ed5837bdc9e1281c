"""MRI, blur, super-resolution and inpainting operators: exact adjoints, pseudo-inverses, autograd,
agreement with NumPy/SciPy references, masks and kernels."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import scipy.ndimage
import torch

from wavepatch.linalg import inner
from wavepatch.physics.base import LinearOperator, adjoint_mismatch
from wavepatch.physics.blur import (
    BLUR_KERNELS,
    Blur,
    gaussian_kernel,
    gaussian_lowpass,
    heavy_blur_kernel,
    make_blur_kernel,
    motion_kernel,
    uniform_kernel,
)
from wavepatch.physics.inpaint import Inpainting, box_mask, random_pixel_mask
from wavepatch.physics.mri import (
    MultiCoilMRI,
    SingleCoilMRI,
    default_center_fraction,
    gaussian_1d_mask,
    simulate_coil_maps,
    uniform_1d_mask,
)
from wavepatch.physics.superres import SuperResolution

# Non-square so H/W mix-ups show; divisible by 4 for super-resolution.
H, W = 32, 40
SHAPE = (1, H, W)
SHAPE_3D = (2, 7, 12, 10)  # (C, D, H, W): a small volume, every size different


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_operator(name: str) -> LinearOperator:
    """A fresh operator per test (lazy device moves mutate operators)."""
    factories = {
        "mri1_uniform_x4": lambda: SingleCoilMRI(uniform_1d_mask(W, 4, offset=0), SHAPE),
        "mri1_gaussian_x4": lambda: SingleCoilMRI(gaussian_1d_mask(W, 4, generator=_gen(1)), SHAPE),
        "mri4_uniform_x4": lambda: MultiCoilMRI(uniform_1d_mask(W, 4, offset=1), simulate_coil_maps(4, H, W)),
        "blur_gaussian": lambda: Blur(make_blur_kernel("gaussian"), SHAPE),
        "blur_uniform": lambda: Blur(make_blur_kernel("uniform"), SHAPE),
        "blur_motion": lambda: Blur(make_blur_kernel("motion"), SHAPE),
        "blur_heavy": lambda: Blur(make_blur_kernel("heavy"), SHAPE),
        "blur3d_gaussian": lambda: Blur(gaussian_kernel(1.0, ndim=3), SHAPE_3D),
        "sr_x2_gaussian": lambda: SuperResolution(2, SHAPE),
        "sr_x4_gaussian": lambda: SuperResolution(4, SHAPE),
        "sr_x2_box": lambda: SuperResolution(2, SHAPE, kernel="box"),
        "sr_x4_box": lambda: SuperResolution(4, SHAPE, kernel="box"),
        "inpaint_random": lambda: Inpainting(random_pixel_mask((H, W), 0.3, generator=_gen(2))),
        "inpaint_box": lambda: Inpainting(box_mask((H, W))),
    }
    return factories[name]()


ALL = [
    "mri1_uniform_x4", "mri1_gaussian_x4", "mri4_uniform_x4",
    "blur_gaussian", "blur_uniform", "blur_motion", "blur_heavy", "blur3d_gaussian",
    "sr_x2_gaussian", "sr_x4_gaussian", "sr_x2_box", "sr_x4_box",
    "inpaint_random", "inpaint_box",
]  # fmt: skip
CLOSED_FORM_DAGGER = {
    "mri1_uniform_x4", "mri1_gaussian_x4", "sr_x2_box", "sr_x4_box", "inpaint_random", "inpaint_box",
}  # fmt: skip


def _rand_like_output(y: torch.Tensor, seed: int = 5) -> torch.Tensor:
    g = _gen(seed)
    if y.is_complex():
        return torch.complex(torch.randn(y.shape, generator=g), torch.randn(y.shape, generator=g)).to(y.dtype)
    return torch.randn(y.shape, generator=g, dtype=y.dtype)


# ------------------------------------------------------------------------------ generic operator tests


@pytest.mark.parametrize("name", ALL)
def test_adjoint_float64(name):
    op = make_operator(name)
    assert max(adjoint_mismatch(op, seed=s, dtype=torch.float64) for s in range(3)) < 1e-10


@pytest.mark.parametrize("name", ALL)
def test_adjoint_float32(name):
    op = make_operator(name)
    errors = [adjoint_mismatch(op, seed=s, dtype=torch.float32) for s in range(5)]
    # The ratio |<Au,v> - <u,A^T v>| / |<Au,v>| has a random denominator, so float32 rounding alone
    # (~1e-7 per entry) occasionally gives 1e-5 on an unlucky seed; the median over seeds is stable,
    # and any real adjoint error would be O(1) on every seed.
    assert statistics.median(errors) < 1e-5
    assert max(errors) < 1e-3


@pytest.mark.parametrize("name", ALL)
def test_dtype_and_shape_preserved(name):
    op = make_operator(name)
    for dtype, cdtype in ((torch.float32, torch.complex64), (torch.float64, torch.complex128)):
        x = torch.randn((2,) + op.image_shape, generator=_gen(), dtype=dtype)
        y = op.A(x)
        assert y.dtype in (dtype, cdtype)
        back = op.A_adjoint(y)
        assert back.shape == x.shape and back.dtype == dtype


@pytest.mark.parametrize("name", ALL)
def test_dagger_reproduces_measurements(name):
    op = make_operator(name)
    x = torch.randn((1,) + op.image_shape, generator=_gen(3), dtype=torch.float64)
    y = op.A(x)
    residual = float((op.A(op.A_dagger(y)) - y).norm() / y.norm())
    # CG (100 iterations) on ill-conditioned blurs/coil problems only gets to ~1e-2.
    assert residual < (1e-12 if name in CLOSED_FORM_DAGGER else 5e-2)


@pytest.mark.parametrize("name", sorted(CLOSED_FORM_DAGGER))
def test_closed_form_dagger_is_min_norm_least_squares(name):
    """The closed form must agree with CG on the normal equations from 0 (the minimum-norm solution)."""
    op = make_operator(name)
    y = _rand_like_output(op.A(torch.zeros((2,) + op.image_shape, dtype=torch.float64)))  # not in the range
    closed = op.A_dagger(y)
    cg = LinearOperator.A_dagger(op, y, n_iter=200, tol=1e-13)
    assert float((closed - cg).norm() / cg.norm()) < 1e-8


@pytest.mark.parametrize("name", ALL)
def test_autograd_gradient_matches_adjoint(name):
    op = make_operator(name)
    x = torch.randn((2,) + op.image_shape, generator=_gen(4), dtype=torch.float64, requires_grad=True)
    y = _rand_like_output(op.A(x.detach()))
    r = op.A(x) - y
    loss = 0.5 * (torch.view_as_real(r) if r.is_complex() else r).pow(2).sum()
    (grad,) = torch.autograd.grad(loss, x)
    expected = op.A_adjoint(r.detach())
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", ALL)
def test_gpu_matches_cpu(name):
    cpu_op, gpu_op = make_operator(name), make_operator(name)
    x = torch.randn((2,) + cpu_op.image_shape, generator=_gen(6), dtype=torch.float64)
    y = cpu_op.A(x)
    y_gpu = gpu_op.A(x.cuda())  # buffers follow the input lazily
    assert y_gpu.device.type == "cuda" and gpu_op.device.type == "cuda"
    torch.testing.assert_close(y_gpu.cpu(), y, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(gpu_op.A_adjoint(y.cuda()).cpu(), cpu_op.A_adjoint(y), rtol=1e-9, atol=1e-9)
    assert adjoint_mismatch(gpu_op) < 1e-10
    assert make_operator(name).to("cuda").device.type == "cuda"


# ------------------------------------------------------------------------------------------ MRI


def _numpy_centered_fft2(x: np.ndarray) -> np.ndarray:
    axes = (-2, -1)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=axes), norm="ortho", axes=axes), axes=axes)


@pytest.mark.parametrize("shape", [(32, 40), (33, 27)])
def test_single_coil_matches_numpy(shape):
    h, w = shape
    x = torch.randn(2, 1, h, w, generator=_gen(), dtype=torch.float64)
    expected = _numpy_centered_fft2(x.numpy())
    full = SingleCoilMRI(torch.ones(w, dtype=torch.bool), (1, h, w))
    np.testing.assert_allclose(full.A(x).numpy(), expected, rtol=1e-12, atol=1e-12)
    mask = uniform_1d_mask(w, 4, offset=0)
    y = SingleCoilMRI(mask, (1, h, w)).A(x)
    np.testing.assert_allclose(y.numpy(), expected * mask.numpy(), rtol=1e-12, atol=1e-12)
    assert bool((y[..., ~mask] == 0).all())  # unsampled lines exactly zero


def test_single_coil_full_mask_dc_at_center():
    x = torch.ones(1, 1, 8, 10, dtype=torch.float64)
    k = SingleCoilMRI(torch.ones(8, 10, dtype=torch.bool)).A(x)
    assert abs(float(k[0, 0, 4, 5].real) - math.sqrt(80)) < 1e-12
    assert float(k.abs().sum()) == pytest.approx(math.sqrt(80))


def test_real_image_dagger_handles_asymmetric_mask():
    """With real images, a line whose mirror -k is unsampled must be doubled by A_dagger."""
    mask = uniform_1d_mask(W, 4, offset=0)
    mirror = mask[(2 * (W // 2) - torch.arange(W)) % W]
    assert not torch.equal(mask, mirror)  # the case plain zero filling gets wrong
    op = SingleCoilMRI(mask, SHAPE)
    y = op.A(torch.randn(1, *SHAPE, generator=_gen(), dtype=torch.float64))
    zero_filled = op.A_adjoint(y)
    assert float((op.A(zero_filled) - y).norm() / y.norm()) > 0.1
    assert float((op.A(op.A_dagger(y)) - y).norm() / y.norm()) < 1e-12


@pytest.mark.parametrize("op_name", ["single", "multi"])
def test_complex_image_mode(op_name):
    mask = gaussian_1d_mask(W, 4, generator=_gen(3))
    if op_name == "single":
        op = SingleCoilMRI(mask, SHAPE, real_image=False)
    else:
        op = MultiCoilMRI(mask, simulate_coil_maps(3, H, W), real_image=False)
    g = _gen(7)
    u = torch.complex(
        torch.randn(2, *SHAPE, generator=g, dtype=torch.float64),
        torch.randn(2, *SHAPE, generator=g, dtype=torch.float64),
    )
    Au = op.A(u)
    v = _rand_like_output(Au)
    lhs, rhs = inner(Au, v).sum(), inner(u, op.A_adjoint(v)).sum()
    assert op.A_adjoint(v).is_complex()
    assert float((lhs - rhs).abs() / lhs.abs()) < 1e-10
    u.requires_grad_(True)
    r = op.A(u) - v
    (grad,) = torch.autograd.grad(0.5 * torch.view_as_real(r).pow(2).sum(), u)
    torch.testing.assert_close(grad, op.A_adjoint(r.detach()), rtol=1e-10, atol=1e-10)
    if op_name == "single":
        torch.testing.assert_close(op.A(op.A_dagger(Au)), Au, rtol=1e-12, atol=1e-12)


def test_multicoil_full_mask_is_isometry_and_matches_numpy():
    maps = simulate_coil_maps(4, H, W, dtype=torch.complex128)
    op = MultiCoilMRI(torch.ones(W, dtype=torch.bool), maps, real_image=False)
    x = torch.randn(2, *SHAPE, generator=_gen(), dtype=torch.complex128)
    y = op.A(x)
    assert y.shape == (2, 4, H, W)
    np.testing.assert_allclose(y.numpy(), _numpy_centered_fft2(x.numpy() * maps.numpy()), atol=1e-12)
    torch.testing.assert_close(op.A_adjoint(y), x, rtol=1e-12, atol=1e-12)  # sum |S|^2 = 1, F unitary


def test_coil_maps_normalised_smooth_deterministic():
    maps = simulate_coil_maps(8, 48, 40)
    assert maps.shape == (8, 48, 40) and maps.dtype == torch.complex64
    torch.testing.assert_close(maps.abs().pow(2).sum(0), torch.ones(48, 40), rtol=0, atol=1e-5)
    assert torch.equal(maps, simulate_coil_maps(8, 48, 40))
    # Smooth: neighbouring pixels differ by a small fraction of the map's range.
    assert float((maps[:, 1:] - maps[:, :-1]).abs().max()) < 0.2
    # Each coil is brightest on its own side: the coils are not all alike.
    peaks = {int(m.abs().argmax()) for m in maps}
    assert len(peaks) == 8


def test_default_center_fraction():
    assert default_center_fraction(4) == pytest.approx(0.08)
    assert default_center_fraction(8) == pytest.approx(0.04)


@pytest.mark.parametrize("kind", ["uniform", "gaussian"])
@pytest.mark.parametrize("width,acc", [(320, 4), (320, 8), (368, 4), (40, 4), (33, 3), (256, 8)])
def test_masks_rate_and_centre(kind, width, acc):
    if kind == "uniform":
        mask = uniform_1d_mask(width, acc, generator=_gen(width))
    else:
        mask = gaussian_1d_mask(width, acc, generator=_gen(width))
    assert mask.shape == (width,) and mask.dtype == torch.bool
    assert abs(int(mask.sum()) - width / acc) <= 1  # achieved acceleration within one column
    n_center = round(width * default_center_fraction(acc))
    start = (width - n_center + 1) // 2
    assert bool(mask[start : start + n_center].all()) and bool(mask[width // 2])


def test_uniform_mask_is_equispaced_outside_centre():
    width, acc = 320, 4
    mask = uniform_1d_mask(width, acc, offset=2)
    n_center = round(width * 0.08)
    start = (width - n_center + 1) // 2
    outside = torch.cat([torch.arange(start), torch.arange(start + n_center, width)])
    picked = torch.nonzero(mask[outside]).flatten()
    gaps = picked.diff()
    assert int(gaps.max() - gaps.min()) <= 1
    assert torch.equal(mask, uniform_1d_mask(width, acc, offset=2))
    with pytest.raises(ValueError):
        uniform_1d_mask(width, acc, offset=1000)


def test_gaussian_mask_reproducible_and_centre_weighted():
    a = gaussian_1d_mask(320, 8, generator=_gen(0))
    assert torch.equal(a, gaussian_1d_mask(320, 8, generator=_gen(0)))
    assert not torch.equal(a, gaussian_1d_mask(320, 8, generator=_gen(1)))
    # Density concentrated around DC: most lines within +-2 std (2 * 15/128 * W) of the centre.
    cols = torch.nonzero(a).flatten() - 160
    assert float((cols.abs() <= 2 * 15 / 128 * 320).double().mean()) > 0.9


# ----------------------------------------------------------------------------------------- blur


def test_kernels_normalised_odd():
    for k in [gaussian_kernel(1.3), uniform_kernel(5), motion_kernel(7.5, 45), heavy_blur_kernel()]:
        assert k.dim() == 2 and k.shape[0] % 2 == 1 and k.shape[1] % 2 == 1
        assert float(k.sum()) == pytest.approx(1.0, abs=1e-6)
        assert bool((k >= 0).all())
    for name in BLUR_KERNELS:
        assert float(make_blur_kernel(name).sum()) == pytest.approx(1.0, abs=1e-6)
    assert gaussian_kernel(2.0).shape == (13, 13)
    assert heavy_blur_kernel().shape == (31, 31)
    with pytest.raises(ValueError):
        uniform_kernel(4)
    with pytest.raises(ValueError):
        make_blur_kernel("nope")


def test_motion_kernel_orientation_and_length():
    horizontal = motion_kernel(9, 0)
    c = horizontal.shape[0] // 2
    assert float(horizontal[c].sum()) == pytest.approx(1.0)
    # A 9 px segment covers 9 pixels fully; the bilinear splat adds a light pixel at each end.
    assert int((horizontal[c] > 0).sum()) == 11
    inner_pixels = horizontal[c, c - 3 : c + 4]
    torch.testing.assert_close(inner_pixels, inner_pixels.mean().expand(7))
    vertical = motion_kernel(9, 90)
    assert float(vertical[:, c].sum()) == pytest.approx(1.0, abs=1e-6)
    diagonal = motion_kernel(9, 45)
    # Counter-clockwise as displayed: up-right (small row, large column) carries the mass.
    assert float(diagonal[:c, c + 1 :].sum()) > 0.35 and float(diagonal[:c, :c].sum()) < 1e-6


@pytest.mark.parametrize("kernel_name", ["asymmetric", "gaussian", "motion"])
def test_blur_matches_scipy_convolve(kernel_name):
    if kernel_name == "asymmetric":  # distinguishes convolution from correlation, 5 x 7 non-square
        kernel = torch.rand(5, 7, generator=_gen(), dtype=torch.float64)
    else:
        kernel = make_blur_kernel(kernel_name).double()
    x = torch.randn(2, 3, H, W, generator=_gen(1), dtype=torch.float64)
    y = Blur(kernel, (3, H, W)).A(x)
    k = kernel.numpy()
    expected = np.stack(
        [[scipy.ndimage.convolve(x[b, c].numpy(), k, mode="constant") for c in range(3)] for b in range(2)]
    )
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel_name", ["asymmetric", "gaussian"])
def test_blur_3d_matches_scipy(kernel_name):
    """A volume kernel convolves (B, C, D, H, W) like scipy.ndimage.convolve in 3D (zero boundary); the Gaussian one
    is scipy's separable gaussian_filter (same radius 3 sigma, sigma 1 and 2: ceil(3 sigma) = round(3 sigma))."""
    if kernel_name == "asymmetric":  # a random 3 x 5 x 7 kernel tells convolution from correlation and the axes apart
        kernel = torch.rand(3, 5, 7, generator=_gen(), dtype=torch.float64)
    else:
        kernel = gaussian_kernel(1.0, dtype=torch.float64, ndim=3)
    x = torch.randn(2, *SHAPE_3D, generator=_gen(1), dtype=torch.float64)
    y = Blur(kernel, SHAPE_3D).A(x).numpy()
    k = kernel.numpy()
    for b, c in np.ndindex(2, SHAPE_3D[0]):
        np.testing.assert_allclose(y[b, c], scipy.ndimage.convolve(x[b, c].numpy(), k, mode="constant"),
                                   rtol=1e-12, atol=1e-12)
    if kernel_name == "gaussian":
        for sigma in (1.0, 2.0):
            y = Blur(gaussian_kernel(sigma, dtype=torch.float64, ndim=3), SHAPE_3D).A(x).numpy()
            expected = scipy.ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma, sigma), mode="constant",
                                                     truncate=3.0)
            np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    assert gaussian_kernel(1.0, ndim=3).shape == (7, 7, 7)
    torch.testing.assert_close(gaussian_kernel(1.3, ndim=3).sum((0, 1)), gaussian_kernel(1.3, ndim=1))  # separable
    with pytest.raises(ValueError, match=r"\(C, D, H, W\)"):
        Blur(kernel, (1, 12, 10))


# ------------------------------------------------------------------------------- super-resolution


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_superres_box_is_block_mean(factor):
    shape = (2, 12, 24)
    x = torch.randn(1, *shape, generator=_gen(), dtype=torch.float64)
    op = SuperResolution(factor, shape, kernel="box")
    y = op.A(x)
    assert y.shape == (1, 2, 12 // factor, 24 // factor) and op.low_res_shape == y.shape[1:]
    expected = x.numpy().reshape(1, 2, 12 // factor, factor, 24 // factor, factor).mean(axis=(3, 5))
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12, atol=1e-12)
    assert adjoint_mismatch(op) < 1e-10


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_superres_gaussian_matches_scipy(factor):
    x = torch.randn(1, 1, 24, 36, generator=_gen(), dtype=torch.float64)
    op = SuperResolution(factor, (1, 24, 36))
    k = gaussian_kernel(factor / 2.0, dtype=torch.float64).numpy()
    o = factor // 2
    expected = scipy.ndimage.convolve(x[0, 0].numpy(), k, mode="constant")[o::factor, o::factor]
    np.testing.assert_allclose(op.A(x)[0, 0].numpy(), expected, rtol=1e-12, atol=1e-12)


def test_superres_rejects_bad_sizes():
    with pytest.raises(ValueError, match="divisible"):
        SuperResolution(4, (1, 30, 32))
    with pytest.raises(ValueError):
        SuperResolution(2, (1, 32, 32), kernel="bicubic")


# ------------------------------------------------------------------------------------ inpainting


def test_inpainting_masks():
    m = random_pixel_mask((H, W), 0.3, generator=_gen())
    assert m.shape == (H, W) and int(m.sum()) == round(0.3 * H * W)
    assert torch.equal(m, random_pixel_mask((H, W), 0.3, generator=_gen()))
    b = box_mask((H, W))
    assert int((~b).sum()) == (H // 2) * (W // 2)
    assert not bool(b[H // 2, W // 2]) and bool(b[0, 0])
    corner = box_mask((H, W), box_fraction=0.25, center=(0, 0))  # clipped at the border
    assert int((~corner).sum()) == (H // 8) * (W // 8)


def test_inpainting_zeroes_unobserved_and_broadcasts_channels():
    mask = box_mask((H, W))
    op = Inpainting(mask, image_shape=(3, H, W))
    x = torch.randn(2, 3, H, W, generator=_gen())
    y = op.A(x)
    assert bool((y[..., ~mask] == 0).all()) and torch.equal(y[..., mask], x[..., mask])
    assert torch.equal(op.A_adjoint(y), y) and torch.equal(op.A_dagger(y), y)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.complex64])
@pytest.mark.parametrize("n", [1, 7, 64, 1000])
def test_inner_matches_a_float64_sum_and_is_batch_independent(dtype, n):
    # the pairwise tree equals the exact sum to rounding, and an item's value is bit-identical alone and in a batch
    gen = torch.Generator().manual_seed(n)
    a = torch.randn(5, 1, n, generator=gen, dtype=dtype)
    b = torch.randn(5, 1, n, generator=gen, dtype=dtype)
    got = inner(a, b)
    want = (a.conj() * b).real.double().sum((1, 2)) if dtype.is_complex else (a.double() * b.double()).sum((1, 2))
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    assert got.shape == (5,) and torch.allclose(got.double(), want, rtol=tol, atol=tol * n)
    for i in range(5):
        assert torch.equal(inner(a[i:i + 1], b[i:i + 1])[0], got[i])
        assert torch.equal(inner(a[i:], b[i:])[0], got[i])


@pytest.mark.parametrize("width", [0.7, 1.0, 2.5])
@pytest.mark.parametrize("padding, scipy_mode", [("reflect", "mirror"), ("zeros", "constant")])
def test_gaussian_lowpass_matches_scipy(width, padding, scipy_mode):
    # torch's reflect padding is scipy's 'mirror'; the kernel's radius is ceil(3 sigma)
    radius = math.ceil(3 * width)
    x = torch.rand(2, 1, 20, 23, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    want = np.stack([scipy.ndimage.gaussian_filter(x[i, 0].numpy(), width, mode=scipy_mode, truncate=radius / width)
                     for i in range(2)])
    assert np.allclose(gaussian_lowpass(x, width, padding)[:, 0].numpy(), want, atol=1e-12)


def test_gaussian_lowpass_zero_padding_leaks_mass_and_reflect_keeps_constants():
    ones = torch.ones(1, 1, 16, 16, dtype=torch.float64)
    assert torch.allclose(gaussian_lowpass(ones, 2.0), ones, atol=1e-12)
    zeros_padded = gaussian_lowpass(ones, 2.0, "zeros")
    assert zeros_padded[0, 0, 0, 0] < 0.6 and torch.allclose(zeros_padded[0, 0, 8, 8], torch.tensor(1.0).double())
    with pytest.raises(ValueError, match="padding"):
        gaussian_lowpass(ones, 1.0, "circular")
