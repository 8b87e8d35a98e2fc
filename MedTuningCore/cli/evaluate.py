"""`medtuning evaluate`: segment annotated cases with a set and measure against the labels."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..data.datasets import load_dataset
from ..errors import InputError
from ..evaluation.metrics import REGION_PRESETS, case_metrics, summarise
from ..evaluation.montage import blend, grey, write_png
from ..inference.segmenter import Segmenter
from ..io.images import read_image
from ..sets.library import Library
from ..sets.loader import SetLoader


def add_evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="Dice, HD95, surface Dice and volumes of a set on annotated cases")
    p.add_argument("--set", required=True, dest="set_spec", help="adapter set (name or file)")
    p.add_argument("--data", required=True, help="dataset folder (dataset.json) or CSV of channel and label files")
    p.add_argument("--regions", default=None,
                   help="label groups: 'brats', 'kits', or NAME=V,V;NAME=V (default: brats for BraTS-like labels)")
    p.add_argument("--tolerance", type=float, default=1.0, help="surface Dice tolerance in mm")
    p.add_argument("--cases", default=None, help="only these case names, comma-separated")
    p.add_argument("--json", dest="json_out", help="write all metrics to this JSON file")
    p.add_argument("--report", help="directory for per-case CSV and PNG overlays")
    p.add_argument("--device", default=None)
    p.add_argument("--library", default=None)
    p.set_defaults(func=run_evaluate)


def parse_regions(text: str | None, label_values: list[int]) -> dict[str, list[int]]:
    if text is None:
        return REGION_PRESETS["brats"] if set(label_values) == {1, 2, 3, 4} else {}
    if text in REGION_PRESETS:
        return REGION_PRESETS[text]
    regions = {}
    for item in filter(None, text.split(";")):
        name, _, values = item.partition("=")
        try:
            regions[name.strip()] = [int(v) for v in values.split(",")]
        except ValueError:
            raise InputError(f"--regions {text!r}: expected NAME=V,V;NAME=V") from None
    return regions


def run_evaluate(args: argparse.Namespace) -> int:
    segmenter = Segmenter.from_set(args.set_spec, SetLoader(Library(args.library)),
                                   {"device": args.device} if args.device else None)
    manifest = segmenter.adapter_set.manifest
    labels = {label["name"]: label["value"] for label in manifest["task"]["labels"]}
    regions = parse_regions(args.regions, list(labels.values()))
    dataset = load_dataset(args.data, read_labels=False)  # the labels come from the set(s)
    cases = [c for c in dataset.cases if not args.cases or c.name in args.cases.split(",")]
    if not cases:
        raise InputError(f"{args.data}: no cases to evaluate")
    report = Path(args.report) if args.report else None
    per_case = evaluate_cases(segmenter, cases, labels, regions, args.tolerance, report)
    summary = summarise(per_case)
    document = {"set": manifest["name"], "version": manifest["version"], "data": str(args.data),
                "tolerance_mm": args.tolerance, "regions": regions, "cases": per_case, "summary": summary}
    if args.json_out:
        tmp = Path(args.json_out).with_name(f".{Path(args.json_out).name}.tmp")
        tmp.write_text(json.dumps(document, indent=1))
        tmp.replace(args.json_out)
    if report:
        write_table(report / "metrics.csv", per_case)
    for structure, values in summary.items():
        parts = [f"{m.replace('_mean', '')} {values[m]:.3f}" for m in ("dice_mean", "hd95_mean", "surface_dice_mean")
                 if m in values]
        print(f"{structure}: {', '.join(parts)}")
    return 0


def evaluate_cases(segmenter: Segmenter, cases: list, labels: dict[str, int], regions: dict[str, list[int]],
                   tolerance: float = 1.0, report: Path | None = None) -> dict[str, dict]:
    """Segment each case on its own grid and measure it against its label map."""
    if report:
        report.mkdir(parents=True, exist_ok=True)
    per_case = {}
    for case in cases:
        result = segmenter.segment_files([str(i) for i in case.images])
        reference = read_image(case.label)
        pred = sitk.GetArrayFromImage(result.labels).astype(np.int32)
        ref = np.rint(sitk.GetArrayFromImage(reference)).astype(np.int32)
        per_case[case.name] = case_metrics(pred, ref, reference.GetSpacing()[::-1], labels, regions, tolerance)
        print(f"{case.name}: " + ", ".join(f"{k} Dice {v['dice']:.3f}" for k, v in per_case[case.name].items()),
              file=sys.stderr)
        if report:
            write_overlay(report / f"{case.name}.png", read_image(case.images[0]), ref, pred)
    return per_case


def write_table(path: Path, per_case: dict) -> None:
    rows = [{"case": case, "structure": structure, **metrics}
            for case, structures in per_case.items() for structure, metrics in structures.items()]
    fields = ["case", "structure"] + sorted({k for r in rows for k in r} - {"case", "structure"})
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def write_overlay(path: Path, image: sitk.Image, ref: np.ndarray, pred: np.ndarray) -> None:
    """Reference (left) and prediction (right) over the slice with most reference foreground."""
    volume = sitk.GetArrayFromImage(image).astype(np.float32)
    k = int(np.argmax((ref > 0).sum(axis=(1, 2)))) if (ref > 0).any() else volume.shape[0] // 2
    gray = grey(volume[k], *np.percentile(volume[k], (1, 99)))
    panels = [blend(gray, labels) for labels in (ref[k], pred[k])]
    both = np.concatenate([panels[0], np.zeros((gray.shape[0], 4, 3), np.uint8), panels[1]], axis=1)
    write_png(path, both[::-1])
