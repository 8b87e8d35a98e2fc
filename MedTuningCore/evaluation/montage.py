"""PNG pictures of label maps over their image, written with SimpleITK (no plotting library).

Colours are the Okabe-Ito palette (Okabe & Ito 2008), distinguishable with colour-vision
deficiency; label value v gets PALETTE[v] (values beyond the palette wrap around).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..io.atomic import atomic_path

PALETTE = np.array([[0, 0, 0], [230, 159, 0], [86, 180, 233], [0, 158, 115], [213, 94, 0], [204, 121, 167],
                    [240, 228, 66], [0, 114, 178]], np.uint8)
PALETTE_NAMES = ["black", "orange", "sky blue", "bluish green", "vermillion", "reddish purple", "yellow", "blue"]


def colour_name(value: int) -> str:
    return PALETTE_NAMES[1 + (value - 1) % (len(PALETTE) - 1)]


def grey(slice_: np.ndarray, low: float, high: float) -> np.ndarray:
    return (np.clip((slice_ - low) / max(high - low, 1e-6), 0, 1) * 255).astype(np.uint8)


def blend(gray: np.ndarray, labels: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """An RGB uint8 slice: grey image with label colours blended in."""
    rgb = np.repeat(gray[..., None], 3, axis=-1).astype(np.float32)
    index = np.where(labels > 0, 1 + (labels.astype(np.int64) - 1) % (len(PALETTE) - 1), 0)
    mask = labels > 0
    rgb[mask] = (1 - opacity) * rgb[mask] + opacity * PALETTE[index[mask]].astype(np.float32)
    return rgb.astype(np.uint8)


def write_png(path: Path, rgb: np.ndarray) -> None:
    with atomic_path(path, ".png") as tmp:  # the suffix tells ITK to write PNG
        sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(tmp))


def isotropic_lps(image: sitk.Image, labels: sitk.Image, max_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Both on one isotropic grid in LPS orientation, as [z, y, x] arrays, so that slices
    show true proportions; the grid's spacing is at least the finest input spacing."""
    image, labels = sitk.DICOMOrient(image, "LPS"), sitk.DICOMOrient(labels, "LPS")
    extent = np.array(image.GetSize()) * np.array(image.GetSpacing())
    spacing = max(min(image.GetSpacing()), float(extent.max()) / max_size)
    size = [max(1, int(round(e / spacing))) for e in extent]
    ref = sitk.Image(size, sitk.sitkUInt8)
    ref.SetOrigin(image.GetOrigin())
    ref.SetDirection(image.GetDirection())
    ref.SetSpacing([spacing] * 3)
    a = sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), ref, sitk.Transform(), sitk.sitkLinear)
    b = sitk.Resample(labels, ref, sitk.Transform(), sitk.sitkNearestNeighbor)
    return sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b)


def views(volume: np.ndarray, k: float) -> list[np.ndarray]:
    """Axial, coronal and sagittal slices at fraction k of each axis, in radiological display
    (patient's right on the left, superior up); `volume` is [z, y, x] in LPS."""
    z, y, x = (int(k * (n - 1)) for n in volume.shape)
    return [volume[z], volume[:, y, :][::-1], volume[:, :, x][::-1]]


def centre_on_canvas(panel: np.ndarray, height: int, width: int) -> np.ndarray:
    """An RGB panel centred on a black height x width canvas, so that panels of the three
    views (of different sizes) line up in the montage's grid."""
    out = np.zeros((height, width, 3), np.uint8)
    h, w = panel.shape[:2]
    top, left = (height - h) // 2, (width - w) // 2
    out[top:top + h, left:left + w] = panel
    return out


def write_montage(path: Path, image: sitk.Image, labels: sitk.Image, fractions=(0.35, 0.45, 0.55, 0.65)) -> None:
    """Rows: axial, coronal, sagittal; columns: slices at `fractions` of each axis."""
    volume, label = isotropic_lps(image, labels)
    inside = volume[volume > volume.min()]
    low, high = np.percentile(inside, (1, 99.5)) if inside.size else (0.0, 1.0)
    rows = []
    for view in range(3):
        panels = [blend(grey(views(volume, k)[view], low, high), views(label, k)[view]) for k in fractions]
        rows.append(panels)
    height = max(p.shape[0] for r in rows for p in r)
    width = max(p.shape[1] for r in rows for p in r)
    grid = np.concatenate([np.concatenate([centre_on_canvas(p, height, width) for p in r], axis=1) for r in rows],
                          axis=0)
    write_png(Path(path), grid)
