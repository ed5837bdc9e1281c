"""Every reconstruction method by name: one function plus one entry declaring its parameters.

An entry (:class:`Method`) names the function that runs, and each parameter (:class:`Param`: name, type,
default — one value or one per task —, valid range or choices, one line of help). The CLI's ``--method``
choices and help, ``--param`` validation, ``wavepatch methods``, ``bench`` and the table in docs/methods.md are
all generated from :data:`REGISTRY`. Adding a method = one function + ``register(Method(...))``.

Two kinds:
- ``classical``: ``run(fidelity, x0, *, progress, **params) -> x`` (x0: the task's baseline reconstruction;
  a parameter declared with ``denoiser=True`` arrives as a ``denoise(x, sigma)`` callable).
- ``sampler``: a posterior sampler ``run(denoise, fidelity, x_init, sigmas, *, generator, callback, **params)``
  (:mod:`wavepatch.sampling.posterior`); the schedule parameters (``steps``, ``sigma_max``, ``sigma_min``,
  ``sigma_start``) build ``sigmas`` and are not passed on. ``fast_run``: the function used with ``--fast``
  (default: ``run`` itself, warm-started from ADMM-TV at ``sigma_start``).

Defaults: the classical ones per task are the best of a small grid on training data (two CT slices of the
training patient, two planes of the MRI template; never a test slice), by mean PSNR, found by
``benchmarks/tune_classical.py`` (``benchmarks/results/tune_classical.json``; ct-lowdose re-tuned for the
count-weighted data term in ``benchmarks/results/tune_classical_pwls.json``; mri re-tuned on four real brain
slices of ``mri_brain/train`` in ``benchmarks/results/tune_classical_mri_brain.json``, which moved fista-tv's
lam 3e-5 -> 1e-4 and l1-wavelet's 3e-5 -> 3e-4 and kept the others). The samplers' are stated at their
entries, with the training slices they were chosen on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from wavepatch.fidelity import GaussianFidelity
from wavepatch.linalg import cgls
from wavepatch.physics.phase_retrieval import hio
from wavepatch.physics.volume_ops import Cartesian3DMRI
from wavepatch.prior.ldct import denoise_image
from wavepatch.recon.admm import admm_tv, pnp_admm
from wavepatch.recon.fista import fista_tv, l1_wavelet
from wavepatch.recon.mri3d_selfsup import mri3d_selfsup
from wavepatch.recon.red import red
from wavepatch.recon.zsr_selfsup import zsr_selfsup
from wavepatch.sampling import posterior as P
from wavepatch.sampling.wavelet_regularized import wavelet_regularized_langevin
from wavepatch.volume_tasks import PARAMETER_TASK, stack_fidelity

KINDS = ("classical", "sampler")
SCHEDULE_PARAMS = ("steps", "sigma_max", "sigma_min", "sigma_start")


def for_task(value: Any, task: str) -> Any:
    """A default's value on ``task``: the value itself, or from a per-task dict {task: value, "*": other tasks}."""
    return value.get(task, value["*"]) if isinstance(value, dict) else value


def per_task_text(value: Any) -> str:
    """A default as the docs show it: the value, or "*: a, task: b, ..." for a per-task dict."""
    if not isinstance(value, dict):
        return str(value)
    return ", ".join(f"{k}: {v:g}" if isinstance(v, float) else f"{k}: {v}" for k, v in value.items())


@dataclass(frozen=True)
class Param:
    """A method parameter. default: a value, or a dict {task name: value} with "*" for the other tasks.
    low / high: inclusive bounds (``low_open``: strictly above low); choices: the allowed strings.
    applies: "always", or "fast" / "slow" for a sampler parameter used only with / without ``--fast``.
    denoiser: the value names a denoiser ('wavelet', 'tv', 'learned'), handed to ``run`` as a callable.
    per_noise: {task name: c} for a regularisation weight whose default on that task rises to ``c * std`` when
    the measurement's Gaussian noise std makes that larger (the task's default was chosen on noiseless data).
    requires: (other parameter, value): setting this one is refused unless the other has that value."""

    name: str
    type: type
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple[str, ...] | None = None
    applies: str = "always"
    denoiser: bool = False
    per_noise: dict[str, float] | None = None
    requires: tuple[str, Any] | None = None

    def default_for(self, task: str) -> Any:
        return for_task(self.default, task)

    def parse(self, method: str, raw: Any) -> Any:
        """``raw`` (a string from the command line, or a value) as this parameter's type; ValueError (one line,
        naming method and parameter) if it does not convert or lies outside the valid range."""
        where = f"{method} parameter {self.name}"
        if isinstance(raw, bool):
            raise ValueError(f"{where} must be {self.type.__name__}, got {raw!r}")
        try:
            if self.type is int:  # "7", "1e3", 7 and 7.0 are ints; "2.5" and 2.5 are not
                as_float = float(raw)
                if not as_float.is_integer():
                    raise ValueError
                value = int(as_float)
            elif self.type is float:
                value = float(raw)
            else:
                value = str(raw)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"{where} must be {self.type.__name__}, got {raw!r}") from None
        if self.type is float and not math.isfinite(value):
            raise ValueError(f"{where} must be finite, got {raw!r}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{where} must be one of {', '.join(self.choices)}, got {value!r}")
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            raise ValueError(f"{where} must be {'>' if self.low_open else '>='} {self.low:g}, got {value:g}")
        if self.high is not None and value > self.high:
            raise ValueError(f"{where} must be <= {self.high:g}, got {value:g}")
        return value

    def default_text(self) -> str:
        """The default as shown in the docs and help: a value, or "*: a, task: b, ..." when it is per task."""
        text = per_task_text(self.default)
        if not self.per_noise:
            return text
        return text + "; " + ", ".join(f"{t}: at least {c:g} x noise std" for t, c in self.per_noise.items())

    def range_text(self) -> str:
        if self.choices:
            return " | ".join(self.choices)
        lo = "" if self.low is None else f"{'>' if self.low_open else '>='} {self.low:g}"
        hi = "" if self.high is None else f"<= {self.high:g}"
        return ", ".join(t for t in (lo, hi) if t)


@dataclass(frozen=True)
class Method:
    """A reconstruction method (module docstring). prior: the kind of bundled prior a sampler takes by default
    ('patch' or 'whole'); patch_only: refuses whole-image priors; gradient: backpropagates through the network;
    schedule: 'karras' or 'geometric' noise levels (``fast_schedule`` in fast mode); fast_defaults: defaults
    that change with ``--fast``; variants: {param: {value: defaults}}, defaults that follow another parameter's
    value (PnP with the learned denoiser); nonlinear: runs on nonlinear forward models too (phase retrieval: it
    uses only the fidelity's residual and scale); network: the bundled image-to-image network a classical method
    runs (``run`` gets it as ``translator``; ``--prior`` replaces it); tasks: the only tasks the method applies to
    (None: all); geometry: ``run`` also gets the volume's ``z_weight`` (in-plane pixel / slice spacing), the
    run's ``seed`` and ``device``, and returns (volume, training report: a JSON-able dict for metrics.json)
    (volume methods that train on the measurement)."""

    name: str
    kind: str
    run: Callable
    help: str
    params: tuple[Param, ...] = ()
    prior: str = "whole"
    patch_only: bool = False
    gradient: bool = False
    schedule: str = "karras"
    fast_run: Callable | None = None
    fast_schedule: str | None = None
    fast_defaults: dict = field(default_factory=dict)
    variants: dict = field(default_factory=dict)
    nonlinear: bool = False
    network: str | None = None
    tasks: tuple[str, ...] | None = None
    geometry: bool = False

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        known = ", ".join(p.name for p in self.params) or "none"
        raise ValueError(f"method {self.name!r} has no parameter {name!r} (parameters: {known})")

    def uses_learned_denoiser(self, params: dict) -> bool:
        """Whether resolved ``params`` ask for the prior's denoiser (a denoiser parameter set to 'learned')."""
        return any(p.denoiser and params[p.name] == "learned" for p in self.params)

    def resolve(self, task: str, overrides: dict | None = None, fast: bool = False, noise_std: float = 0.0) -> dict:
        """The parameters this method runs with on ``task``: defaults for the task (raised to ``per_noise *
        noise_std`` where a parameter has that rule; ``noise_std`` is the measurement's Gaussian noise std),
        fast mode's and the variants' defaults, then the validated ``overrides``. ValueError (one line) for an
        unknown parameter, a bad value, or one that does not apply in this mode."""
        if fast and self.kind != "sampler":
            raise ValueError(f"--fast is for the learned-prior methods; {self.name} is a classical method")
        if self.tasks is not None and task not in self.tasks:
            raise ValueError(f"{self.name} applies to --task {' / '.join(self.tasks)} only, not {task}")
        parsed = {}
        for key, raw in (overrides or {}).items():
            p = self.param(key)
            if p.applies == ("slow" if fast else "fast"):
                mode = "with --fast" if fast else "without --fast"
                raise ValueError(f"{self.name} parameter {key} does not apply {mode}")
            parsed[key] = p.parse(self.name, raw)
        values = {p.name: p.default_for(task) for p in self.params}
        for p in self.params:
            if p.per_noise and task in p.per_noise and noise_std > 0:
                values[p.name] = max(values[p.name], p.per_noise[task] * noise_std)
        if fast:
            values.update({k: for_task(v, task) for k, v in self.fast_defaults.items()})
        for selector, table in self.variants.items():
            values.update(table.get(parsed.get(selector, values[selector]), {}))
        values.update(parsed)
        for key in parsed:
            need = self.param(key).requires
            if need is not None and values[need[0]] != need[1]:
                raise ValueError(f"{self.name} parameter {key} applies with {need[0]}={need[1]} only, not "
                                 f"{need[0]}={values[need[0]]}")
        return values


REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` to the registry (replacing one of the same name) and return it."""
    if method.kind not in KINDS:
        raise ValueError(f"method kind must be one of {KINDS}, got {method.kind!r}")
    REGISTRY[method.name] = method
    return method


def get_method(name: str) -> Method:
    """The registered method ``name``; ValueError listing the choices otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(REGISTRY)}") from None


def names(kind: str | None = None) -> tuple[str, ...]:
    return tuple(n for n, m in REGISTRY.items() if kind is None or m.kind == kind)


# ---------------------------------------------------------------------------------------------- classical

def _per_task(base, **tasks) -> dict:
    return {"*": base, **{k.replace("_", "-"): v for k, v in tasks.items()}}


def _n_iter(default: int, what: str = "iterations") -> Param:
    return Param("n_iter", int, default, what, low=1, high=100_000)


_LAM = "regularisation weight (image-intensity units: the data term is normalised by ||A||^2)"
_SIGMA = "denoiser strength: noise std on the unit image scale"
_DENOISER = Param("denoiser", str, "wavelet", "the denoiser: classical wavelet / TV, or the prior's (learned)",
                  choices=("wavelet", "tv", "learned"), denoiser=True)
# PnP-ADMM / RED with the learned denoiser: strength and iterations (= NFE) chosen on training slices
# (benchmarks/psnr_vs_nfe.py on A0001_B_025: 34.3 / 38.4 / 38.8 dB at 20 / 40 / 80 NFE; sigma 0.03 best of
# {0.01, 0.03, 0.05, 0.1}, 0.05 as good), whatever the task's classical defaults
_LEARNED_DENOISER = {"denoiser": {"learned": {"sigma": 0.03, "n_iter": 50}}}


def _baseline(fidelity, x0, **_):
    return x0


def _cgls(fidelity, x0, *, n_iter: int, progress: bool = False):
    op, y = fidelity.quadratic()
    return cgls(op, y, n_iter=n_iter, progress=progress)


def _fista_tv(fidelity, x0, *, lam: float, n_iter: int, progress: bool = False):
    return fista_tv(fidelity, lam=lam, n_iter=n_iter, x0=x0, progress=progress)


def _admm_tv(fidelity, x0, *, lam: float, rho: float, n_iter: int, progress: bool = False):
    return admm_tv(fidelity, lam=lam, rho=rho, n_iter=n_iter, x0=x0, progress=progress)


def _hio(fidelity, x0, *, n_iter: int, beta: float, restarts: int, er_iter: int, shrinkwrap: str,
         progress: bool = False):
    return hio(fidelity.op, fidelity.y, n_iter=n_iter, beta=beta, restarts=restarts, er_iter=er_iter,
               shrinkwrap=shrinkwrap == "on", progress=progress)


def _l1_wavelet(fidelity, x0, *, lam: float, n_iter: int, progress: bool = False):
    return l1_wavelet(fidelity, lam=lam, n_iter=n_iter, x0=x0, progress=progress)


def _pnp_admm(fidelity, x0, *, denoiser, sigma: float, rho: float, n_iter: int, progress: bool = False):
    return pnp_admm(fidelity, denoiser, sigma=sigma, rho=rho, n_iter=n_iter, x0=x0, progress=progress)


def _red(fidelity, x0, *, denoiser, sigma: float, lam: float, n_iter: int, progress: bool = False):
    return red(fidelity, denoiser, sigma=sigma, lam=lam, n_iter=n_iter, x0=x0, progress=progress)


def _ldct_translate(fidelity, x0, *, translator, guard: float, progress: bool = False):
    return denoise_image(translator, x0, guard)


register(Method("fbp", "classical", _baseline, "the task's baseline (FBP, zero-filled, ...)"))
register(Method("adjoint", "classical", _baseline, "the task's baseline (same as fbp)"))
register(Method("hio", "classical", _hio, "phase retrieval: Fienup's hybrid input-output with the support box and "
                "x >= 0, random restarts, error-reduction polishing",
                (Param("n_iter", int, 1000, "HIO iterations per restart", low=1, high=100_000),
                 Param("beta", float, 0.9, "HIO feedback", low=0, high=2, low_open=True),
                 Param("restarts", int, 4, "random starts (the best data fit is kept)", low=1, high=1000),
                 Param("er_iter", int, 50, "error-reduction iterations after HIO", low=0, high=100_000),
                 Param("shrinkwrap", str, "on", "shrink-wrap support updates (threshold 4 %, blur 3 -> 1 px)",
                       choices=("on", "off"))),
                nonlinear=True))
register(Method("cgls", "classical", _cgls, "least squares by conjugate gradients (early stopping regularises)",
                (_n_iter(30),)))
register(Method("fista-tv", "classical", _fista_tv, "0.5||Ax-y||^2/L + lam TV(x), x >= 0, FISTA with an inner TV prox",
                (Param("lam", float, _per_task(1e-3, ct_parallel=3e-5, ct_fan=1e-4, ct_lowdose=3e-5, mri=1e-4,
                                               deblur=1e-3, sr=3e-3, inpaint=3e-3), _LAM, low=0),
                 _n_iter(100))))
# mri: lam >= 0.3 x noise std (white Gaussian noise per k-space entry) for admm-tv and l1-wavelet, chosen on
# noisy simulated x4 MRI of three TRAINING slices of data/mri_brain (sigma 0.03 and 0.07: best c between 0.2 and
# 0.4 for both methods at both levels; benchmarks/tune_noise_lam.py).
LAM_PER_NOISE = 0.3
register(Method("admm-tv", "classical", _admm_tv, "the same objective by ADMM (z = grad x)",
                (Param("lam", float, _per_task(1e-3, ct_parallel=1e-4, ct_fan=1e-4, ct_lowdose=3e-5, mri=3e-4,
                                               deblur=3e-4, sr=3e-3, inpaint=3e-3), _LAM, low=0,
                       per_noise={"mri": LAM_PER_NOISE}),
                 Param("rho", float, 0.05, "ADMM penalty on z = grad x", low=0, low_open=True),
                 _n_iter(50))))
register(Method("l1-wavelet", "classical", _l1_wavelet,
                "0.5||Ax-y||^2/L + lam ||Wx||_1 (db4, 3 levels, random cycle spin), FISTA",
                (Param("lam", float, _per_task(1e-3, ct_parallel=3e-5, ct_fan=1e-4, ct_lowdose=3e-5, mri=3e-4,
                                               deblur=3e-4, sr=3e-3, inpaint=3e-3), _LAM, low=0,
                       per_noise={"mri": LAM_PER_NOISE}),
                 _n_iter(100))))
register(Method("pnp-admm", "classical", _pnp_admm, "plug-and-play ADMM with a denoiser",
                (Param("sigma", float, _per_task(0.03, ct_parallel=0.01, ct_fan=0.01, ct_lowdose=0.01, mri=0.03,
                                                 deblur=0.01, sr=0.01, inpaint=0.03), _SIGMA, low=0,
                       low_open=True, high=1),
                 Param("rho", float, _per_task(1.0, ct_parallel=0.003, ct_fan=0.003, ct_lowdose=0.003, mri=0.03,
                                               deblur=0.03, sr=0.3, inpaint=0.03),
                       "coupling weight of ||x - (z - u)||^2 against the data term", low=0, low_open=True),
                 _n_iter(30), _DENOISER), variants=_LEARNED_DENOISER))
register(Method("red", "classical", _red, "regularisation by denoising, accelerated gradient",
                (Param("sigma", float, _per_task(0.03, ct_parallel=0.01, ct_fan=0.01, ct_lowdose=0.003, mri=0.003,
                                                 deblur=0.003, sr=0.003, inpaint=0.01), _SIGMA, low=0,
                       low_open=True, high=1),
                 Param("lam", float, _per_task(0.5, ct_parallel=0.01, ct_fan=0.01, ct_lowdose=0.01, mri=1.0,
                                               deblur=0.1, sr=1.0, inpaint=1.0), "weight of the RED prior term",
                       low=0),
                 _n_iter(50), _DENOISER), variants=_LEARNED_DENOISER))


def _smore(fidelity, x0, *, steps: int, patch: int, batch: int, depth: int, width: int, lr: float,
           z_weight: float = 1.0, seed: int = 0, device: str = "cpu", progress: bool = False):
    volume = fidelity.base  # the zsr fidelity of the whole volume (wavepatch.volume_tasks.stack_fidelity)
    factor, thick = volume.op.factor, volume.y[0, 0]
    x, report = zsr_selfsup(thick, factor, z_weight, start=x0[:, 0], steps=steps, patch=patch, batch=batch,
                            depth=depth, width=width, lr=lr, seed=seed, device=device,
                            progress=progress)  # x0: the cubic-z baseline
    return _onto_data(fidelity, x, x0), report


def _onto_data(fidelity, volume, x0):
    """A self-supervised method's volume (S, H, W) as the solver's slice stack (S, 1, H, W) of x0's dtype, projected
    onto the measurement when it is noiseless."""
    x = volume[:, None].to(x0.dtype)
    return fidelity.project(x) if fidelity.noiseless else x


def _training(batch: int, batch_help: str, depth: int, width: int, width_help: str) -> tuple[Param, ...]:
    """The parameters every scan-trained network shares: steps, batch, depth, width (defaults given), lr."""
    return (Param("steps", int, 1000, "training steps (Adam, cosine decay)", low=1, high=1_000_000),
            Param("batch", int, batch, batch_help, low=1, high=4096),
            Param("depth", int, depth, "3 x 3 convolution layers", low=2, high=64),
            Param("width", int, width, width_help, low=1, high=1024),
            Param("lr", float, 1e-3, "Adam learning rate", low=0, low_open=True, high=1))


# SMORE-type self-supervised z-SR (Zhao et al. 2021): trained on the thick slices of the volume being
# reconstructed, in-plane; defaults chosen on the CT training patient's two series (benchmarks/tune_selfsup.py,
# benchmarks/results/tune_smore/: width 64 over 32 +0.24 dB, 2000 steps +0.17, no spacing match -0.09, seed
# spread 0.06; docs/results.md section 14.3)
register(Method("smore", "classical", _smore, "z super-resolution: a CNN trained on this volume's own thick slices "
                "(in-plane, degraded as z was) and applied through the plane, then projected onto the data (after "
                "SMORE; no prior, no training data)",
                (*_training(16, "patches per step", 8, 64,
                            "channels per layer (32: 4.6x faster, -0.24 dB on the training patient)"),
                 Param("patch", int, 48, "training patch side (px at the slice spacing)", low=8, high=4096)),
                tasks=("zsr",), geometry=True))


def _zs_ssl(fidelity, x0, *, steps: int, batch: int, unrolls: int, depth: int, width: int, lr: float, rho: float,
            validation: float, start: str, splits: int, z_weight: float = 1.0, seed: int = 0, device: str = "cpu",
            progress: bool = False):
    volume = fidelity.base  # the mri3d fidelity of the whole volume (wavepatch.volume_tasks.stack_fidelity)
    x, report = mri3d_selfsup(volume.y, volume.op.mask[:, :, 0], steps=steps, batch=batch, unrolls=unrolls,
                              depth=depth, width=width, lr=lr, rho=rho, validation=validation, seed=seed,
                              device=device, start=_tv_start(volume, z_weight) if start == "admm-tv" else None,
                              splits=splits, progress=progress)
    return _onto_data(fidelity, x, x0), report


def _tv_start(volume, z_weight: float) -> Callable:
    """mask (S, H) -> the 3-D ADMM-TV volume (S, H, W) from the points of ``volume`` (the mri3d fidelity) on that
    phase-encode mask alone, with admm-tv's defaults for the measurement's noise (the ``admm-tv`` volume method on
    a subset of the data)."""
    _, s, h, w = volume.op.image_shape
    tv = get_method("admm-tv").resolve(PARAMETER_TASK["mri3d"], noise_std=volume.std)  # as volume.admm_tv_3d

    def start(mask):
        op = Cartesian3DMRI(mask, (1, s, h, w))
        part = stack_fidelity(GaussianFidelity(op, volume.y * op.mask, volume.std), s)
        return admm_tv(part, x0=part.op.A_dagger(part.y), z_weight=z_weight, **tv)[:, 0]

    return start


# ZS-SSL-type scan-specific self-supervised 3-D MRI (Yaman et al. 2022): an unrolled network trained on the (z, y)
# planes of the volume being reconstructed, its sampled k-space split into input / loss / early-stopping parts;
# defaults chosen on the CT training patient's two series (benchmarks/tune_selfsup.py --task mri3d,
# benchmarks/results/tune_zsssl/: 1000 steps over 400 +1.06 dB, 10 unrolls +0.74, rho 0.2 +0.16, seed spread 0.34;
# both together +1.58 but 15 min per volume, over the rule's 10; start=admm-tv over zero-filled +0.50 (mean of two
# seeds, spread 0.50), 10.6 min per volume, benchmarks/results/tune_zsssl/rule_start.md; docs/results.md section 14.4)
register(Method("zs-ssl", "classical", _zs_ssl, "3-D MRI: 3-D ADMM-TV refined by an unrolled network (CNN + "
                "exact real data consistency) trained on this scan's own k-space, split into input and loss "
                "points, with held-out points to stop (after ZS-SSL; no prior, no training data)",
                (*_training(4, "(z, y) planes per step", 6, 32, "channels per layer"),
                 Param("unrolls", int, 5, "CNN / data-consistency alternations (shared weights; 10: +0.5 dB and "
                       "2x the time on the training patient)", low=1, high=64),
                 Param("rho", float, 0.4, "share of the training points moved to the loss each step", low=0,
                       low_open=True, high=0.9),
                 Param("validation", float, 0.2, "share of the sampled points held out to pick the weights",
                       low=0, low_open=True, high=0.5),
                 Param("start", str, "admm-tv", "what the network refines: 3-D ADMM-TV from the same points (a fixed "
                       "bank of splits, one ADMM-TV each), or the zero-filled image (random splits every step; "
                       "-0.5 dB on the training patient)", choices=("zero-filled", "admm-tv")),
                 Param("splits", int, 8, "with start=admm-tv: fixed input / loss splits, one ADMM-TV each",
                       low=1, high=256, requires=("start", "admm-tv"))),
                tasks=("mri3d",), geometry=True))

# Jung et al. 2022: the FBP image translated by a network trained without pairs (patch-wise metric learning);
# --prior takes another translator (wavepatch train --prior ldct-metric|ldct-gan|ldct-supervised). guard 1 px was
# chosen on 10 training slices (benchmarks/ldct_shift.py --guard: bone bias +36 / +74 HU -> -2 / +21, FBP's -8 /
# +19; PSNR -0.04 / -0.36 dB at I0 = 1e4 / 2.5e3; docs/results.md section 18.1)
register(Method("ldct-metric", "classical", _ldct_translate, "low-dose CT: the FBP image denoised by the "
                "unsupervised patch-wise metric-learning translator (bundled models/ldct_metric256; --prior "
                "another translator)",
                (Param("guard", float, 1.0, "CT-number guard (px): the translator's correction c = G(x) - x is "
                       "applied without its Gaussian low-pass of this std, x + c - gauss(c); 0: the paper's output",
                       low=0, high=16),),
                network="ldct_metric256", tasks=("ct-lowdose",)))

# ---------------------------------------------------------------------------------------------- samplers
# zeta is per-pixel normalised (0.01 corresponds to PaDIS' official 0.3); 0.1 was chosen for DPS (100 NFE:
# 25.67 dB vs 16.65 at 0.3) and PaDIS (20 x 5 NFE: 23.13 dB) on 20-view CT of training slice A0001_B_025 (0.01
# gave ~17 dB on the test slices), and MCG takes DPS' value (docs/results.md section 6). PaDIS' eta and cg act
# only in fast mode; they were chosen on training slices A0001_B_025 / _045.


def _steps(default: int | dict) -> Param:
    return Param("steps", int, default, "noise levels (--steps)", low=1, high=100_000)


_SIGMA_START = Param("sigma_start", float, 0.1, "first noise level of a warm start (0: no prior step, the warm "
                     "start itself; a candidate of --auto)", low=0, applies="fast")
_SCHEDULE = (Param("sigma_max", float, 10.0, "first noise level of a cold start", low=0, low_open=True,
                   applies="slow"),
             Param("sigma_min", float, 0.003, "last noise level", low=0, low_open=True),
             _SIGMA_START)
_ZETA = Param("zeta", float, 0.1, "data step size, per pixel (divided by the fidelity's scale)", low=0)
_N_INNER = Param("n_inner", int, 3, "Langevin iterations per noise level", low=1, high=10_000)
_CG = Param("cg", int, 10, "CGLS iterations of each data-consistency step", low=1, high=10_000)
# PiGDM's c (pigdm, and padis / mcg with guidance=pinv): chosen on low-dose CT of training slice A0001_B_025
# (c 0.1 / 0.25 / 0.5: 35.68 / 35.78 / 35.82 dB); it does not act on noiseless data (docs/results.md section 6.3)
_PIGDM_C = Param("c", float, 0.25, "PiGDM's prior std per pixel (unit image) in the Gaussian model of x0 | x_sigma; "
                 "weighs noisy data only", low=0, low_open=True)
_GUIDANCE = Param("guidance", str, "pinv", "data step: the paper's normalised gradient through the denoiser (as dps), "
                  "or pinv (the PiGDM estimate, as --method pigdm)", choices=("gradient", "pinv"))
# DPS' step size: on training slices A0001_B_025 / A0001_L_036 (100 NFE, ct_whole256) the line search beat the
# paper's normalised step on all five bench settings tried, 20-view CT 32.60 / 28.86 against 25.68 / 23.88 dB,
# deblurring, heavy deblurring, x4 SR and low-dose CT (benchmarks/results/tune_dps, docs/results.md section 6.7);
# on phase retrieval (training slices A0001_B_025 / _045, 128^2) from noise 37.12 / 37.03 against 25.80 / 25.69 dB
# and with --fast (patch prior, from HIO) 28.18 / 26.23 against 23.97 / 23.76, where sigma_start 0.2 stayed the
# best with it (0.1 / 0.3 / 0.5: means 25.13 / 26.73 / 26.56 against 27.21; section 16)
_DPS_STEP = Param("step", str, "linesearch",
                  "DPS' data step size: linesearch (minimises the misfit along DPS' gradient, damped by the "
                  "estimate's uncertainty on noisy data) or normalized (the paper's zeta / ||A x0 - y||)",
                  choices=("normalized", "linesearch"))
_LIKELIHOOD = Param("likelihood", str, "pinv", "likelihood of a noisy iterate: N(y; A x, V + sigma^2 A A^T) (pinv, "
                    "a CG solve per step) or V + sigma^2 ||A||^2 I (isotropic, Jalal et al.)",
                    choices=("pinv", "isotropic"))

# the PaDIS loop from noise: 40 levels x 5 = 200 NFE (the budget). On three training slices (20-view CT,
# 256^2) 200 NFE gave 34.62 dB mean against 33.05 at 20 x 5; how the 200 are allotted hardly matters (40 x 5 /
# 67 x 3 / 100 x 2 / 200 x 1: 34.62 / 34.59 / 34.60 / 34.58); sigma_max 2 and eps 2 gained 0.13 / 0.09 dB, under
# the 0.2 dB fixed in advance for a change (benchmarks/tune_padis_loop.py; docs/results.md section 6.5)
register(Method("padis", "sampler", P.padis, "PaDIS: random-shift patch prior, Langevin with a data step through "
                "the denoiser (--fast: one denoiser call + CG data consistency per level, DDS)",
                (_steps(40), Param("n_inner", int, 5, "Langevin iterations per level", low=1, high=10_000,
                                   applies="slow"),
                 Param("zeta", float, 0.1, _ZETA.help, low=0, applies="slow"),
                 Param("eps", float, 1.5, "Langevin step factor: alpha = eps sigma^2 (the talk: 0.5)", low=0,
                       low_open=True, applies="slow"),
                 replace(_GUIDANCE, applies="slow"),
                 replace(_PIGDM_C, applies="slow"),
                 Param("eta", float, 1.0, "fresh-noise fraction of each re-noising (fast mode)", low=0, high=1,
                       applies="fast"),
                 Param("cg", int, 10, _CG.help + " (fast mode, guidance=pinv)", low=1, high=10_000), *_SCHEDULE),
                prior="patch", patch_only=True, gradient=True, schedule="geometric", fast_run=P.ddnm,
                fast_schedule="karras", fast_defaults={"steps": 50}))
# phase retrieval: the DPS paper's 1000 steps; on training slices A0001_B_025 / _045 (128^2, ct_whole128) DPS from
# noise at 1000 NFE gave 25.80 / 25.69 dB against HIO's 23.57 / 23.42 (docs/results.md section 16)
# --fast on phase retrieval (from the HIO estimate): with ct_patch128 on the same two slices, sigma_start 0.1 / 0.2 /
# 0.3 / 0.5 at 200 NFE gave 23.50 / 24.53 / 24.09 / 23.66 dB (mean; HIO 23.50), and 0.2 at 1000 NFE 23.92 / 23.91;
# so --fast there starts at 0.2 with 200 steps (section 16)
register(Method("dps", "sampler", P.dps, "diffusion posterior sampling (gradient through the denoiser)",
                (_steps(_per_task(100, phase_retrieval=1000)), _DPS_STEP,
                 replace(_ZETA, requires=("step", "normalized"), help=_ZETA.help + " (step=normalized)"),
                 replace(_PIGDM_C, requires=("step", "linesearch"), help=_PIGDM_C.help + " (step=linesearch)"),
                 *(replace(p, default=_per_task(0.1, phase_retrieval=0.2)) if p is _SIGMA_START else p
                   for p in _SCHEDULE)),
                gradient=True, nonlinear=True, fast_defaults={"steps": _per_task(100, phase_retrieval=200)}))
register(Method("pigdm", "sampler", P.pigdm, "pseudoinverse-guided diffusion: the Tweedie estimate corrected by "
                "J^T A^+(y - A x0) (gradient through the denoiser; linear tasks)",
                (_steps(100), _PIGDM_C, _CG, *_SCHEDULE), gradient=True))
register(Method("mcg", "sampler", P.mcg, "manifold-constrained gradient: a guided step + projection on the noised "
                "data (linear tasks)",
                (_steps(100), replace(_ZETA, help=_ZETA.help + "; guidance=gradient only"),
                 _GUIDANCE, _PIGDM_C, _CG, *_SCHEDULE), gradient=True))
register(Method("langevin", "sampler", P.langevin, "annealed Langevin on the posterior (noise-inflated likelihood)",
                (_steps(50), _N_INNER, Param("eps", float, 1.5, "step factor: a = eps sigma^2 / 2", low=0,
                                             low_open=True), _LIKELIHOOD, _CG, *_SCHEDULE), schedule="geometric"))
register(Method("pc", "sampler", P.predictor_corrector, "predictor-corrector (ancestral predictor, Langevin "
                "corrector)", (_steps(100), Param("snr", float, 0.5, "corrector signal-to-noise ratio", low=0,
                                                  low_open=True),
                               Param("n_corrector", int, 1, "corrector steps per level", low=0, high=100),
                               _LIKELIHOOD, _CG, *_SCHEDULE)))
register(Method("ddnm", "sampler", P.ddnm, "DDNM: null-space data consistency on the Tweedie estimate",
                (_steps(100), Param("eta", float, 0.85, "fresh-noise fraction of each re-noising", low=0, high=1),
                 _CG, *_SCHEDULE)))
# Wu et al.: Langevin + SART data step with momentum + wavelet-TV coupling; eps, omega, beta, lam, tau picked on
# training slices by benchmarks/tune_wavelet_langevin.py (docs/results.md section 9, two sweeps: 25.1 -> 32.6 ->
# 33.5 dB mean over low-dose CT, 20-view CT and MRI x4); data=map (a MAP data step under the noise model) against
# sart on low-dose CT training slices with a prior trained on low-dose scans: 35.15 / 33.28 against 36.05 / 32.87 dB
# at I0 1e4 / 2.5e3 (section 18.2), so sart stays
register(Method("wavelet-langevin", "sampler", wavelet_regularized_langevin,
                "annealed Langevin + SART data step with momentum + wavelet-TV coupling (Wu et al.)",
                (_steps(30), _N_INNER, Param("eps", float, 1.5, "Langevin step factor", low=0, low_open=True),
                 Param("omega", float, 1.9, "SART relaxation", low=0, low_open=True, high=2),
                 Param("beta", float, 0.8, "momentum of the data step", low=0, high=0.999),
                 Param("lam", float, 0.5, "wavelet-TV coupling weight", low=0),
                 Param("tau", float, 0.005, "wavelet soft threshold (unit image)", low=0),
                 Param("data", str, "sart", "data step: sart (the paper's), map (the MAP step between the iterate "
                       "and the data under its noise model), auto (sart for noiseless, map for noisy data)",
                       choices=("sart", "map", "auto")), _CG, *_SCHEDULE),
                schedule="geometric"))


# ---------------------------------------------------------------------------------------------- docs

DOCS_INTRO = """Generated from the registry in `src/wavepatch/methods.py` by
`wavepatch methods --markdown > docs/methods.md` (a test checks it is current). Set a parameter with
`--param KEY=VALUE` (repeatable; `--steps T` sets `steps`). A value of the wrong type, outside its range, a
parameter the method does not have, or one that does not apply in the chosen mode (`--fast` or not) is refused
in one line. Defaults of the form `*: a, task: b` are per task (`*`: every other task); with
`denoiser=learned`, PnP-ADMM and RED default to sigma 0.03 and 50 iterations.
"""


def methods_doc() -> str:
    """docs/methods.md: heading, how parameters are set, and :func:`methods_table`."""
    return "# Methods and parameters\n\n" + DOCS_INTRO + "\n" + methods_table()


def methods_table() -> str:
    """The Markdown table of every registered method and parameter (docs/methods.md)."""
    def cell(text) -> str:
        return str(text).replace("|", "\\|")

    lines = ["| method | kind | parameter | type | default | valid | meaning |", "|---|---|---|---|---|---|---|"]
    for m in REGISTRY.values():
        lines.append(f"| `{m.name}` | {m.kind} | | | | | {cell(m.help)} |")
        for p in m.params:
            default = p.default_text()
            extra = {"fast": " (--fast only)", "slow": " (not with --fast)"}.get(p.applies, "")
            fast = f"; --fast: {per_task_text(m.fast_defaults[p.name])}" if p.name in m.fast_defaults else ""
            lines.append(f"| | | `{p.name}` | {p.type.__name__} | {cell(default)}{fast} | {cell(p.range_text())} | "
                         f"{cell(p.help)}{extra} |")
    return "\n".join(lines) + "\n"


def method_help(name: str) -> str:
    """One method's parameters as plain text (``wavepatch methods NAME``)."""
    m = get_method(name)
    out = [f"{m.name} ({m.kind}): {m.help}"]
    for p in m.params:
        out.append(f"  {p.name} ({p.type.__name__}; default {p.default_text()}; {p.range_text() or 'any'}): {p.help}")
    return "\n".join(out)
