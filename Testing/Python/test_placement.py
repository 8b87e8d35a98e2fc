"""Labels land where the anatomy is, whatever the input's geometry.

The geometry tests compare grids only: the output copies the input's grid, so labels flipped
or shifted by a wrong inverse of the reorientation, resampling or crop would pass them. Here
one real BraTS case is presented in several geometries (axes flipped, axes permuted, an
oblique grid, anisotropic spacing, cropped) and segmented through the whole Segmenter
(reorient to LPS, resample to 1.5 mm, crop to the foreground, sliding windows, and back).

The "model" is a fixed threshold of the FLAIR intensity, so its correct output is known in
every geometry: the threshold of that geometry's own image. That absolute check is what
catches an inverse that is wrong in the same way for every geometry (a crop box or a
resampled origin off by a few voxels: predictions still agree with one another, but no longer
with the image). The threshold also segments the tumour for real (whole-tumour Dice about
0.9), so each geometry must also agree with the original's prediction once resampled onto one
grid, and score the same Dice against the reference label moved the same way.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import SHARED_DATA
from segment_helpers import oblique_direction

from MedTuningCore.inference.segmenter import Segmenter, SetDescription

CASE = SHARED_DATA / "brats2013" / "pat0004"
THRESHOLD = 1.5  # z-scored FLAIR above this is mostly oedema and tumour (whole-tumour Dice ~0.9)
PREPROCESSING = {"spacing": [1.5, 1.5, 1.5], "crop_foreground": True, "normalization": [{"method": "none"}]}


class ThresholdModel(torch.nn.Module):
    """Class 1 where the first channel exceeds THRESHOLD, voxel by voxel. Smooth logits, so that
    probabilities interpolated back onto the input grid behave like the interpolated image."""

    def __init__(self) -> None:
        super().__init__()
        # what Segmenter and the sliding-window predictor read from a MedTuningModel
        self.config = SimpleNamespace(num_classes=2, num_outputs=2, regions=None, in_channels=1, img_size=126,
                                      reference_depth=64, backbone="vit_small_patch14_dinov2")
        self.size_multiple = 14

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        margin = 2.0 * (x[:, :1] - THRESHOLD)
        return torch.cat([-margin, margin], dim=1)


def resample(image: sitk.Image, grid: sitk.Image, interpolator: int, default: float = 0.0) -> sitk.Image:
    return sitk.Resample(image, grid, sitk.Transform(), interpolator, default, image.GetPixelID())


def empty_grid(size, spacing, origin, direction) -> sitk.Image:
    grid = sitk.Image([int(n) for n in size], sitk.sitkUInt8)
    grid.SetSpacing(tuple(float(s) for s in spacing))
    grid.SetOrigin(tuple(float(o) for o in origin))
    grid.SetDirection(tuple(float(d) for d in direction))
    return grid


def oblique_grid(image: sitk.Image, spacing: tuple[float, float, float]) -> sitk.Image:
    """A grid rotated 20 degrees about an oblique axis that holds the whole image."""
    direction = np.array(oblique_direction(20.0)).reshape(3, 3)
    size = np.array(image.GetSize()) - 1
    corners = [image.TransformIndexToPhysicalPoint([int(size[k] * ((i >> k) & 1)) for k in range(3)])
               for i in range(8)]
    along = np.array(corners) @ direction  # corner coordinates along the new axes
    low, high = along.min(axis=0), along.max(axis=0)
    count = np.ceil((high - low) / np.array(spacing)).astype(int) + 1
    return empty_grid(count, spacing, direction @ low, direction.ravel())


def anisotropic_grid(image: sitk.Image, spacing: tuple[float, float, float]) -> sitk.Image:
    size = np.round(np.array(image.GetSize()) * np.array(image.GetSpacing()) / np.array(spacing))
    return empty_grid(size, spacing, image.GetOrigin(), image.GetDirection())


def geometries(flair: sitk.Image, label: sitk.Image) -> dict[str, tuple[sitk.Image, sitk.Image]]:
    """(image, reference label) in each geometry; both moved the same way, the label by nearest
    neighbour. Reorientation and cropping move no voxel in physical space; the oblique and
    anisotropic grids resample (outside the image: its background value)."""
    background = float(sitk.GetArrayViewFromImage(flair).min())
    out = {"original": (flair, label)}
    for name, code in (("flipped", "RAI"), ("permuted", "SRA")):  # the files are LPS
        out[name] = (sitk.DICOMOrient(flair, code), sitk.DICOMOrient(label, code))
    for name, grid in (("oblique", oblique_grid(flair, (1.2, 1.2, 1.2))),
                       ("anisotropic", anisotropic_grid(flair, (0.8, 1.1, 2.5)))):
        out[name] = (resample(flair, grid, sitk.sitkLinear, background),
                     resample(label, grid, sitk.sitkNearestNeighbor))
    box = (slice(30, 215), slice(17, 230), slice(5, 150))  # x, y, z: the whole brain, uneven margins
    out["cropped"] = (flair[box], label[box])
    return out


def dice(a: sitk.Image, b: sitk.Image) -> float:
    """Computed here by hand, not with the metrics module under test elsewhere."""
    x, y = sitk.GetArrayViewFromImage(a) > 0, sitk.GetArrayViewFromImage(b) > 0
    return 2.0 * float(np.logical_and(x, y).sum()) / float(x.sum() + y.sum())


@pytest.fixture(scope="module")
def placed():
    """{geometry: (image, reference, prediction)}, each on that geometry's own grid."""
    if not CASE.is_dir():
        pytest.skip(f"BraTS 2013 case not found under {CASE}")
    flair = sitk.ReadImage(str(CASE / "Flair_subtrMeanDivStd.nii.gz"), sitk.sitkFloat32)
    whole_tumour = sitk.Cast(sitk.ReadImage(str(CASE / "OTMultiClass.nii.gz")) > 0, sitk.sitkUInt8)
    segmenter = Segmenter(ThresholdModel(), SetDescription.from_dict({"model": {}, "preprocessing": PREPROCESSING}))
    return {name: (image, reference, segmenter.segment_images([image]).labels)
            for name, (image, reference) in geometries(flair, whole_tumour).items()}


@pytest.mark.parametrize("geometry", ["original", "flipped", "permuted", "oblique", "anisotropic", "cropped"])
def test_labels_are_placed_on_the_anatomy(placed, geometry):
    image, reference, prediction = placed[geometry]
    # the model's known answer on this grid: a misplaced inverse moves the labels off it
    assert dice(prediction, image > THRESHOLD) >= 0.95
    # the same labels in physical space as the original's, compared on the original's grid
    original = placed["original"][2]
    assert dice(resample(prediction, original, sitk.sitkNearestNeighbor), original) >= 0.95
    # and the same score against the reference moved the same way
    original_score = dice(original, placed["original"][1])
    assert original_score > 0.85  # it does segment the tumour
    assert dice(prediction, reference) == pytest.approx(original_score, abs=0.02)
