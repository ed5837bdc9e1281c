"""Training data for the low-dose CT translator, made with the project's own physics.

Low-dose images are the ``ct-lowdose`` task's baseline: FBP (Hann) of a 180-view parallel-beam scan with Poisson
photon counts at incident intensity I0 per bin (``tasks.make_task``), simulated from a normal-dose slice.

Normal-dose images are made the same way at ``NORMAL_DOSE`` photons per bin (10x the highest training dose: about
12 HU of noise against 55 HU at I0 = 1e4), as a scanner's normal-dose series of the same protocol and kernel. So
low- and normal-dose images differ in noise only, as the paper's quarter- and full-dose AAPM images do. (Taking the
DICOM slices themselves as normal dose gives the translator another target: a sharper kernel than FBP-Hann of
180 views. Measured on training slices, such targets have more high-frequency energy than the low-dose FBP images
at I0 >= 1e4, and the adversarial loss could not tell the two apart.)

Unpaired (the paper's unsupervised setting): slice positions are split into alternating blocks of ``block``
consecutive positions; low-dose images are made from the even blocks only and the normal-dose images from the odd
blocks, so no low-dose image has its own slice (or the slice next to it inside a block) among the normal-dose
images. Paired (the supervised upper reference): each low-dose image's target is the normal-dose image of the same
slice (independent noise).
"""

from __future__ import annotations

import numpy as np
import torch

from wavepatch.tasks import TaskOptions, make_task

Tensor = torch.Tensor
TRAIN_DOSES = (2.5e3, 5e3, 1e4, 2e4)  # I0 photons per bin: spans the evaluation doses 2.5e3 and 1e4
NORMAL_DOSE = 2e5


def unpaired_split(n_positions: int, block: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(low-dose source positions, normal-dose positions): alternating blocks of ``block`` positions; disjoint."""
    if n_positions < 2 * block:
        raise ValueError(f"unpaired training needs at least {2 * block} slice positions, got {n_positions}")
    pos = np.arange(n_positions)
    even = (pos // block) % 2 == 0
    return pos[even], pos[~even]


def low_dose_images(images: Tensor, doses: tuple[float, ...] = TRAIN_DOSES, realisations: int = 1, seed: int = 0,
                    views: int = 180, pixel_mm: float = 1.4) -> tuple[Tensor, np.ndarray]:
    """Low-dose FBP images of unit-scale slices ``images`` (S, 1, N, N), ``realisations`` noise draws per dose.
    Returns (images (S * len(doses) * realisations, 1, N, N), source slice index of each)."""
    if images.ndim != 4 or images.shape[1] != 1 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"need square slices (S, 1, N, N), got {tuple(images.shape)}")
    out, source = [], []
    for k, dose in enumerate(doses):
        task = make_task("ct-lowdose", images.shape[-1], TaskOptions(dose=float(dose), views=views,
                                                                    pixel_mm=pixel_mm))
        for r in range(realisations):
            gen = torch.Generator().manual_seed(seed * 1_000_003 + 1000 * k + r)
            for i in range(images.shape[0]):
                y = task.simulate(images[i:i + 1].float(), gen)
                out.append(task.baseline(y).float())
                source.append(i)
    return torch.cat(out), np.asarray(source)


def training_pairs(images: Tensor, objective: str, doses: tuple[float, ...] = TRAIN_DOSES, realisations: int = 1,
                   block: int = 4, seed: int = 0, pixel_mm: float = 1.4,
                   normal_dose: float = NORMAL_DOSE) -> tuple[Tensor, Tensor, dict]:
    """(low-dose images, normal-dose images, description) for ``objective`` ('metric'/'gan': unpaired split;
    'supervised': pairs, ``normal[i]`` is the normal-dose image of the slice ``low[i]`` was simulated from).
    ``images``: (S, 1, N, N) clean slices in position order."""
    common = {"doses": list(doses), "normal_dose": normal_dose, "realisations": realisations}
    if objective == "supervised":
        low, src = low_dose_images(images, doses, realisations, seed, pixel_mm=pixel_mm)
        normal, _ = low_dose_images(images, (normal_dose,), 1, seed + 1, pixel_mm=pixel_mm)
        return low, normal[src], {"pairing": "paired", "low_dose_slices": int(images.shape[0]), **common}
    ld_pos, nd_pos = unpaired_split(images.shape[0], block)
    low, _ = low_dose_images(images[ld_pos], doses, realisations, seed, pixel_mm=pixel_mm)
    normal, _ = low_dose_images(images[nd_pos], (normal_dose,), realisations, seed + 1, pixel_mm=pixel_mm)
    return low, normal, {"pairing": f"unpaired, alternating blocks of {block} positions",
                         "low_dose_positions": ld_pos.tolist(), "normal_dose_positions": nd_pos.tolist(), **common}
