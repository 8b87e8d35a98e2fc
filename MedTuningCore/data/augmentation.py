"""Augmentation of training patches: the paper's, and a strong one for small training sets.

"paper" follows the Med-Tuning appendix (A.1): flips along each of the three axes with
p = 0.5, and per channel an intensity scale from U(0.9, 1.1) and shift from U(-0.1, 0.1).
That is enough for a dataset of hundreds of cases. A set trained on a handful of images, or
on one template, needs more so that it does not memorise them: "strong" adds random
spatial and intensity transforms. The transforms and their probabilities follow
the ones nnU-Net uses by default (Isensee et al. 2021, Nature Methods, supplementary
note 4): rotation and scaling, Gaussian noise and blur, brightness, contrast, simulated low
resolution and gamma; we add a smooth multiplicative bias field, as MRI has (as in
TorchIO's RandomBiasField, Pérez-García et al. 2021). Everything is seeded from the
caller's generator, so a resumed run draws the same patches.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

AUGMENTATIONS = ("paper", "strong")
# The spatial transform samples from a crop larger than the patch by this share on each side,
# so that rotated and shrunk patches see real image in their corners rather than padding.
CONTEXT = 0.125


def context_margin(patch: tuple[int, int, int]) -> tuple[int, int, int]:
    """Voxels of context on each side (the same on both, so the patch stays centred on a voxel)."""
    return tuple(int(math.ceil(CONTEXT * p)) for p in patch)  # type: ignore[return-value]


def context_for(name: str, patch: tuple[int, int, int]) -> tuple[int, int, int]:
    """Context a patch needs on each side for augmentation `name`: only the strong spatial
    transform samples beyond the patch."""
    return context_margin(patch) if name == "strong" else (0, 0, 0)


def augment(name: str, x: np.ndarray, y: np.ndarray, patch: tuple[int, int, int],
            spacing_zyx: tuple[float, float, float], rng: np.random.Generator, flips: bool = True,
            scale_shift: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Augmentation `name` of a patch x [C, D, H, W], y [D, H, W] (with its context for "strong")."""
    if name == "strong":
        return strong_augmentation(x, y, patch, spacing_zyx, rng, flips, scale_shift)
    return paper_augmentation(x, y, rng, flips, scale_shift)


def paper_augmentation(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, flips: bool = True,
                       scale_shift: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The paper's: random flips of the three axes, then a per-channel scale and shift."""
    if flips:
        for axis in range(3):
            if rng.random() < 0.5:
                x, y = np.flip(x, axis=axis + 1), np.flip(y, axis=axis)
    if scale_shift:
        channels = x.shape[0]
        scale = rng.uniform(0.9, 1.1, size=(channels, 1, 1, 1)).astype(np.float32)
        shift = rng.uniform(-0.1, 0.1, size=(channels, 1, 1, 1)).astype(np.float32)
        x = x * scale + shift
    return np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(y)


def strong_augmentation(x: np.ndarray, y: np.ndarray, patch: tuple[int, int, int],
                        spacing_zyx: tuple[float, float, float], rng: np.random.Generator, flips: bool = True,
                        scale_shift: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Spatial transform of a context crop down to `patch`, the paper's augmentation, then the
    intensity transforms (in this order, which seeded runs depend on)."""
    x, y = spatial(x, y, patch, spacing_zyx, rng)
    x, y = paper_augmentation(x, y, rng, flips, scale_shift)
    return intensity(x, rng), y


def rotation(angles: np.ndarray) -> np.ndarray:
    """3x3 rotation about the x, y and z axes by `angles` (radians), in that order."""
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def spatial(x: np.ndarray, y: np.ndarray, patch: tuple[int, int, int], spacing_zyx: tuple[float, float, float],
            rng: np.random.Generator, force: tuple[np.ndarray, float] | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """Rotate (in-plane up to 30 degrees, out of plane up to 10) and scale (0.8-1.25) a
    context crop [C, D', H', W'] about its centre in millimetres, and cut the central `patch`;
    labels use nearest neighbour. `force` = (angles in radians, zoom) fixes the draw (tests)."""
    big = np.array(y.shape, dtype=np.float64)  # D', H', W'
    out = np.array(patch, dtype=np.float64)
    matrix = np.eye(3)
    if force is not None:
        matrix = rotation(np.asarray(force[0], dtype=np.float64)) / force[1]
    else:
        if rng.random() < 0.3:
            angles = np.array([rng.uniform(-10, 10), rng.uniform(-10, 10), rng.uniform(-30, 30)]) * math.pi / 180
            matrix = rotation(angles)
        if rng.random() < 0.3:
            matrix = matrix / rng.uniform(0.8, 1.25)  # > 1 zooms in
    # affine_grid's coordinates are (x, y, z) = (W, H, D), normalised to [-1, 1]: output
    # normalised -> millimetres (x out/2 x spacing), rotate, -> input normalised (/ (big/2 x spacing)).
    sp = np.asarray(spacing_zyx, dtype=np.float64)[::-1]
    theta = np.diag(1.0 / (big[::-1] * sp)) @ matrix @ np.diag(out[::-1] * sp)
    theta = torch.tensor(np.concatenate([theta, np.zeros((3, 1))], axis=1), dtype=torch.float32)
    grid = F.affine_grid(theta[None], [1, 1, *patch], align_corners=False)
    image = F.grid_sample(torch.from_numpy(np.ascontiguousarray(x))[None], grid, mode="bilinear",
                          padding_mode="zeros", align_corners=False)[0]
    label = F.grid_sample(torch.from_numpy(np.ascontiguousarray(y)).float()[None, None], grid, mode="nearest",
                          padding_mode="zeros", align_corners=False)[0, 0]
    return image.numpy(), label.round().to(torch.uint8).numpy()


def bias_field(shape: tuple[int, ...], rng: np.random.Generator, strength: float = 0.3) -> np.ndarray:
    """A smooth multiplicative field between 0.5 and 2: exp of a random polynomial of degree 2
    over the patch, centred so that the patch keeps its overall brightness."""
    axes = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    terms = list(axes) + [a * b for i, a in enumerate(axes) for b in axes[i:]]
    log_field = sum(c * t for c, t in zip(rng.uniform(-strength, strength, size=len(terms)), terms))
    return np.exp(np.clip(log_field - log_field.mean(), -0.69, 0.69)).astype(np.float32)


def gaussian_blur(channel: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [D, H, W] in-plane (H and W)."""
    radius = max(1, int(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-t ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    v = channel[:, None]  # [D, 1, H, W]
    v = F.conv2d(F.pad(v, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    v = F.conv2d(F.pad(v, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    return v[:, 0]


def low_resolution(channel: torch.Tensor, factor: float) -> torch.Tensor:
    """Downsample by `factor` (nearest) and upsample back (trilinear), as a coarser scan."""
    shape = channel.shape
    small = [max(1, int(round(n / factor))) for n in shape]
    down = F.interpolate(channel[None, None], size=small, mode="nearest")
    return F.interpolate(down, size=shape, mode="trilinear", align_corners=False)[0, 0]


def gamma(channel: torch.Tensor, value: float) -> torch.Tensor:
    """Gamma on the channel's [min, max] range, keeping its mean and standard deviation."""
    lo, hi = channel.min(), channel.max()
    if hi - lo < 1e-6:
        return channel
    mean, std = channel.mean(), channel.std()
    out = ((channel - lo) / (hi - lo)) ** value * (hi - lo) + lo
    return (out - out.mean()) / (out.std() + 1e-6) * std + mean


def intensity(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-channel noise, blur, brightness, contrast, low resolution, gamma and bias field."""
    out = []
    for channel in torch.from_numpy(np.ascontiguousarray(x)):
        if rng.random() < 0.15:
            channel = channel + torch.from_numpy(rng.normal(0, math.sqrt(rng.uniform(0, 0.1)), channel.shape)
                                                 .astype(np.float32))
        if rng.random() < 0.2:
            channel = gaussian_blur(channel, rng.uniform(0.5, 1.0))
        if rng.random() < 0.15:
            channel = channel * rng.uniform(0.75, 1.25)
        if rng.random() < 0.15:
            mean = channel.mean()
            channel = (channel - mean) * rng.uniform(0.75, 1.25) + mean
        if rng.random() < 0.25:
            channel = low_resolution(channel, rng.uniform(1.0, 2.0))
        if rng.random() < 0.3:
            channel = gamma(channel, rng.uniform(0.7, 1.5))
        if rng.random() < 0.3:
            channel = channel * torch.from_numpy(bias_field(tuple(channel.shape), rng))
        out.append(channel)
    return torch.stack(out).numpy()
