"""Label-map clean-up: largest component, small islands, holes (SimpleITK, per class)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # imported where used: training imports this module on GPU nodes without SimpleITK
    import SimpleITK as sitk


@dataclass
class PostProcessing:
    """Stored as inference defaults in adapter sets.

    keep_largest_foreground: keep only the largest connected component of all labels together
        (nnU-Net's first post-processing step, chosen by cross-validation there as here: a
        tumour is one lesion; islands far from it are false positives).
    keep_largest: classes (ids) for which only the largest connected component is kept.
    min_island_mm3: components smaller than this volume are removed (0 keeps all).
    fill_holes: classes whose enclosed background holes are filled.
    """

    keep_largest_foreground: bool = False
    keep_largest: list[int] = field(default_factory=list)
    min_island_mm3: float = 0.0
    fill_holes: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def active(self) -> bool:
        return bool(self.keep_largest_foreground or self.keep_largest or self.min_island_mm3 > 0 or self.fill_holes)


def _components(mask: sitk.Image) -> tuple[sitk.Image, list[int]]:
    """Label connected components (26-connectivity), largest first; returns voxel counts."""
    import SimpleITK as sitk

    labelled = sitk.RelabelComponent(sitk.ConnectedComponent(mask, True), sortByObjectSize=True)
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(labelled)
    return labelled, [stats.GetNumberOfPixels(i) for i in sorted(stats.GetLabels())]


def largest_foreground(labels: np.ndarray) -> np.ndarray:
    """The label array with every voxel outside the largest connected component of all
    foreground classes together set to background (26-connectivity; spacing plays no part)."""
    if not labels.any():
        return labels
    import SimpleITK as sitk

    components = sitk.GetArrayFromImage(_components(sitk.GetImageFromArray((labels > 0).astype(np.uint8)))[0])
    return np.where(components > 1, 0, labels).astype(labels.dtype)


def choose_postprocessing(dice: dict[str, float], dice_largest: dict[str, float]) -> PostProcessing:
    """What a new set applies after inference, chosen on its validation cases as nnU-Net
    chooses it on its cross-validation: keep only the largest foreground component if that
    raises the mean Dice of the classes and lowers none of them; else nothing."""
    if not dice or set(dice) != set(dice_largest):
        return PostProcessing()
    better = np.mean(list(dice_largest.values())) > np.mean(list(dice.values()))
    no_class_worse = all(dice_largest[name] >= dice[name] for name in dice)
    return PostProcessing(keep_largest_foreground=bool(better and no_class_worse))


def postprocess(labels: sitk.Image, spec: PostProcessing) -> sitk.Image:
    if not spec.active:
        return labels
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(labels)
    voxel_mm3 = float(np.prod(labels.GetSpacing()))
    if spec.keep_largest_foreground:
        array = largest_foreground(array)
    per_class = spec.keep_largest or spec.min_island_mm3 > 0 or spec.fill_holes
    for cls in [int(c) for c in np.unique(array) if c != 0] if per_class else []:
        mask = sitk.GetImageFromArray((array == cls).astype(np.uint8))
        mask.CopyInformation(labels)
        components, sizes = _components(mask)
        comp = sitk.GetArrayFromImage(components)
        remove = np.zeros(array.shape, bool)
        if cls in spec.keep_largest:
            remove |= comp > 1
        if spec.min_island_mm3 > 0:
            small = [i + 1 for i, n in enumerate(sizes) if n * voxel_mm3 < spec.min_island_mm3]
            remove |= np.isin(comp, small)
        array[remove] = 0
        if cls in spec.fill_holes:
            filled = sitk.BinaryFillhole(sitk.GetImageFromArray((array == cls).astype(np.uint8)), fullyConnected=False)
            array[(sitk.GetArrayFromImage(filled) > 0) & (array == 0)] = cls
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(labels)
    return out
