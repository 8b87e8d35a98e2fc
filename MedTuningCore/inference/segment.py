"""`segment()`: the Python API for one case, the same as `medtuning segment` (which calls it).

    from MedTuningCore import segment
    result = segment(["flair.nii.gz", "t1c.nii.gz"], "brats-glioma", "seg.seg.nrrd")
    result.labels  # a SimpleITK image on the input's grid

A set is an installed set's name, a set file, or a model description (a JSON file or string,
or key=value pairs); several sets segment one case together and their labels are merged.
Every problem a user can cause raises a MedTuningError naming the file and the fix, before any
output is written.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io.atomic import write_json
from ..io.images import check_output_path, load_case, write_image
from ..io.seg_nrrd import write_label_map
from ..progress import ProgressCallback
from .segmenter import SegmentationResult, Segmenter, SetDescription

PathLike = str | os.PathLike
INFERENCE_OPTIONS = ("device", "tta", "overlap", "batch_size", "compile", "window_depth", "tile_size",
                     "whole_slices", "amp")


def is_description(spec: str) -> bool:
    """A model description (JSON or key=value) rather than an adapter set name or file."""
    return spec.endswith(".json") or spec.lstrip().startswith("{") or "=" in spec


def load_segmenters(specs: Sequence[str], library: PathLike | None = None,
                    inference: dict[str, Any] | None = None) -> list[Segmenter]:
    """One Segmenter per set; adapter sets share their backbone through one SetLoader.
    `inference` overrides the sets' own inference options (device, tta, overlap...)."""
    from ..sets.library import Library
    from ..sets.loader import SetLoader

    unknown = set(inference or {}) - set(INFERENCE_OPTIONS)
    if unknown:
        raise InputError(f"unknown inference options {sorted(unknown)}; use {', '.join(INFERENCE_OPTIONS)}")
    overrides = {k: v for k, v in (inference or {}).items() if v is not None}
    loader = SetLoader(Library(library))
    segmenters = []
    for spec in specs:
        if is_description(spec):
            description = SetDescription.parse(spec)
            if overrides:
                description.inference = replace(description.inference, **overrides)
            segmenters.append(Segmenter.from_description(description))
        else:
            segmenters.append(Segmenter.from_set(spec, loader, overrides))
    return segmenters


def segment(inputs: Sequence[PathLike], sets: str | Sequence[str], output: PathLike | None = None, *,
            probabilities: PathLike | None = None, overwrite: bool = False, resample_channels: bool = False,
            library: PathLike | None = None, progress: ProgressCallback | None = None,
            **inference: Any) -> SegmentationResult:
    """Segment one case (one file per channel, a 4D file, or a DICOM folder) and, when
    `output` is given, write the label map there (`.seg.nrrd`: a Slicer segmentation)."""
    specs = [sets] if isinstance(sets, str) else list(sets)
    if not specs:
        raise InputError("give at least one set")
    outputs = [check_output_path(p, overwrite) for p in (output, probabilities) if p is not None]
    start = time.perf_counter()
    segmenters = load_segmenters(specs, library, inference)
    load_seconds = time.perf_counter() - start
    paths = [str(p) for p in inputs]
    if len(segmenters) > 1:
        if probabilities is not None:
            raise InputError("several sets at once work on one case and give merged labels, not probabilities")
        return segment_with_several(segmenters, paths, outputs[0] if outputs else None, resample_channels)
    segmenter = segmenters[0]
    result = segmenter.segment_files(paths, resample_channels, probabilities is not None, progress)
    start = time.perf_counter()
    if probabilities is not None:
        write_image(result.probabilities, outputs[-1])
    if output is not None:
        write_label_map(result.labels, outputs[0], segmenter.label_entries())
    # set and backbone loading first: start-up is reported apart from the work on the case
    result.seconds = {"load": load_seconds, **result.seconds, "write": time.perf_counter() - start}
    return result


def segment_with_several(segmenters: list[Segmenter], paths: list[str], output: Path | None,
                         resample_channels: bool) -> SegmentationResult:
    """Several sets on one case: labels merged by `merge.merge_segmentations`' rule; the value
    table goes beside the output as OUTPUT.labels.json."""
    from .merge import merge_segmentations

    channels = {s.in_channels for s in segmenters}
    if len(channels) != 1:
        raise InputError("sets segmented together must take the same channels")
    case = load_case(paths, channels.pop(), None, resample_channels)
    merged, table = merge_segmentations(segmenters, case.channels)
    if output is not None:
        write_label_map(merged, output, merged_segments(segmenters))
        write_json(output.with_name(output.name.split(".")[0] + ".labels.json"), [vars(t) for t in table], indent=2)
    return SegmentationResult(labels=merged, probabilities=None)


def merged_segments(segmenters: list[Segmenter]) -> list[dict]:
    """The sets' label entries with the values `merge_segmentations` gives them (set k's class i
    becomes i plus the class counts of sets 1..k-1); a name two sets share gets its set's name."""
    entries, offset = [], 0
    for index, segmenter in enumerate(segmenters):
        set_name = segmenter.adapter_set.name if segmenter.adapter_set else f"set{index + 1}"
        entries += [(set_name, {**entry, "value": offset + i})
                    for i, entry in enumerate(segmenter.label_entries(), start=1)]
        offset += segmenter.model.config.num_classes - 1
    counts = Counter(entry["name"] for _, entry in entries)
    return [entry if counts[entry["name"]] == 1 else {**entry, "name": f"{set_name} {entry['name']}"}
            for set_name, entry in entries]
