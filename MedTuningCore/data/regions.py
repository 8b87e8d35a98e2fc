"""Region-based training: overlapping structures as independent sigmoid outputs.

BraTS scores whole tumour (WT = 1+2+3+4), tumour core (TC = 1+3+4) and enhancing tumour
(ET = 4), not the labels themselves; nnU-Net trains such regions directly, one sigmoid output
each (Isensee et al. 2021, "nnU-Net for Brain Tumor Segmentation"). The regions must be
nested, each inside the one before, as BraTS's and KiTS's are: then a voxel's classes follow
from its region probabilities (background = not in the first; class i = in region i but not
in region i+1), which lets everything after the network (restoring, merging, probability
maps, the label map) keep working on class probabilities.

A class made by two regions' difference may gather several label values (TC minus ET is
necrosis and non-enhancing tumour): it is written with the first of them and named after all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError

#: nnU-Net's BraTS regions and KiTS's, by label value
REGION_PRESETS: dict[str, dict[str, list[int]]] = {
    "brats": {"WT": [1, 2, 3, 4], "TC": [1, 3, 4], "ET": [4]},
    "kits": {"kidney": [1, 2], "tumour": [2]},
}


@dataclass
class RegionSpec:
    """Nested regions over training class indices (1 .. K-1 of the label map after preparing)."""

    names: list[str]
    classes: list[list[int]]  # region i = these class indices

    def __post_init__(self) -> None:
        if not self.classes:
            raise InputError("give at least one region")
        for i, (outer, inner) in enumerate(zip(self.classes, self.classes[1:])):
            if not set(inner) < set(outer):
                raise InputError(
                    f"region {self.names[i + 1]!r} must lie strictly inside {self.names[i]!r} (regions are "
                    f"nested, largest first, as BraTS's WT, TC, ET)")


def regions_by_value(text: str) -> dict[str, list[int]]:
    """'brats', 'kits' or 'NAME=V,V;NAME=V' -> {name: label values}, in the order given."""
    if text in REGION_PRESETS:
        return REGION_PRESETS[text]
    regions: dict[str, list[int]] = {}
    for item in filter(None, text.split(";")):
        name, _, values = item.partition("=")
        if name.strip() in regions:
            raise InputError(f"--regions {text!r}: the region {name.strip()!r} is given twice")
        try:
            regions[name.strip()] = [int(v) for v in values.split(",")]
        except ValueError:
            raise InputError(f"--regions {text!r}: expected 'brats', 'kits' or NAME=V,V;NAME=V") from None
    return regions


def nested_groups(regions: list[list[int]]) -> list[list[int]]:
    """What each class of a region model gathers: region i minus region i+1."""
    inner_of = [*regions[1:], []]
    return [[v for v in region if v not in inner] for region, inner in zip(regions, inner_of)]


def parse_regions(text: str, label_values: list[int]) -> RegionSpec:
    """Nested regions given as `regions_by_value` reads them -> a RegionSpec over class
    indices, for a label list whose class i has value label_values[i - 1]."""
    by_value = regions_by_value(text)
    if text in REGION_PRESETS:  # BraTS 2018+ has no label 3: a preset keeps the values present
        by_value = {name: [v for v in values if v in label_values] for name, values in by_value.items()}
    index = {value: i + 1 for i, value in enumerate(label_values)}
    unknown = sorted({v for values in by_value.values() for v in values} - set(index))
    if unknown:
        raise InputError(f"--regions {text!r}: label values {unknown} are not among the labels {label_values}")
    return RegionSpec(list(by_value), [sorted(index[v] for v in values) for values in by_value.values()])


def output_classes(spec: RegionSpec, label_values: list[int], label_names: list[str]) -> tuple[list[int], list[str]]:
    """The classes a region model writes (value, name): each region minus the next one."""
    groups = nested_groups(spec.classes)
    return ([label_values[own[0] - 1] for own in groups],
            ["+".join(label_names[c - 1] for c in own) for own in groups])


def region_targets(target: torch.Tensor, classes: list[list[int]]) -> torch.Tensor:
    """Class indices [B, D, H, W] -> float region masks [B, R, D, H, W]. Classes in no region
    (and so beyond the table) are outside every region."""
    size = max(max(region) for region in classes) + 1
    lookup = torch.zeros(len(classes), size + 1, device=target.device)  # the last column: outside
    for r, region in enumerate(classes):
        lookup[r, region] = 1.0
    return lookup[:, target.clamp(max=size)].permute(1, 0, *range(2, target.dim() + 1))


def nested_class_probabilities(region_probabilities: torch.Tensor) -> torch.Tensor:
    """Sigmoid region probabilities [R, ...] -> class probabilities [R + 1, ...] summing to 1.
    Each region's probability is capped by the one before (a voxel cannot be more likely in
    the inner region than in the outer one that contains it)."""
    capped = torch.cummin(region_probabilities, dim=0).values
    outer = torch.cat([torch.ones_like(capped[:1]), capped])
    inner = torch.cat([capped, torch.zeros_like(capped[:1])])
    return outer - inner


def nested_labels(class_probabilities: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """The class of each voxel from nested class probabilities [R + 1, ...], as nnU-Net paints
    regions: the number of regions whose probability exceeds 0.5 (region i's probability is
    the sum of the classes >= i). Argmax would differ where an inner region is likelier than
    not but its class is not the likeliest one."""
    inner = class_probabilities[1:]
    if isinstance(inner, np.ndarray):
        return (np.cumsum(inner[::-1], axis=0)[::-1] > 0.5).sum(axis=0).astype(np.uint8)
    return (torch.flip(torch.cumsum(torch.flip(inner, (0,)), 0), (0,)) > 0.5).sum(0)


def class_probabilities(outputs: torch.Tensor, regions: bool) -> torch.Tensor:
    """[K, ...] class probabilities from a model's blended outputs (channels first): softmax,
    or for a region model its sigmoid region probabilities turned into nested classes."""
    if regions:
        return nested_class_probabilities(torch.sigmoid(outputs))
    return torch.softmax(outputs, dim=0)


def region_dice(output_classes: np.ndarray, label: np.ndarray, classes: list[list[int]]) -> list[float]:
    """Dice of each region (1 when both are empty, as BraTS) between a region model's output
    classes (region i is every output class >= i) and a map of training class indices."""
    from ..evaluation.metrics import dice

    return [dice(output_classes >= i, np.isin(label, region)) for i, region in enumerate(classes, start=1)]
