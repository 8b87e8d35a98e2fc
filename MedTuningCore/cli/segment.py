"""`medtuning segment`: one case, or many with --batch, with one loaded model."""

from __future__ import annotations

import argparse
import glob
import json
import re
import sys
import time
from pathlib import Path

from ..errors import InputError, MedTuningError
from ..inference.segment import load_segmenters as api_load_segmenters
from ..inference.segment import segment
from ..inference.segmenter import Segmenter
from ..io.atomic import write_csv
from ..io.images import READABLE_SUFFIXES, check_output_path, image_suffix
from ..io.seg_nrrd import write_label_map
from ..progress import ProgressPrinter

EXIT_SOME_FAILED = 1
CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def inference_overrides(args: argparse.Namespace) -> dict:
    return {k: v for k, v in {
        "device": args.device, "tta": args.tta, "overlap": args.overlap,
        "batch_size": args.batch_size, "compile": args.compile,
        "window_depth": args.window_depth, "tile_size": args.tile_size,
        "whole_slices": args.whole_slices, "amp": args.amp,
    }.items() if v is not None}


def load_segmenters(args: argparse.Namespace) -> list[Segmenter]:
    return api_load_segmenters(args.set_spec, args.library, inference_overrides(args))


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
    # torch and the model code are imported by now (cmd_segment imported this module)
    imports = time.perf_counter() - args.started if hasattr(args, "started") else None
    if args.batch:
        if len(args.set_spec) > 1:
            raise InputError("several --set at once work on one case, without --batch")
        return run_batch(args)
    progress = None if args.progress == "none" else ProgressPrinter(args.progress)
    result = segment(args.inputs, args.set_spec, args.output, probabilities=args.probabilities,
                     overwrite=args.overwrite, resample_channels=args.resample_channels, library=args.library,
                     progress=progress, **inference_overrides(args))
    if len(args.set_spec) > 1:
        print(f"merged {len(args.set_spec)} sets into {args.output}; label table: "
              f"{Path(args.output).with_name(Path(args.output).name.split('.')[0] + '.labels.json')}", file=sys.stderr)
    if args.progress == "json":
        seconds = dict(result.seconds)
        if imports is not None:
            seconds = {"imports": imports, **seconds, "startup": imports + seconds.get("load", 0.0)}
        print(json.dumps({"event": "done", "output": str(args.output), "seconds": seconds}))
    return 0


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
    write_csv(path, rows, ["case", "status", "seconds", "output", "error"], delimiter="\t")
