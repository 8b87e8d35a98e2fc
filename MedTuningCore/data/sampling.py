"""Random training patches, drawn on the fly and seeded; `augmentation.py` then augments them.

Patches are D x H x W crops; a share of them is centred on a foreground voxel of a randomly
chosen class, so that small structures are seen (as nnU-Net does). A patch for the "strong"
augmentation comes with the context its spatial transform samples from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import augmentation
from .prepared import PreparedCase


@dataclass
class SamplingOptions:
    patch: tuple[int, int, int] = (32, 126, 126)  # D, H, W
    foreground_fraction: float = 0.33
    flips: bool = True
    intensity: bool = True
    augmentation: str = "paper"  # or "strong"

    def __post_init__(self) -> None:
        if self.augmentation not in augmentation.AUGMENTATIONS:
            raise ValueError(f"augmentation must be one of {augmentation.AUGMENTATIONS}, not {self.augmentation!r}")


def pad_to_at_least(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Zero-pad the last three axes at their end up to `shape` where they are smaller (never
    crops), so that a volume thinner than the patch still yields patches; zero is background
    after normalisation."""
    pads = [(0, 0)] * (array.ndim - 3) + [(0, max(0, s - n)) for s, n in zip(shape, array.shape[-3:])]
    return np.pad(array, pads) if any(p[1] for p in pads) else array


def random_patch(case: PreparedCase, options: SamplingOptions, rng: np.random.Generator,
                 margin: tuple[int, int, int] = (0, 0, 0)) -> tuple[np.ndarray, np.ndarray]:
    """A training patch, foreground-centred with probability `foreground_fraction`, plus
    `margin` voxels of context on every side (zero-padded beyond the volume): the patch is
    chosen first, so context never changes which voxels patches reach."""
    volume = pad_to_at_least(case.volume, options.patch)
    label = pad_to_at_least(case.label, options.patch)
    size = np.array(label.shape)
    patch = np.array(options.patch)
    present = [c for c in np.unique(label) if c != 0]
    if present and rng.random() < options.foreground_fraction:
        cls = rng.choice(present)
        voxels = np.argwhere(label == cls)
        centre = voxels[rng.integers(len(voxels))]
        start = np.clip(centre - patch // 2, 0, size - patch)
    else:
        start = np.array([rng.integers(0, s - p + 1) for s, p in zip(size, patch)])
    if any(margin):  # in the padded arrays the context box starts where the patch did
        pads = [(m, m) for m in margin]
        volume, label = np.pad(volume, [(0, 0), *pads]), np.pad(label, pads)
        patch = patch + 2 * np.array(margin)
    box = tuple(slice(int(s), int(s + p)) for s, p in zip(start, patch))
    return volume[(slice(None), *box)].copy(), label[box].copy()


def training_batch(cases: list[PreparedCase], batch_size: int, options: SamplingOptions,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """[B, C, D, H, W] float32 images and [B, D, H, W] int64 class indices."""
    xs, ys = [], []
    for _ in range(batch_size):
        case = cases[rng.integers(len(cases))]
        x, y = random_patch(case, options, rng, augmentation.context_for(options.augmentation, options.patch))
        x, y = augmentation.augment(options.augmentation, x, y, options.patch, case.spacing[::-1], rng,
                                    flips=options.flips, scale_shift=options.intensity)
        xs.append(x)
        ys.append(y)
    return np.stack(xs), np.stack(ys).astype(np.int64)
