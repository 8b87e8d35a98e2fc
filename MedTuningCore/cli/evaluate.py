"""`medtuning evaluate`: segment annotated cases with a set and measure against the labels."""

from __future__ import annotations

import argparse
import sys

from ..evaluation.evaluate import evaluate


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


def run_evaluate(args: argparse.Namespace) -> int:
    document = evaluate(args.set_spec, args.data, regions=args.regions,
                        cases=args.cases.split(",") if args.cases else None, tolerance=args.tolerance,
                        report=args.report, json_out=args.json_out, device=args.device, library=args.library,
                        log=lambda line: print(line, file=sys.stderr))
    for structure, values in document["summary"].items():
        parts = [f"{m.replace('_mean', '')} {values[m]:.3f}" for m in ("dice_mean", "hd95_mean", "surface_dice_mean")
                 if m in values]
        print(f"{structure}: {', '.join(parts)}")
    return 0
