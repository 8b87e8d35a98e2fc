"""`medtuning compare`: the paper's comparison table on your data.

Each tuning method is fine-tuned in its own process (so its peak memory is its own) on the
same split with the same seed, then evaluated on the validation cases on their original
grids. Usage:

    medtuning compare --methods med_adapter,full,head --out results/ -- --data brats.csv \\
        --labels necrosis,edema,non-enhancing,enhancing --backbone vit_small_patch14_dinov2 --epochs 20
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from .datasets import load_dataset
from .errors import InputError
from .evaluate_command import evaluate_cases, parse_regions
from .image_io import write_json
from .library import Library
from .metrics import summarise
from .models import TUNING_METHODS
from .predictor import Segmenter
from .set_loader import SetLoader, config_from_manifest


def add_compare_parser(sub) -> None:
    p = sub.add_parser("compare", help="fine-tune several tuning methods on one split and tabulate them")
    p.add_argument("--methods", default="med_adapter,full,head", help=f"comma-separated: {', '.join(TUNING_METHODS)}")
    p.add_argument("--out", required=True, help="directory for the sets, runs and results")
    p.add_argument("--regions", default=None, help="brats, kits or NAME=V,V;...")
    p.add_argument("finetune_args", nargs=argparse.REMAINDER, help="after --: the arguments of `finetune`")
    p.set_defaults(func=run_compare)


def option(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def run_compare(args: argparse.Namespace) -> int:
    passthrough = [a for a in args.finetune_args if a != "--"]
    if option(passthrough, "--data") is None:
        raise InputError("compare needs the finetune arguments after --, including --data")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in TUNING_METHODS]
    if unknown:
        raise InputError(f"unknown methods {unknown}; choose from {', '.join(TUNING_METHODS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    library = Library(option(passthrough, "--library"))
    dataset = load_dataset(option(passthrough, "--data"))
    rows = []
    for method in methods:
        target = out / f"{method}.safetensors"
        cmd = [sys.executable, "-m", "MedTuningCore", "finetune", *passthrough, "--tuning", method,
               "-o", str(target), "--run-dir", str(out / f"{method}.run"), "--progress", "json"]
        print(f"compare: training {method}...", file=sys.stderr, flush=True)
        run = subprocess.run(cmd, capture_output=True, text=True)
        done = [json.loads(line) for line in run.stdout.splitlines() if line.startswith('{"event": "done"')]
        if run.returncode not in (0, 130) or not done:
            rows.append({"method": method, "error": (run.stderr.strip().splitlines() or ["failed"])[-1]})
            continue
        segmenter = Segmenter.from_set(str(target), SetLoader(library))
        manifest = segmenter.adapter_set.manifest
        labels = {lb["name"]: lb["value"] for lb in manifest["task"]["labels"]}
        val_names = set(manifest["provenance"]["validation_cases"])
        regions = parse_regions(args.regions, list(labels.values()))
        per_case = evaluate_cases(segmenter, [c for c in dataset.cases if c.name in val_names], labels, regions)
        from .models import build_model

        counts = build_model(**config_from_manifest(manifest).to_dict()).parameter_counts()
        rows.append({"method": method, "tuned": counts["tuned"], "inserted": counts["inserted"],
                     "summary": summarise(per_case), "seconds_per_step": done[0]["seconds_per_step"],
                     "peak_memory_mb": done[0]["peak_memory_mb"], "cases": sorted(val_names),
                     "structures": list(regions) or list(labels)})
    write_json(out / "compare.json", rows)
    print(markdown_table(rows))
    return 0 if all("error" not in r for r in rows) else 1


def markdown_table(rows: list[dict]) -> str:
    structures = next((r["structures"] for r in rows if "structures" in r), [])  # regions, else labels
    head = ["method", "tuned (M)", "inserted (M)"] + [f"Dice {s}" for s in structures] + \
           [f"HD95 {s}" for s in structures] + ["s / step", "peak MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | failed: {r['error']} |")
            continue
        dice = [f"{100 * r['summary'][s]['dice_mean']:.1f}" for s in structures]
        hd = [f"{r['summary'][s]['hd95_mean']:.1f}" for s in structures]
        lines.append("| " + " | ".join([r["method"], f"{r['tuned'] / 1e6:.3f}", f"{r['inserted'] / 1e6:.3f}",
                                        *dice, *hd, f"{r['seconds_per_step']:.2f}",
                                        f"{r['peak_memory_mb']:.0f}"]) + " |")
    return "\n".join(lines)
