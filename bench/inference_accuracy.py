"""What the faster inference settings change in Dice, on the 4 shared BraTS cases.

    python bench/inference_accuracy.py [--set brats-glioma] [--variants fp32-tiles,fp32-whole,bf16-tiles,bf16-whole]

Each case is segmented by `Segmenter.segment_files` (the whole pipeline: resampling, windows,
restoring to the 1 mm grid, post-processing) with each variant, and scored against its
reference on the input grid: Dice of each class and of the BraTS regions (WT, TC, ET).
`fp32-tiles` is float32 on tiles of the set's slice size, overlap 0.5 (the default where the
CPU has no native bf16); `whole` takes each slice whole (`--whole-slices`); `bf16` runs under
bf16 autocast (the default where the CPU computes bf16 natively). The last lines give the
largest change of any Dice against `fp32-tiles`.

The 4 cases trained the shipped `brats-glioma`: the Dice values are fit figures, not
held-out figures; what this measures is the change between settings.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BRATS = ROOT.parent / "shared" / "data" / "brats2013"
CASES = ("pat0003", "pat0004", "pat0005", "pat0006")
FILES = ("Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz")
VARIANTS = {"fp32-tiles": {"amp": "none", "tiles": True}, "fp32-whole": {"amp": "none", "tiles": False},
            "bf16-tiles": {"amp": "bf16", "tiles": True}, "bf16-whole": {"amp": "bf16", "tiles": False}}


def scores(prediction, reference, labels: dict[str, int]) -> dict[str, float]:
    import numpy as np

    from MedTuningCore.data.regions import REGION_PRESETS
    from MedTuningCore.evaluation.metrics import dice

    out = {name: dice(prediction == value, reference == value) for name, value in labels.items()}
    for region, values in REGION_PRESETS["brats"].items():
        out[region] = dice(np.isin(prediction, values), np.isin(reference, values))
    return {k: float(v) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", default="brats-glioma")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    import SimpleITK as sitk

    from MedTuningCore.inference.segmenter import Segmenter

    results: dict[str, dict[str, dict[str, float]]] = {}
    seconds: dict[str, float] = {}
    for variant in args.variants.split(","):
        settings = VARIANTS[variant]
        segmenter = Segmenter.from_set(args.set, inference={"amp": settings["amp"], "device": "cpu"})
        segmenter.predictor.options.whole_slices = not settings["tiles"]
        labels = segmenter.adapter_set.manifest.task.values_by_name()
        results[variant] = {}
        for case in CASES:
            reference = sitk.GetArrayFromImage(sitk.ReadImage(str(BRATS / case / "OTMultiClass.nii.gz")))
            result = segmenter.segment_files([str(BRATS / case / f) for f in FILES])
            seconds[variant] = seconds.get(variant, 0.0) + result.seconds["inference"]
            results[variant][case] = scores(sitk.GetArrayFromImage(result.labels), reference, labels)
            print(f"{variant} {case}: " + ", ".join(f"{k} {v:.4f}" for k, v in results[variant][case].items()),
                  flush=True)
    names = list(next(iter(next(iter(results.values())).values())))
    print(f"\n# {time.strftime('%Y-%m-%d')}; command: python bench/inference_accuracy.py {' '.join(sys.argv[1:])}")
    print("| variant | inference s (4 cases) | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for variant, per_case in results.items():
        means = [sum(per_case[c][n] for c in CASES) / len(CASES) for n in names]
        print(f"| {variant} | {seconds[variant]:.1f} | " + " | ".join(f"{m:.4f}" for m in means) + " |")
    if "fp32-tiles" in results:
        base = results["fp32-tiles"]
        for variant, per_case in results.items():
            if variant == "fp32-tiles":
                continue
            change = max(abs(per_case[c][n] - base[c][n]) for c in CASES for n in names)
            mean_change = max(abs(sum(per_case[c][n] - base[c][n] for c in CASES) / len(CASES)) for n in names)
            print(f"- {variant} vs fp32-tiles: largest change of one case's Dice {change:.4f}; "
                  f"of a mean Dice {mean_change:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "inference_seconds": seconds}, indent=1))


if __name__ == "__main__":
    main()
