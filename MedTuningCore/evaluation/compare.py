"""`compare()`: fine-tune several tuning methods on one split (or k folds) with the same seed,
each in its own process (so its peak memory is its own), evaluate every validation case on its
original grid, and tabulate them (the logic of `medtuning compare`)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from ..data.datasets import load_dataset
from ..errors import InputError
from ..inference.segmenter import Segmenter
from ..io.atomic import write_json
from ..models import TUNING_METHODS
from ..models.tuning import TUNING_WITHOUT_INSERTED
from ..sets.library import Library
from ..sets.loader import SetLoader, config_from_manifest
from ..training.finetune import FinetuneConfig, config_to_argv
from .evaluate import evaluate_cases, parse_regions
from .metrics import summarise


def compare(methods: list[str], base: FinetuneConfig, out: str | Path, folds: int | None = None,
            regions: str | None = None) -> list[dict]:
    """One row per method (its parameter counts, per-case and summary metrics, s/step, peak
    memory, or an error); also written to OUT/compare.json."""
    if base.data is None:
        raise InputError("compare needs the fine-tuning data (--data)")
    unknown = [m for m in methods if m not in TUNING_METHODS]
    if unknown:
        raise InputError(f"unknown methods {unknown}; choose from {', '.join(TUNING_METHODS)}")
    if base.max_minutes is None:  # a time budget would cut the slower methods shorter: unless asked,
        base = replace(base, max_minutes=0)  # every method runs its whole schedule
    if base.postprocessing == "auto":  # it would be chosen on the very cases compare scores:
        base = replace(base, postprocessing="none")  # each method is scored as its model predicts
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    library = Library(base.library)
    # as finetune reads it: dataset.json's labels unless --labels replaces them
    dataset = load_dataset(base.data, read_labels=base.labels is None)
    rows = [compare_method(method, base, out, library, dataset, folds, regions) for method in methods]
    write_json(out / "compare.json", rows)
    return rows


def compare_method(method: str, base: FinetuneConfig, out: Path, library: Library, dataset,
                   folds: int | None = None, regions: str | None = None) -> dict:
    """Train `method` on every fold (or the one split), evaluate each fold's validation cases
    on their original grids, and pool the per-case metrics."""
    fold_count, folds = folds, (list(range(folds)) if folds else [None])
    per_case: dict = {}
    runs = []
    for fold in folds:
        tag = method if fold is None else f"{method}.fold{fold}"
        target = out / f"{tag}.safetensors"
        config = replace(base, tuning=method, output=str(target), run_dir=str(out / f"{tag}.run"),
                         **({} if fold is None else {"folds": fold_count, "fold": fold}))
        if method in TUNING_WITHOUT_INSERTED:  # head-first epochs hold back inserted modules: these have none
            config = replace(config, head_first_epochs=0)
        cmd = [sys.executable, "-m", "MedTuningCore", "finetune", *config_to_argv(config), "--progress", "json"]
        print(f"compare: training {tag}...", file=sys.stderr, flush=True)
        run = subprocess.run(cmd, capture_output=True, text=True)
        done = [json.loads(line) for line in run.stdout.splitlines() if line.startswith('{"event": "done"')]
        if run.returncode not in (0, 130) or not done:
            return {"method": method, "error": f"{tag}: " + (run.stderr.strip().splitlines() or ["failed"])[-1]}
        segmenter = Segmenter.from_set(str(target), SetLoader(library))
        manifest = segmenter.adapter_set.manifest
        labels = manifest.task.values_by_name()
        val_names = set(manifest.provenance["validation_cases"])
        structures = parse_regions(regions, list(labels.values()))
        per_case.update(evaluate_cases(segmenter, [c for c in dataset.cases if c.name in val_names], labels,
                                       structures, log=lambda line: print(line, file=sys.stderr)))
        runs.append(done[0])
    from ..models import build_model

    counts = build_model(**config_from_manifest(manifest).to_dict()).parameter_counts()
    return {"method": method, "tuned": counts["tuned"], "inserted": counts["inserted"],
            "summary": summarise(per_case), "per_case": per_case, "folds": len(folds),
            "seconds_per_step": sum(r["seconds_per_step"] for r in runs) / len(runs),
            "peak_memory_mb": max(r["peak_memory_mb"] for r in runs), "cases": sorted(per_case),
            "structures": list(structures) or list(labels)}


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
