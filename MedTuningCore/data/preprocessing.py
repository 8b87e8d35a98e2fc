"""Preprocessing recorded as data, and its exact inverse.

A `Preprocessing` (stored in adapter sets) says how a case becomes the network's input:
canonical orientation, target spacing, per-channel intensity normalisation and an optional
crop to the foreground. `preprocess` returns the array and a `CaseGeometry` that undoes all
of it, so the label map comes back on the input's exact grid.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk

from ..errors import InputError

NORMALISATIONS = ("zscore", "percentile", "ct", "none")


@dataclass
class ChannelNormalization:
    """How one channel's intensities are normalised.

    zscore: subtract the mean and divide by the standard deviation inside the foreground
        (voxels above the image's minimum, which excludes zero or constant backgrounds).
    percentile: clip to the foreground's `percentiles`, then z-score (robust for MRI).
    ct: clip to the HU `window` [low, high] and map it to [-1, 1].
    none: leave as is.
    `zero_background` sets voxels outside the foreground to 0 after z-scoring.
    """

    method: str = "zscore"
    window: tuple[float, float] | None = None
    percentiles: tuple[float, float] = (0.5, 99.5)
    zero_background: bool = True

    def __post_init__(self) -> None:
        if self.method not in NORMALISATIONS:
            raise InputError(f"unknown normalisation {self.method!r}; use one of {', '.join(NORMALISATIONS)}")
        if self.method == "ct" and (self.window is None or self.window[0] >= self.window[1]):
            raise InputError("CT normalisation needs window = [low, high] in HU with low < high")


@dataclass
class Preprocessing:
    """What turns a case into network input; stored in adapter sets as JSON."""

    orientation: str | None = "LPS"  # DICOM-style code; "LPS" makes array axis 0 the S axis
    spacing: tuple[float, float, float] | None = None  # target (x, y, z) in mm; None keeps it
    normalization: list[ChannelNormalization] = field(default_factory=lambda: [ChannelNormalization()])
    crop_foreground: bool = False
    crop_margin_voxels: int = 4

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        data = dict(data)
        data["normalization"] = [ChannelNormalization(**n) for n in data.get("normalization", [{}])]
        if data.get("spacing") is not None:
            data["spacing"] = tuple(float(s) for s in data["spacing"])
        return cls(**data)

    def for_channels(self, count: int) -> list[ChannelNormalization]:
        norms = self.normalization
        if len(norms) == 1:
            return norms * count
        if len(norms) != count:
            raise InputError(f"the preprocessing has {len(norms)} channel normalisations for {count} channels")
        return norms


@dataclass
class CaseGeometry:
    """Everything needed to put a prediction back on the input grid."""

    reference: sitk.Image  # the first input channel: its exact grid is the output's
    orientation: str  # the input's own orientation code
    oriented: sitk.Image  # the reoriented first channel (grid before resampling)
    resampled: sitk.Image | None  # an image on the resampled grid, or None
    crop_start: tuple[int, int, int] | None  # array (D, H, W) box inside the resampled grid
    crop_stop: tuple[int, int, int] | None


def orientation_of(image: sitk.Image) -> str:
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())


def resample_to_spacing(image: sitk.Image, spacing: tuple[float, float, float], interpolator: int) -> sitk.Image:
    old_size, old_spacing = np.array(image.GetSize()), np.array(image.GetSpacing())
    size = np.maximum(np.round(old_size * old_spacing / np.array(spacing)), 1).astype(int)
    return sitk.Resample(
        image, [int(s) for s in size], sitk.Transform(), interpolator, image.GetOrigin(), spacing,
        image.GetDirection(), 0.0, image.GetPixelID(),
    )


def foreground_mask(values: np.ndarray) -> np.ndarray:
    """Voxels above the minimum: excludes zero padding and constant skull-stripped
    backgrounds (BraTS stores a constant negative value outside the brain)."""
    mask = values > values.min()
    return mask if mask.mean() > 0.01 else np.ones_like(mask)


def normalise(values: np.ndarray, spec: ChannelNormalization) -> np.ndarray:
    values = values.astype(np.float32, copy=False)
    if spec.method == "none":
        return values
    if spec.method == "ct":
        low, high = spec.window
        return ((np.clip(values, low, high) - (low + high) / 2) / ((high - low) / 2)).astype(np.float32)
    mask = foreground_mask(values)
    if spec.method == "percentile":
        low, high = np.percentile(values[mask], spec.percentiles)
        values = np.clip(values, low, high)
    inside = values[mask]
    out = (values - inside.mean()) / max(float(inside.std()), 1e-8)
    if spec.zero_background:
        out[~mask] = 0.0
    return out.astype(np.float32)


def bounding_box(mask: np.ndarray, margin: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    coords = np.nonzero(mask)
    start = tuple(max(int(c.min()) - margin, 0) for c in coords)
    stop = tuple(min(int(c.max()) + 1 + margin, n) for c, n in zip(coords, mask.shape))
    return start, stop


def preprocess(channels: list[sitk.Image], spec: Preprocessing) -> tuple[np.ndarray, CaseGeometry]:
    """Channels on one grid -> float32 array [C, D, H, W] and the geometry to undo it."""
    reference = channels[0]
    code = orientation_of(reference)
    oriented = [sitk.DICOMOrient(c, spec.orientation) if spec.orientation else c for c in channels]
    first_oriented, resampled = oriented[0], None
    if spec.spacing is not None and not np.allclose(first_oriented.GetSpacing(), spec.spacing, rtol=1e-4):
        oriented = [resample_to_spacing(c, spec.spacing, sitk.sitkLinear) for c in oriented]
        resampled = oriented[0]
    arrays = [sitk.GetArrayFromImage(c) for c in oriented]  # [D, H, W] each
    start = stop = None
    if spec.crop_foreground:
        union = np.zeros(arrays[0].shape, bool)
        for a in arrays:
            union |= foreground_mask(a)
        start, stop = bounding_box(union, spec.crop_margin_voxels)
        arrays = [a[tuple(slice(s, e) for s, e in zip(start, stop))] for a in arrays]
    volume = np.stack([normalise(a, n) for a, n in zip(arrays, spec.for_channels(len(arrays)))])
    geometry = CaseGeometry(reference, code, first_oriented, resampled, start, stop)
    return volume, geometry


def restore_probabilities(probabilities: np.ndarray, geometry: CaseGeometry) -> np.ndarray:
    """[K, d, h, w] probabilities on the preprocessed grid -> [K, D, H, W] on the oriented
    input grid (uncropped, and resampled back with linear interpolation). A view of
    `restore_probabilities_last`, whose channels-last layout is the one to compute with."""
    return np.moveaxis(restore_probabilities_last(probabilities, geometry), -1, 0)


def restore_probabilities_last(probabilities: np.ndarray, geometry: CaseGeometry) -> np.ndarray:
    """[K, d, h, w] probabilities -> [D, H, W, K] on the oriented input grid. The classes are
    resampled together as one vector image: one pass over the grid instead of K (about half
    the time), and the argmax over the last, contiguous axis is faster too."""
    last = np.moveaxis(probabilities, 0, -1)
    if geometry.crop_start is not None:
        grid = geometry.resampled if geometry.resampled is not None else geometry.oriented
        full = np.zeros((*sitk.GetArrayViewFromImage(grid).shape[:3], last.shape[-1]), np.float32)
        full[..., 0] = 1.0  # outside the crop: background
        box = tuple(slice(s, e) for s, e in zip(geometry.crop_start, geometry.crop_stop))
        full[box] = last
        last = full
    if geometry.resampled is None:
        return np.ascontiguousarray(last, dtype=np.float32)
    image = sitk.GetImageFromArray(np.ascontiguousarray(last, dtype=np.float32), isVector=True)
    image.CopyInformation(geometry.resampled)
    # Input voxels past the last coarse voxel centre (the far border planes when the sizes do
    # not divide) take the nearest coarse value, not 0: with 0 there they would all come back
    # as background and cut any structure touching the field's edge.
    back = sitk.Resample(image, geometry.oriented, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkVectorFloat32,
                         True)
    return sitk.GetArrayFromImage(back)


def to_input_grid(array: np.ndarray, geometry: CaseGeometry) -> sitk.Image:
    """An array on the oriented input grid -> an image with the input's exact geometry."""
    image = sitk.GetImageFromArray(array, isVector=array.ndim == 4)
    image.CopyInformation(geometry.oriented)
    if geometry.orientation != orientation_of(geometry.oriented):
        image = sitk.DICOMOrient(image, geometry.orientation)
    image.CopyInformation(geometry.reference)  # bit-exact size, spacing, origin, direction
    return image


def preprocess_label(label: sitk.Image, geometry: CaseGeometry, spec: Preprocessing) -> np.ndarray:
    """A label map through the same geometry as its case's channels (nearest neighbour)."""
    oriented = sitk.DICOMOrient(label, spec.orientation) if spec.orientation else label
    if geometry.resampled is not None:
        oriented = sitk.Resample(oriented, geometry.resampled, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                                 oriented.GetPixelID())
    array = sitk.GetArrayFromImage(oriented)
    if geometry.crop_start is not None:
        array = array[tuple(slice(s, e) for s, e in zip(geometry.crop_start, geometry.crop_stop))]
    return array
