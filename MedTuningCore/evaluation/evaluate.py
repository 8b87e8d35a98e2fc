"""`evaluate()`: Dice, HD95, surface Dice and volumes of a set on annotated cases, per case
and summarised, with optional overlays (the logic of `medtuning evaluate`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from ..data.datasets import load_dataset
from ..data.regions import REGION_PRESETS, nested_groups, regions_by_value
from ..errors import InputError
from ..inference.segmenter import Segmenter
from ..io.atomic import write_csv, write_json
from ..io.images import read_image
from ..sets.manifest import Manifest
from .metrics import case_metrics, summarise
from .montage import blend, grey, write_png

PathLike = str | os.PathLike


def evaluate(set_spec: str, data: PathLike, *, regions: str | None = None, cases: list[str] | None = None,
             tolerance: float = 1.0, report: PathLike | None = None, json_out: PathLike | None = None,
             device: str | None = None, library: PathLike | None = None,
             log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Segment the dataset's cases with the set and measure them against their labels; returns
    (and writes to `json_out`) {"set", "version", "data", "tolerance_mm", "regions", "cases", "summary"}."""
    from ..sets.library import Library
    from ..sets.loader import SetLoader

    segmenter = Segmenter.from_set(set_spec, SetLoader(Library(library)), {"device": device} if device else None)
    manifest = segmenter.adapter_set.manifest
    labels = manifest.task.values_by_name()
    region_values = parse_regions(regions, list(labels.values()))
    trained = trained_regions(manifest)
    if trained:  # a region set: score its regions, and each class on all the values it gathers
        region_values = region_values if regions else trained
        for label, group in zip(manifest.task.labels, nested_groups(list(trained.values()))):
            if label.name in trained:  # classes named after their regions (an nnU-Net region dataset.json)
                del labels[label.name]  # the regions are what was trained, and are scored under those names
            elif len(group) > 1:
                del labels[label.name]
                region_values[label.name] = group
    dataset = load_dataset(data, read_labels=False)  # the labels come from the set
    chosen = [c for c in dataset.cases if not cases or c.name in cases]
    if not chosen:
        raise InputError(f"{data}: no cases to evaluate")
    report_dir = Path(report) if report else None
    per_case = evaluate_cases(segmenter, chosen, labels, region_values, tolerance, report_dir, log)
    document = {"set": manifest.name, "version": manifest.version, "data": str(data), "tolerance_mm": tolerance,
                "regions": region_values, "cases": per_case, "summary": summarise(per_case)}
    if json_out:
        write_json(json_out, document)
    if report_dir:
        write_table(report_dir / "metrics.csv", per_case)
    return document


def trained_regions(manifest: Manifest) -> dict[str, list[int]]:
    """A region set's regions by label value, in the model's (nested) order; {} for other sets.
    The model stores them as class indices; the provenance names them (its JSON keys may have
    been reordered) and gives each class's label value."""
    indices, provenance = manifest.model.regions, manifest.provenance
    if not indices or "label_values" not in provenance:
        return {}
    recorded = provenance.get("regions") or {}
    if len(recorded) == len(indices):  # by value, every value of a class that gathers several; nested: largest first
        return dict(sorted(recorded.items(), key=lambda item: -len(item[1])))
    values = [[provenance["label_values"][c - 1] for c in region] for region in indices]
    names = {tuple(sorted(v)): name for name, v in provenance.get("regions", {}).items()}
    return {names.get(tuple(sorted(v)), f"region {i + 1}"): v for i, v in enumerate(values)}


def parse_regions(text: str | None, label_values: list[int]) -> dict[str, list[int]]:
    """The regions to report: as given, or BraTS's for BraTS-like labels, else none."""
    if text is None:
        return REGION_PRESETS["brats"] if set(label_values) == {1, 2, 3, 4} else {}
    return regions_by_value(text)


def evaluate_cases(segmenter: Segmenter, cases: list, labels: dict[str, int], regions: dict[str, list[int]],
                   tolerance: float = 1.0, report: Path | None = None,
                   log: Callable[[str], None] | None = None) -> dict[str, dict]:
    """Segment each case on its own grid and measure it against its label map; `log` gets one
    line per case."""
    if report:
        report.mkdir(parents=True, exist_ok=True)
    per_case = {}
    for case in cases:
        result = segmenter.segment_files([str(i) for i in case.images])
        reference = read_image(case.label)
        pred = sitk.GetArrayFromImage(result.labels).astype(np.int32)
        ref = np.rint(sitk.GetArrayFromImage(reference)).astype(np.int32)
        per_case[case.name] = case_metrics(pred, ref, reference.GetSpacing()[::-1], labels, regions, tolerance)
        if log is not None:
            log(f"{case.name}: " + ", ".join(f"{k} Dice {v['dice']:.3f}" for k, v in per_case[case.name].items()))
        if report:
            write_overlay(report / f"{case.name}.png", read_image(case.images[0]), ref, pred)
    return per_case


def write_table(path: Path, per_case: dict) -> None:
    rows = [{"case": case, "structure": structure, **metrics}
            for case, structures in per_case.items() for structure, metrics in structures.items()]
    fields = ["case", "structure"] + sorted({k for r in rows for k in r} - {"case", "structure"})
    write_csv(path, rows, fields)


def write_overlay(path: Path, image: sitk.Image, ref: np.ndarray, pred: np.ndarray) -> None:
    """Reference (left) and prediction (right) over the slice with most reference foreground."""
    volume = sitk.GetArrayFromImage(image).astype(np.float32)
    k = int(np.argmax((ref > 0).sum(axis=(1, 2)))) if (ref > 0).any() else volume.shape[0] // 2
    gray = grey(volume[k], *np.percentile(volume[k], (1, 99)))
    panels = [blend(gray, labels) for labels in (ref[k], pred[k])]
    both = np.concatenate([panels[0], np.zeros((gray.shape[0], 4, 3), np.uint8), panels[1]], axis=1)
    write_png(path, both[::-1])
