"""`medtuning segment`: one case, or many with --batch, with one loaded model."""

from __future__ import annotations

import argparse
import csv
import glob
import json
import re
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

from ..errors import InputError, MedTuningError
from ..inference.segmenter import Segmenter, SetDescription
from ..io.images import READABLE_SUFFIXES, check_output_path, image_suffix, write_image, write_json
from ..io.seg_nrrd import write_label_map
from ..progress import ProgressPrinter

EXIT_SOME_FAILED = 1
CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def is_description(spec: str) -> bool:
    """A model description (JSON or key=value) rather than an adapter set name or file."""
    return spec.endswith(".json") or spec.lstrip().startswith("{") or "=" in spec


def inference_overrides(args: argparse.Namespace) -> dict:
    return {k: v for k, v in {
        "device": args.device, "tta": args.tta, "overlap": args.overlap,
        "batch_size": args.batch_size, "compile": args.compile,
        "window_depth": args.window_depth, "tile_size": args.tile_size,
    }.items() if v is not None}


def load_segmenters(args: argparse.Namespace) -> list[Segmenter]:
    """One Segmenter per --set; adapter sets share their backbone through one SetLoader."""
    from ..sets.library import Library
    from ..sets.loader import SetLoader

    loader = SetLoader(Library(args.library))
    segmenters = []
    for spec in args.set_spec:
        if is_description(spec):
            description = SetDescription.parse(spec)
            overrides = inference_overrides(args)
            if overrides:
                description.inference = replace(description.inference, **overrides)
            segmenters.append(Segmenter.from_description(description))
        else:
            segmenters.append(Segmenter.from_set(spec, loader, inference_overrides(args)))
    return segmenters


def case_name(path: Path) -> str:
    suffix = image_suffix(path)
    return path.name[: -len(suffix)] if suffix and path.name.lower().endswith(suffix) else path.name


def find_cases(inputs: list[str], channels: int) -> dict[str, list[Path]]:
    """Cases from directories or globs; several channels follow nnU-Net's CASE_XXXX naming."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if image_suffix(f) in READABLE_SUFFIXES)
        else:
            matches = sorted(Path(m) for m in glob.glob(item))
            if not matches:
                raise InputError(f"{item}: matches no file")
            files += matches
    cases: dict[str, list[Path]] = {}
    for f in files:
        name = case_name(f)
        match = CHANNEL_SUFFIX.match(name)
        if channels > 1 and not match:
            raise InputError(f"{f}: with {channels} channels, name files CASE_0000{image_suffix(f)}, CASE_0001...")
        key = match.group("case") if match and channels > 1 else name
        cases.setdefault(key, []).append(f)
    return {k: sorted(v) for k, v in sorted(cases.items())}


def run_segment(args: argparse.Namespace) -> int:
    if len(args.set_spec) > 1:
        return run_several_sets(args)
    if args.batch:
        return run_batch(args)
    output = check_output_path(args.output, args.overwrite)
    probabilities = check_output_path(args.probabilities, args.overwrite) if args.probabilities else None
    segmenter = load_segmenters(args)[0]
    progress = None if args.progress == "none" else ProgressPrinter(args.progress)
    result = segmenter.segment_files(args.inputs, args.resample_channels, probabilities is not None, progress)
    if probabilities is not None:
        write_image(result.probabilities, probabilities)
    write_label_map(result.labels, output, segmenter.label_entries())
    if args.progress == "json":
        print(json.dumps({"event": "done", "output": str(output), "seconds": result.seconds}))
    return 0


def run_several_sets(args: argparse.Namespace) -> int:
    """Several sets on one case: labels merged by `merge.merge_segmentations`' rule."""
    from ..inference.merge import merge_segmentations
    from ..io.images import load_case

    if args.batch or args.probabilities:
        raise InputError("several --set at once work on one case, without --batch or --probabilities")
    output = check_output_path(args.output, args.overwrite)
    segmenters = load_segmenters(args)
    channels = {s.in_channels for s in segmenters}
    if len(channels) != 1:
        raise InputError("sets segmented together must take the same channels")
    case = load_case(args.inputs, channels.pop(), None, args.resample_channels)
    merged, table = merge_segmentations(segmenters, case.channels)
    labels_json = output.with_name(output.name.split(".")[0] + ".labels.json")
    write_label_map(merged, output, merged_segments(segmenters))
    write_json(labels_json, [vars(t) for t in table], indent=2)
    print(f"merged {len(segmenters)} sets into {output}; label table: {labels_json}", file=sys.stderr)
    return 0


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


def run_batch(args: argparse.Namespace) -> int:
    out_dir = Path(args.output)
    if not out_dir.is_dir():
        raise InputError(f"{out_dir}: output directory does not exist; create it first")
    segmenter = load_segmenters(args)[0]
    cases = find_cases(args.inputs, segmenter.in_channels)
    if not cases:
        raise InputError(f"{', '.join(args.inputs)}: no images found")
    rows = []
    for name, paths in cases.items():
        target = out_dir / f"{name}{args.output_format}"
        progress = None if args.progress == "none" else ProgressPrinter(args.progress, case=name)
        start = time.perf_counter()
        try:
            check_output_path(target, args.overwrite)
            result = segmenter.segment_files([str(p) for p in paths], args.resample_channels, False, progress)
            write_label_map(result.labels, target, segmenter.label_entries())
            rows.append({"case": name, "status": "ok", "output": str(target),
                         "seconds": f"{time.perf_counter() - start:.2f}", "error": ""})
        except (MedTuningError, RuntimeError) as error:
            rows.append({"case": name, "status": "failed", "output": "",
                         "seconds": f"{time.perf_counter() - start:.2f}", "error": str(error)})
            print(f"medtuning: {name}: failed: {error}", file=sys.stderr)
    write_summary(out_dir / "summary.tsv", rows)
    failed = sum(r["status"] != "ok" for r in rows)
    print(f"{len(rows) - failed} of {len(rows)} cases segmented; summary: {out_dir / 'summary.tsv'}",
          file=sys.stderr)
    return EXIT_SOME_FAILED if failed else 0


def write_summary(path: Path, rows: list[dict[str, str]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["case", "status", "seconds", "output", "error"], delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
