"""`medtuning compare`: the paper's comparison table on your data.

Each tuning method is fine-tuned in its own process (so its peak memory is its own) on the
same split with the same seed, then evaluated on the validation cases on their original
grids; with `--folds K` every method is trained K times and each case is validated once.
Usage:

    medtuning compare --methods med_adapter,full,head --out results/ -- --data brats.csv \\
        --labels necrosis,edema,non-enhancing,enhancing --backbone vit_small_patch14_dinov2 --epochs 20
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from ..data.datasets import load_dataset
from ..errors import InputError
from ..evaluation.metrics import summarise
from ..inference.segmenter import Segmenter
from ..io.images import write_json
from ..models import TUNING_METHODS
from ..sets.library import Library
from ..sets.loader import SetLoader, config_from_manifest
from .evaluate import evaluate_cases, parse_regions


def add_compare_parser(sub) -> None:
    p = sub.add_parser("compare", help="fine-tune several tuning methods on one split and tabulate them")
    p.add_argument("--methods", default="med_adapter,full,head", help=f"comma-separated: {', '.join(TUNING_METHODS)}")
    p.add_argument("--out", required=True, help="directory for the sets, runs and results")
    p.add_argument("--regions", default=None, help="brats, kits or NAME=V,V;...")
    p.add_argument("--folds", type=int, default=None,
                   help="k-fold cross-validation: train each method k times, every case validated once")
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
    # as finetune reads it: dataset.json's labels unless --labels replaces them
    dataset = load_dataset(option(passthrough, "--data"), read_labels=option(passthrough, "--labels") is None)
    rows = [compare_method(method, passthrough, args, out, library, dataset) for method in methods]
    write_json(out / "compare.json", rows)
    print(markdown_table(rows))
    return 0 if all("error" not in r for r in rows) else 1


def compare_method(method: str, passthrough: list[str], args: argparse.Namespace, out: Path, library: Library,
                   dataset) -> dict:
    """Train `method` on every fold (or the one split), evaluate each fold's validation cases
    on their original grids, and pool the per-case metrics."""
    folds = list(range(args.folds)) if args.folds else [None]
    per_case: dict = {}
    runs = []
    for fold in folds:
        tag = method if fold is None else f"{method}.fold{fold}"
        target = out / f"{tag}.safetensors"
        fold_args = [] if fold is None else ["--folds", str(args.folds), "--fold", str(fold)]
        cmd = [sys.executable, "-m", "MedTuningCore", "finetune", *passthrough, *fold_args, "--tuning", method,
               "-o", str(target), "--run-dir", str(out / f"{tag}.run"), "--progress", "json"]
        print(f"compare: training {tag}...", file=sys.stderr, flush=True)
        run = subprocess.run(cmd, capture_output=True, text=True)
        done = [json.loads(line) for line in run.stdout.splitlines() if line.startswith('{"event": "done"')]
        if run.returncode not in (0, 130) or not done:
            return {"method": method, "error": f"{tag}: " + (run.stderr.strip().splitlines() or ["failed"])[-1]}
        segmenter = Segmenter.from_set(str(target), SetLoader(library))
        manifest = segmenter.adapter_set.manifest
        labels = {lb["name"]: lb["value"] for lb in manifest["task"]["labels"]}
        val_names = set(manifest["provenance"]["validation_cases"])
        regions = parse_regions(args.regions, list(labels.values()))
        per_case.update(evaluate_cases(segmenter, [c for c in dataset.cases if c.name in val_names], labels,
                                       regions))
        runs.append(done[0])
    from ..models import build_model

    counts = build_model(**config_from_manifest(manifest).to_dict()).parameter_counts()
    return {"method": method, "tuned": counts["tuned"], "inserted": counts["inserted"],
            "summary": summarise(per_case), "per_case": per_case, "folds": len(folds),
            "seconds_per_step": sum(r["seconds_per_step"] for r in runs) / len(runs),
            "peak_memory_mb": max(r["peak_memory_mb"] for r in runs), "cases": sorted(per_case),
            "structures": list(regions) or list(labels)}


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
