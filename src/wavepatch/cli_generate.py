"""``wavepatch sample`` with the fast generators: DLG, pyramidal and blur diffusion (options and dispatch).

    wavepatch sample --prior WHOLE_OR_PATCH --sampler dlg --classifier NOISE_LEVEL.safetensors [--chains C]
        [--gibbs G] [--steps FINISH_LEVELS] [--init-levels I] [--sigma-chain S]
    wavepatch sample --prior PYRAMIDAL --sampler pyramidal [--steps TOTAL_LEVELS] [--sigma-restart S]
    wavepatch sample --prior BLUR [--steps T] [--eta E]          (a blur prior's own reverse process)
"""

from __future__ import annotations

import inspect
import math
from functools import lru_cache

import torch

from wavepatch.prior.checkpoint import load_noise_classifier
from wavepatch.resources import prior_path
from wavepatch.sampling.blur import blur_sample
from wavepatch.sampling.dlg import dlg_sample
from wavepatch.sampling.pyramidal import patch_grid_pixels, pyramidal_sample

FAST_SAMPLERS = ("dlg", "pyramidal", "blur")
DEFAULT_STEPS = {"dlg": 4, "pyramidal": 24, "blur": 50}  # finish levels / total levels / reverse steps
# the samplers' own defaults, shown in the help (one place: the sampling functions' signatures)
DLG_DEFAULTS = {k: inspect.signature(dlg_sample).parameters[k].default for k in ("gibbs", "init_levels", "sigma_chain")}
SIGMA_RESTART = inspect.signature(pyramidal_sample).parameters["sigma_restart"].default
# option (attribute name) -> the sampler it belongs to
FAST_OPTIONS = {"classifier": "dlg", "chains": "dlg", "gibbs": "dlg", "init_levels": "dlg", "sigma_chain": "dlg",
                "sigma_restart": "pyramidal", "eta": "blur"}
BUNDLED_CLASSIFIER, BUNDLED_CLASSIFIER_WINDOW = "ct_noise128", (-1000.0, 1000.0)


def add_fast_sampler_args(s) -> None:
    g = s.add_argument_group("fast generators (--sampler dlg / pyramidal; blur priors)")
    g.add_argument("--classifier", default=None,
                   help="dlg: noise-level classifier checkpoint (wavepatch train --prior noise-level)")
    g.add_argument("--chains", type=int, default=None,
                   help="dlg: parallel Markov chains per batch (default: a quarter of the batch); each chain "
                        "gives batch / chains outputs, so its start-up cost is shared")
    g.add_argument("--gibbs", type=int, default=None,
                   help=f"dlg: Langevin-Gibbs sweeps per output (default {DLG_DEFAULTS['gibbs']})")
    g.add_argument("--init-levels", type=int, default=None,
                   help=f"dlg: Heun levels from sigma-max to the chain's level (default {DLG_DEFAULTS['init_levels']})")
    g.add_argument("--sigma-chain", type=float, default=None,
                   help=f"dlg: largest noise level of the chain (default {DLG_DEFAULTS['sigma_chain']})")
    g.add_argument("--sigma-restart", type=float, default=None,
                   help=f"pyramidal: noise level each finer level restarts from (default {SIGMA_RESTART})")
    g.add_argument("--eta", type=float, default=None,
                   help="blur priors: 0 deterministic (default), 1 ancestral reverse steps")


def check_fast_options(args, kind: str, cfg) -> str:
    """The sampler to use for a prior of ``kind`` ('whole', 'patch', 'wavelet', 'blur') with config ``cfg``;
    ValueError naming an option that does not apply. Fills ``args.steps`` with the sampler's default when it was
    not given, and ``args.classifier`` with the bundled CT classifier for DLG on a CT prior of its window."""
    sampler = args.sampler or ("blur" if kind == "blur" else "heun")
    pyramid = getattr(cfg, "pyramid", None)
    if sampler == "dlg" and args.classifier is None and cfg.window == BUNDLED_CLASSIFIER_WINDOW \
            and getattr(cfg, "is_ct", False):
        args.classifier = str(prior_path(BUNDLED_CLASSIFIER))
    if kind == "blur" and sampler != "blur":
        raise ValueError(f"a blur-diffusion prior has its own reverse process; --sampler {sampler} does not apply")
    if kind != "blur" and sampler == "blur":
        raise ValueError("--sampler blur needs a blur-diffusion prior (wavepatch train --prior blur)")
    if sampler in ("dlg", "pyramidal") and kind not in ("whole", "patch"):
        raise ValueError(f"--sampler {sampler} needs a whole-image or patch prior, not a {kind} prior")
    if sampler == "pyramidal" and not pyramid:
        raise ValueError("--sampler pyramidal needs a prior trained on several resolutions "
                         "(wavepatch train --prior pyramidal)")
    if sampler == "dlg" and args.classifier is None:
        raise ValueError("--sampler dlg needs --classifier (a noise-level classifier: wavepatch train --prior "
                         "noise-level; the bundled one is for CT priors of window -1000 1000)")
    for name, owner in FAST_OPTIONS.items():
        value, flag = getattr(args, name), _flag(name)
        if value is not None and owner != sampler:
            raise ValueError(f"{flag} applies to --sampler {owner} only (this run samples with {sampler})")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{flag} must be a finite number, got {value}")
    for flag, value, lo in (("--chains", args.chains, 1), ("--gibbs", args.gibbs, 1),
                            ("--init-levels", args.init_levels, 2)):
        if value is not None and not lo <= value <= 10_000:
            raise ValueError(f"{flag} must be in [{lo}, 10000], got {value}")
    if args.chains is not None and args.chains > min(args.n, args.batch):
        raise ValueError(f"--chains {args.chains} exceeds --n {args.n} or --batch {args.batch} (chains run "
                         "within a batch)")
    if args.eta is not None and not 0 <= args.eta <= 1:
        raise ValueError(f"--eta must be in [0, 1], got {args.eta}")
    for flag, value in (("--sigma-chain", args.sigma_chain), ("--sigma-restart", args.sigma_restart)):
        if value is not None and not args.sigma_min < value < args.sigma_max:
            raise ValueError(f"{flag} must lie between --sigma-min and --sigma-max, got {value}")
    if args.steps is None:
        args.steps = DEFAULT_STEPS.get(sampler, 32)
    return sampler


def draw_fast(args, sampler: str, model, cfg, denoise, b: int, size: int, gen: torch.Generator,
              device) -> tuple[torch.Tensor, float, dict]:
    """One batch of ``b`` images (b, 1, size, size) from a fast generator: (images, NFE per image, info)."""
    if sampler == "blur":
        x, nfe = blur_sample(model, b, steps=args.steps, eta=args.eta or 0.0, size=size, sigma_min=args.sigma_min,
                             sigma_max=args.sigma_max, generator=gen, device=device, progress=not args.no_progress,
                             precision=args.precision)
        return x, nfe, {"eta": args.eta or 0.0}
    if sampler == "pyramidal":
        x, info = pyramidal_sample(denoise, b, size, cfg.pyramid, args.steps,
                                   sigma_restart=args.sigma_restart or SIGMA_RESTART, sigma_min=args.sigma_min,
                                   sigma_max=args.sigma_max, generator=gen, device=device,
                                   progress=not args.no_progress,
                                   pixels=patch_grid_pixels(args.patch_size or cfg.patch_size))
        return x, info["nfe"], info
    classifier = _classifier(args.classifier, cfg, device)
    given = {k: getattr(args, k) for k in DLG_DEFAULTS if getattr(args, k) is not None}
    x, info = dlg_sample(denoise, lambda v: classifier.estimate(v, "mean"), b, (1, size, size),
                         chains=min(args.chains or max(1, b // 4), b), finish_levels=args.steps,
                         sigma_min=args.sigma_min, sigma_max=args.sigma_max, generator=gen, device=device,
                         progress=not args.no_progress, **given)
    return x, info["nfe_per_image"], info


@lru_cache(maxsize=1)
def _load_classifier(path: str, device: str):
    return load_noise_classifier(path, device)  # once per run, not once per batch


def _classifier(path, cfg, device):
    """The noise-level classifier at ``path``; ValueError if its data units differ from the prior's (another
    window or modality)."""
    model, ncfg = _load_classifier(str(path), str(device))
    if ncfg.window != cfg.window or (ncfg.modality and cfg.modality and ncfg.modality != cfg.modality):
        raise ValueError(f"{path} was trained on other data units (window {ncfg.window}, modality "
                         f"{ncfg.modality}) than the prior (window {cfg.window}, modality {cfg.modality})")
    return model


def refuse_fast_options(args, what: str) -> None:
    """ValueError naming the first fast-generator option given to a run they do not apply to (``what``)."""
    for name in FAST_OPTIONS:
        if getattr(args, name) is not None:
            raise ValueError(f"{_flag(name)} does not apply to {what}")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")
