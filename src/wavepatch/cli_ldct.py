"""``wavepatch train DATA --prior ldct-metric|ldct-gan|ldct-supervised``: the low-dose CT translator.

``cli_prior`` hands these priors over to this module. DATA are normal-dose CT slices (DICOM); the low-dose inputs
are simulated from them (:mod:`wavepatch.ldct_data`), unpaired for ldct-metric / ldct-gan, paired for
ldct-supervised. The result is used by ``wavepatch reconstruct ... --task ct-lowdose --method ldct-metric``.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from wavepatch.io.atomic import check_not_input
from wavepatch.io.dataset import SliceDataset
from wavepatch.ldct_data import TRAIN_DOSES, training_pairs
from wavepatch.prior.ldct import LDCTConfig, Translator, n_parameters
from wavepatch.prior.ldct_train import LDCTTrainConfig, train_ldct

LDCT_PRIORS = {"ldct-metric": "metric", "ldct-gan": "gan", "ldct-supervised": "supervised"}
LDCT_DEFAULTS = LDCTTrainConfig()
# image- and shape-prior options an LDCT run refuses when given (their argparse defaults are None / False)
NOT_FOR_LDCT = {"window": "--window", "modality": "--modality", "levels": "--levels", "wavelet": "--wavelet",
                "detail_crop": "--detail-crop", "patch_size": "--patch-size", "pad": "--pad",
                "channel_mult": "--channel-mult", "blocks": "--blocks", "ema_halflife": "--ema-halflife",
                "noisy_data": "--noisy-data", "noise_level": "--noise-level", "wavelet_denoiser": "--wavelet-denoiser",
                "truncation": "--truncation", "grid": "--grid", "detail_steps": "--detail-steps",
                "detail_batch": "--detail-batch", "detail_lr": "--detail-lr"}
LDCT_ONLY = {"doses": "--doses", "crop": "--crop", "metric_weight": "--metric-weight",
             "realisations": "--realisations", "no_wavelet_split": "--no-wavelet-split"}


def add_ldct_train_args(t, floats) -> None:
    """The train options only the LDCT translator has (default None / False: the LDCTTrainConfig default);
    ``floats``: the argparse type of a comma-separated list of numbers."""
    t.add_argument("--doses", type=floats, default=None,
                   help="ldct-*: I0 photons per bin of the simulated low-dose scans (default "
                        f"{','.join(f'{d:g}' for d in TRAIN_DOSES)})")
    t.add_argument("--crop", type=int, default=None, help=f"ldct-*: training crop side (default {LDCT_DEFAULTS.crop})")
    t.add_argument("--metric-weight", type=float, default=None,
                   help=f"ldct-metric: weight of the patch-wise metric loss (default {LDCT_DEFAULTS.metric_weight})")
    t.add_argument("--realisations", type=int, default=None, help="ldct-*: noise draws per slice and dose (default 2)")
    t.add_argument("--no-wavelet-split", action="store_true",
                   help="ldct-*: translate the whole image, not only its wavelet high band")


def refuse_ldct_options(args) -> None:
    """ValueError if a non-LDCT training run was given an LDCT-only option."""
    given = [flag for name, flag in LDCT_ONLY.items() if getattr(args, name, None) not in (None, False)]
    if given:
        raise ValueError(f"{given[0]} applies to the low-dose CT translator (--prior ldct-metric|ldct-gan|"
                         "ldct-supervised) only")


def cmd_train_ldct(args) -> int:
    given = [flag for name, flag in NOT_FOR_LDCT.items() if getattr(args, name, None) not in (None, False)]
    if given:
        raise ValueError(f"{given[0]} does not apply to the low-dose CT translator (--prior {args.prior})")
    objective = LDCT_PRIORS[args.prior]
    if args.metric_weight is not None and objective != "metric":
        raise ValueError(f"--metric-weight applies to --prior ldct-metric only, not {args.prior}")
    realisations = 2 if args.realisations is None else args.realisations
    doses = args.doses or TRAIN_DOSES
    if realisations < 1 or any(not d > 0 for d in doses):
        raise ValueError("--realisations must be >= 1 and every --doses value positive")
    size = args.size or 256
    if size < 32 or size > 1024:
        raise ValueError(f"--size for the LDCT translator must be in 32..1024, got {size}")
    def given(name: str, default):
        value = getattr(args, name)
        return default if value is None else value

    cfg = LDCTTrainConfig(
        steps=given("steps", LDCT_DEFAULTS.steps), batch=given("batch", LDCT_DEFAULTS.batch),
        crop=given("crop", min(LDCT_DEFAULTS.crop, size)), lr=given("lr", LDCT_DEFAULTS.lr), seed=args.seed,
        metric_weight=given("metric_weight", LDCT_DEFAULTS.metric_weight),
        checkpoint_every=given("checkpoint_every", LDCT_DEFAULTS.checkpoint_every), log_every=args.log_every)
    channels = given("channels", LDCTConfig.channels)
    if not 4 <= channels <= 256 or channels % 4:
        raise ValueError(f"--channels for the LDCT translator must be a multiple of 4 in 4..256, got {channels}")
    model_cfg = LDCTConfig(objective=objective, channels=channels, wavelet_split=not args.no_wavelet_split)
    check_not_input(args.out, args.data)
    data = SliceDataset([str(p) for p in args.data], size, window=model_cfg.window)
    if any(v["kind"] != "ct" for v in data.volumes):
        raise ValueError("the low-dose CT translator trains on CT slices in HU (DICOM series or CT NIfTI)")
    t0 = time.time()
    low, normal, info = training_pairs(data.images, objective, doses, realisations, seed=args.seed)
    print(f"training data: {low.shape[0]} low-dose FBP images, {normal.shape[0]} normal-dose images "
          f"({info['pairing']}), {time.time() - t0:.0f} s; translator {n_parameters(Translator(model_cfg)):,} "
          "parameters")
    threads = torch.get_num_threads()
    path = train_ldct(low, normal, model_cfg, cfg, args.out, resume=args.resume, progress=not args.no_progress,
                      minutes=args.minutes, extra={"data": info, "size": size, "threads": threads,
                                                   "sources": [str(p) for p in args.data]})
    print(f"trained ldct-{objective} translator in {time.time() - t0:.0f} s -> {Path(path)}")
    return 0
