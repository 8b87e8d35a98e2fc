"""Segmenting with several adapter sets at once (e.g. organs + tumour) and merging.

Rule: set k's labels are renumbered after those of sets 1..k-1 (the first set keeps its
values). Where more than one set labels a voxel as foreground, the set whose winning class
is most probable there takes the voxel; on a tie the set listed first wins. Background is
0 where no set claims the voxel; a set claims only what its own label map (after its
post-processing) marks as foreground.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .segmenter import Segmenter


@dataclass
class MergedLabel:
    value: int
    set_name: str
    name: str
    source_value: int


def merge_segmentations(segmenters: Sequence[Segmenter], channels: Sequence[sitk.Image]
                        ) -> tuple[sitk.Image, list[MergedLabel]]:
    merged = best = None
    table: list[MergedLabel] = []
    offset = 0
    for index, segmenter in enumerate(segmenters):
        result = segmenter.segment_images(channels, probabilities=True)
        probs = sitk.GetArrayFromImage(result.probabilities)  # [D, H, W, K]
        labels = probs.argmax(axis=-1).astype(np.int32)  # class indices, whatever values the set writes
        # what the set's own label map calls background (its post-processing, its region
        # thresholds) stays background here, so merging never brings back what one set removed
        labels[sitk.GetArrayFromImage(result.labels) == 0] = 0
        confidence = np.take_along_axis(probs, labels[..., None], axis=-1)[..., 0]
        if merged is None:
            merged = np.zeros(labels.shape, np.int32)
            best = np.full(labels.shape, -1.0, np.float32)
        wins = (labels > 0) & (confidence > best)  # strict: ties stay with earlier sets
        merged[wins] = labels[wins] + offset
        best[wins] = confidence[wins]
        set_name = segmenter.adapter_set.name if segmenter.adapter_set else f"set{index + 1}"
        names = segmenter.description.labels or [f"label {v}" for v in range(1, probs.shape[-1])]
        values = segmenter.description.label_values or list(range(1, len(names) + 1))
        table += [MergedLabel(offset + i, set_name, n, v) for i, (n, v) in enumerate(zip(names, values), start=1)]
        offset += probs.shape[-1] - 1
        reference = result.labels
    dtype = np.uint8 if offset < 256 else np.uint16
    image = sitk.GetImageFromArray(merged.astype(dtype))
    image.CopyInformation(reference)
    return image, table
