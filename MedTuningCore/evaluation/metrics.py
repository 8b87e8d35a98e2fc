"""Segmentation metrics per label and per region, in millimetres.

- Dice; HD95 = max of the two directed 95th percentiles of surface-to-surface distances
  (as MONAI's `compute_hausdorff_distance(percentile=95)`); surface Dice at a tolerance
  (Nikolov et al. 2021); volumes and their difference in mL.
- Empty structures, as in the BraTS evaluation: absent in both reference and prediction:
  Dice 1, HD95 0, surface Dice 1; absent in only one: Dice 0, surface Dice 0, and HD95 the
  diagonal of the image in mm (373.13 mm for BraTS's 240 x 240 x 155 at 1 mm), the largest
  distance possible in the image.
- Regions are unions of label values: BraTS WT = {1,2,3,4}, TC = {1,3,4}, ET = {4}; KiTS
  kidney = {1,2}, tumour = {2}, composite = their mean Dice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def surface(mask: np.ndarray) -> np.ndarray:
    """Foreground voxels with a 6-neighbour outside the mask (or on the image border)."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = padded[1:-1, 1:-1, 1:-1].copy()
    for axis in range(3):
        for shift in (-1, 1):
            interior &= np.roll(padded, shift, axis=axis)[1:-1, 1:-1, 1:-1]
    return mask & ~interior


def distance_to(mask: np.ndarray, spacing_zyx: Sequence[float]) -> np.ndarray:
    """Euclidean distance in mm from every voxel centre to the nearest voxel of `mask`."""
    # Imported here: Dice alone (what training validates with) must not need SimpleITK.
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing(tuple(float(s) for s in spacing_zyx[::-1]))
    dist = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(
        image, insideIsPositive=False, squaredDistance=False, useImageSpacing=True))
    return np.where(mask, 0.0, np.maximum(dist, 0.0))


def directed_surface_distances(a: np.ndarray, b: np.ndarray, spacing_zyx: Sequence[float]
                               ) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each surface voxel of a to b's surface, and from b's to a's."""
    sa, sb = surface(a), surface(b)
    return distance_to(sb, spacing_zyx)[sa], distance_to(sa, spacing_zyx)[sb]


def image_diagonal_mm(shape: Sequence[int], spacing_zyx: Sequence[float]) -> float:
    return float(np.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing_zyx))))  # BraTS: 373.13 mm


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of two boolean masks; 1 when both are empty (the BraTS convention above)."""
    total = int(pred.sum()) + int(ref.sum())
    return 1.0 if total == 0 else 2.0 * float(np.logical_and(pred, ref).sum()) / total


def dice_per_class(pred: np.ndarray, ref: np.ndarray, classes: int) -> list[float]:
    """Dice of each foreground class 1..classes-1 between two class-index maps."""
    return [dice(pred == c, ref == c) for c in range(1, classes)]


def mask_metrics(pred: np.ndarray, ref: np.ndarray, spacing_zyx: Sequence[float], tolerance_mm: float = 1.0
                 ) -> dict[str, float]:
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    vp, vr = int(pred.sum()), int(ref.sum())
    out = {"volume_ref_ml": vr * voxel_ml, "volume_pred_ml": vp * voxel_ml, "volume_diff_ml": (vp - vr) * voxel_ml}
    if vp == 0 and vr == 0:
        return {**out, "dice": 1.0, "hd95": 0.0, "surface_dice": 1.0}
    if vp == 0 or vr == 0:
        return {**out, "dice": 0.0, "hd95": image_diagonal_mm(pred.shape, spacing_zyx), "surface_dice": 0.0}
    d_pr, d_rp = directed_surface_distances(pred, ref, spacing_zyx)
    hd95 = max(float(np.percentile(d_pr, 95)), float(np.percentile(d_rp, 95)))
    surface_dice = float(((d_pr <= tolerance_mm).sum() + (d_rp <= tolerance_mm).sum()) / (d_pr.size + d_rp.size))
    return {**out, "dice": dice(pred, ref), "hd95": hd95, "surface_dice": surface_dice}


def case_metrics(pred: np.ndarray, ref: np.ndarray, spacing_zyx: Sequence[float], labels: Mapping[str, int],
                 regions: Mapping[str, Sequence[int]] | None = None, tolerance_mm: float = 1.0
                 ) -> dict[str, dict[str, float]]:
    """Metrics for each label (name -> value) and each region (name -> values)."""
    out = {name: mask_metrics(pred == value, ref == value, spacing_zyx, tolerance_mm)
           for name, value in labels.items()}
    for name, values in (regions or {}).items():
        out[name] = mask_metrics(np.isin(pred, values), np.isin(ref, values), spacing_zyx, tolerance_mm)
    if regions and set(regions) == {"kidney", "tumour"}:
        out["composite"] = {"dice": (out["kidney"]["dice"] + out["tumour"]["dice"]) / 2}
    return out


def summarise(per_case: Mapping[str, Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation of every metric over cases."""
    summary: dict[str, dict[str, float]] = {}
    structures = sorted({s for case in per_case.values() for s in case})
    for structure in structures:
        rows = [case[structure] for case in per_case.values() if structure in case]
        for metric in sorted({m for r in rows for m in r}):
            values = np.array([r[metric] for r in rows if metric in r], float)
            summary.setdefault(structure, {})[f"{metric}_mean"] = float(values.mean())
            summary[structure][f"{metric}_std"] = float(values.std())
    return summary
