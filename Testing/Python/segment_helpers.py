"""Small models and images for the segmentation tests (random weights: the tests check
geometry, plumbing and errors, not accuracy)."""

from __future__ import annotations

import copy

import numpy as np
import SimpleITK as sitk

TINY = {
    "model": {
        "backbone": "vit_small_patch14_dinov2", "decoder": "setr_naive", "tuning": "med_adapter",
        "in_channels": 1, "num_classes": 3, "img_size": 28, "reference_depth": 16,
        "backbone_kwargs": {"depth": 4},
    },
    "inference": {"tile_size": 56},
}


def tiny(channels: int = 1, classes: int = 3, **sections) -> dict:
    description = copy.deepcopy(TINY)
    description["model"].update(in_channels=channels, num_classes=classes)
    for key, value in sections.items():
        description.setdefault(key, {}).update(value)
    return description


def oblique_direction(angle_deg: float = 20.0) -> tuple[float, ...]:
    """A rotation about an oblique axis: not a permutation of the identity."""
    a = np.deg2rad(angle_deg)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(a / 2), -np.sin(a / 2)], [0, np.sin(a / 2), np.cos(a / 2)]])
    return tuple((rz @ rx).ravel())


def synthetic_volume(size=(37, 29, 11), spacing=(0.8, 1.1, 2.5), direction=None, seed=0, dtype=sitk.sitkFloat32):
    """A blob on a noisy background, on an oblique, anisotropic grid."""
    rng = np.random.default_rng(seed)
    x, y, z = size
    zz, yy, xx = np.meshgrid(np.arange(z), np.arange(y), np.arange(x), indexing="ij")
    blob = ((xx - x / 2) / (x / 4)) ** 2 + ((yy - y / 2) / (y / 4)) ** 2 + ((zz - z / 2) / (z / 3)) ** 2 < 1
    values = 100 + 50 * blob + rng.normal(0, 5, blob.shape)
    image = sitk.GetImageFromArray(np.round(values).astype(np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin((-12.5, 30.25, 7.0))
    image.SetDirection(direction or oblique_direction())
    return sitk.Cast(image, dtype)


def same_grid(a: sitk.Image, b: sitk.Image, direction_atol: float = 0.0) -> bool:
    """Bit-for-bit geometry (or, with direction_atol, up to a file format's precision)."""
    direction_ok = (a.GetDirection() == b.GetDirection() if direction_atol == 0
                    else np.allclose(a.GetDirection(), b.GetDirection(), rtol=0, atol=direction_atol))
    return (a.GetSize() == b.GetSize() and a.GetSpacing() == b.GetSpacing()
            and a.GetOrigin() == b.GetOrigin() and direction_ok)


def write_dicom_series(image: sitk.Image, directory) -> None:
    """Write a 3D int16 image as a DICOM series (one file per slice) with SimpleITK."""
    image = sitk.Cast(image, sitk.sitkInt16)
    direction = image.GetDirection()
    series_uid = "1.2.826.0.1.3680043.2.1125.1.123456789"
    tags = [
        ("0008|0060", "MR"), ("0020|000d", "1.2.826.0.1.3680043.2.1125.1.1"), ("0020|000e", series_uid),
        ("0020|0037", "\\".join(f"{v:.10f}" for v in (*direction[0::3], *direction[1::3]))),
        ("0008|0016", "1.2.840.10008.5.1.4.1.1.4"),
    ]
    for k in range(image.GetDepth()):
        slice_ = image[:, :, k]
        for tag, value in tags:
            slice_.SetMetaData(tag, value)
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        slice_.SetMetaData("0020|0032", "\\".join(f"{v:.10f}" for v in position))
        slice_.SetMetaData("0020|0013", str(k + 1))
        slice_.SetMetaData("0018|0050", f"{image.GetSpacing()[2]:.10f}")
        slice_.SetMetaData("0028|0030", f"{image.GetSpacing()[1]:.10f}\\{image.GetSpacing()[0]:.10f}")
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()  # else GDCM gives every slice a series of its own
        writer.SetFileName(str(directory / f"slice{k:03d}.dcm"))
        writer.Execute(slice_)
