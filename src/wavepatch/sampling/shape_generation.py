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


def generate_tsdf(model: ShapePrior, config: ShapePriorConfig, n: int, steps: int = 32, sampler: str = "heun",
                  batch: int = 16, seed: int = 0, detail: bool = True, device: str | torch.device = "cpu",
                  progress: bool = True) -> tuple[Tensor, int]:
    """(TSDFs (n, G, G, G) float32 in voxels, clipped to +-truncation; network evaluations per shape).

    steps: Karras noise levels of the sampler (Heun: 2 * steps - 1 generator evaluations, plus 1 of the detail
    network); batch: shapes per network call; seed: the draw (batch k uses seed + k, so results do not depend
    on how many batches run); detail=False keeps the detail bands at zero (wavelet space only)."""
    if n < 1 or batch < 1:
        raise ValueError(f"need n >= 1 and batch >= 1, got n={n}, batch={batch}")
    if not detail and config.code.space != "wavelet":
        raise ValueError("--no-detail applies to wavelet-space shape priors only")
    s = config.code.side
    out, nfe = [], 0
    denoise = model.generator
    bar = tqdm(total=n, desc="generate shapes", disable=not progress)
    with torch.inference_mode():
        for k, start in enumerate(range(0, n, batch)):
            b = min(batch, n - start)
            gen = torch.Generator().manual_seed(seed + k)
            coarse, nfe = sample(denoise, (b, 1, s, s, s), sampler=sampler, steps=steps, generator=gen,
                                 device=device)
            if config.code.space == "wavelet":
                details = model.predict_detail(coarse) if detail else None
                codes = config.denormalise(torch.cat([coarse, details if details is not None else
                                                      coarse.new_zeros(b, config.code.channels - 1, s, s, s)], 1))
                if details is None:  # denormalising would add the bands' means; "no details" means zeros
                    codes[:, 1:] = 0
            else:
                codes = config.denormalise(coarse)
            t = config.code.truncation
            out.append(decode(codes, config.code)[:, 0].float().clamp(-t, t).cpu())
            bar.update(b)
    bar.close()
    return torch.cat(out), nfe + (1 if detail and config.code.space == "wavelet" else 0)
