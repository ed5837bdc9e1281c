"""Shape generation with a shape prior: sample the coarse code, predict its details, invert to a TSDF.

Wavelet space (Hui et al.): the generator's EDM sampler draws the normalised coarse channel (B, 1, s, s, s);
the detail network predicts the 7 coarsest detail bands from it (or they stay 0: the paper's "without detail
predictor" ablation); both are denormalised and the inverse DWT gives the TSDF. Voxel space: the sampler
draws the normalised TSDF directly.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from wavepatch.prior.shape_wavelet import ShapePrior, ShapePriorConfig, decode
from wavepatch.sampling.unconditional import sample

Tensor = torch.Tensor


def sample_coarse(model: ShapePrior, config: ShapePriorConfig, n: int, steps: int = 32, sampler: str = "heun",
                  batch: int = 16, seed: int = 0, device: str | torch.device = "cpu",
                  progress: bool = True) -> tuple[Tensor, int]:
    """(normalised generator outputs (n, 1, s, s, s), generator evaluations per shape). Batch k of ``batch`` shapes
    uses seed + k, so the draw does not depend on how many batches run."""
    if n < 1 or batch < 1:
        raise ValueError(f"need n >= 1 and batch >= 1, got n={n}, batch={batch}")
    s = config.code.side
    out, nfe = [], 0
    bar = tqdm(total=n, desc="generate shapes", disable=not progress)
    with torch.inference_mode():
        for k, start in enumerate(range(0, n, batch)):
            b = min(batch, n - start)
            coarse, nfe = sample(model.generator, (b, 1, s, s, s), sampler=sampler, steps=steps,
                                 generator=torch.Generator().manual_seed(seed + k), device=device)
            out.append(coarse)
            bar.update(b)
    bar.close()
    return torch.cat(out), nfe


def tsdf_from_coarse(model: ShapePrior, config: ShapePriorConfig, coarse: Tensor, detail: bool = True,
                     batch: int = 16) -> Tensor:
    """TSDFs (n, G, G, G) float32 in voxels, clipped to +-truncation, from normalised generator outputs
    (n, 1, s, s, s): details predicted (``detail``) or zero (wavelet space), or the TSDF itself (voxel space)."""
    if not detail and config.code.space != "wavelet":
        raise ValueError("--no-detail applies to wavelet-space shape priors only")
    t, out = config.code.truncation, []
    with torch.inference_mode():
        for c in coarse.split(batch):
            if config.code.space == "wavelet":
                if detail:
                    codes = config.denormalise(torch.cat([c, model.predict_detail(c)], 1))
                else:  # "no details" means zero bands (denormalising zeros would add the bands' means)
                    codes = torch.cat([config.denormalise(c), c.new_zeros(len(c), config.code.channels - 1,
                                                                          *c.shape[2:])], 1)
            else:
                codes = config.denormalise(c)
            out.append(decode(codes, config.code)[:, 0].float().clamp(-t, t).cpu())
    return torch.cat(out)


def generate_tsdf(model: ShapePrior, config: ShapePriorConfig, n: int, steps: int = 32, sampler: str = "heun",
                  batch: int = 16, seed: int = 0, detail: bool = True, device: str | torch.device = "cpu",
                  progress: bool = True) -> tuple[Tensor, int]:
    """(TSDFs (n, G, G, G) float32 in voxels, clipped to +-truncation; network evaluations per shape).

    steps: Karras noise levels of the sampler (Heun: 2 * steps - 1 generator evaluations, plus 1 of the detail
    network); batch: shapes per network call; seed: the draw (batch k uses seed + k); detail=False keeps the detail
    bands at zero (wavelet space only)."""
    if not detail and config.code.space != "wavelet":
        raise ValueError("--no-detail applies to wavelet-space shape priors only")
    coarse, nfe = sample_coarse(model, config, n, steps, sampler, batch, seed, device, progress)
    tsdf = tsdf_from_coarse(model, config, coarse, detail, batch)
    return tsdf, nfe + (1 if detail and config.code.space == "wavelet" else 0)
