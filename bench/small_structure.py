"""A small structure from 3 cases with `medtuning finetune`'s defaults (issue 13, item 6).

The issue asks that `medtuning finetune --data DIR --backbone ...` with no other options
gives a usable set on a small structure from 2-3 cases within 30 CPU minutes. The shared
data hold no spinal cord; the thinnest structure they have is BraTS's enhancing tumour,
a rim a few millimetres thick (the issue names it beside the 7 mm cord as "smaller than
one token"). So this bench makes a binary task of it, as a user with one small structure
would have: the enhancing-tumour voxels (value 4) of pat0004-pat0006 as label 1, FLAIR and
T1c as the channels, at their own 1 mm grid. `finetune` gets `--data`, `--backbone` and
`-o` only: it splits the 3 cases itself (2 train, 1 validates and picks the best epoch, so
its figure is a validation figure) and stops at its default 30-minute budget. The set is
then scored with `medtuning evaluate` on pat0003, which took part in nothing: chosen
before the run as the case of fold 0 in recipe_cv.py.

    python bench/small_structure.py --work WORK            # prepare, train, score
    python bench/small_structure.py --work WORK --score    # score an existing set again
    python bench/small_structure.py --work WORK --islands  # Dice with the largest component only

Needs the library's backbone (`medtuning backbones list`) and ../shared/data.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import SimpleITK as sitk

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "brats2013"
TRAINING_CASES = ("pat0004", "pat0005", "pat0006")
UNSEEN_CASE = "pat0003"
ENHANCING = 4
BACKBONE = "vit_small_patch14_dinov2"
CHANNELS = ("Flair", "T1c")


def write_dataset(folder: Path, cases: tuple[str, ...]) -> Path:
    """An nnU-Net v2 folder, as a user would bring one: the cases' FLAIR and T1c (linked,
    unchanged) and a binary enhancing label written here."""
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(exist_ok=True)
    for case in cases:
        for channel, name in enumerate(CHANNELS):
            link = folder / "imagesTr" / f"{case}_{channel:04d}.nii.gz"
            link.unlink(missing_ok=True)
            link.symlink_to(DATA / case / f"{name}_subtrMeanDivStd.nii.gz")
        label = sitk.ReadImage(str(DATA / case / "OTMultiClass.nii.gz"))
        binary = sitk.Cast(sitk.BinaryThreshold(label, ENHANCING, ENHANCING, 1, 0), sitk.sitkUInt8)
        sitk.WriteImage(binary, str(folder / "labelsTr" / f"{case}.nii.gz"))
    meta = {"name": "enhancing tumour (BraTS 2013, value 4 only)", "channel_names": dict(enumerate(CHANNELS)),
            "labels": {"background": 0, "enhancing": 1}, "numTraining": len(cases), "file_ending": ".nii.gz"}
    (folder / "dataset.json").write_text(json.dumps(meta, indent=1))
    return folder


def prepare(work: Path) -> tuple[Path, Path]:
    return write_dataset(work / "train", TRAINING_CASES), write_dataset(work / "unseen", (UNSEEN_CASE,))


def medtuning(*args: str) -> None:
    command = [sys.executable, "-m", "MedTuningCore", *args]
    print("$ medtuning " + " ".join(args), flush=True)
    subprocess.run(command, check=True)


def summary(set_file: Path, scores: Path, minutes: float | None) -> dict:
    from MedTuningCore.sets.adapter_set import read_manifest

    provenance = read_manifest(set_file).provenance
    kept = ("training_cases", "validation_cases", "epochs", "best_epoch", "stopped", "seconds_per_step",
            "postprocessing_choice", "peak_memory_mb", "curves", "training")
    return {"wall_minutes_of_finetune": minutes, "provenance": {k: provenance.get(k) for k in kept},
            "validation_dice (picked the best epoch)": read_manifest(set_file).metrics,
            "unseen_case": UNSEEN_CASE, "unseen_scores": json.loads(scores.read_text())}


def islands(set_file: Path) -> dict:
    """Dice on the set's validation case and on the unseen case, as segmented and with only the
    largest foreground component kept: what `--postprocessing auto` decides on the validation
    case, and what that does to the unseen one (for a set trained before it decided)."""
    from MedTuningCore.evaluation.metrics import dice
    from MedTuningCore.inference.postprocessing import PostProcessing, largest_foreground
    from MedTuningCore.inference.segmenter import Segmenter
    from MedTuningCore.sets.adapter_set import load_adapter_set
    from MedTuningCore.sets.library import Library
    from MedTuningCore.sets.loader import SetLoader

    adapter_set = load_adapter_set(set_file)
    segmenter = Segmenter.from_set(adapter_set, SetLoader(Library()))
    segmenter.description.postprocessing = PostProcessing()  # the set's own clean-up would hide the islands
    found = {}
    for case in (*adapter_set.manifest.provenance["validation_cases"], UNSEEN_CASE):
        channels = [sitk.ReadImage(str(DATA / case / f"{name}_subtrMeanDivStd.nii.gz")) for name in CHANNELS]
        labels = sitk.GetArrayFromImage(segmenter.segment_images(channels).labels) > 0
        largest = largest_foreground(labels.astype("uint8")) > 0
        reference = sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / case / "OTMultiClass.nii.gz"))) == ENHANCING
        components = sitk.ConnectedComponent(sitk.GetImageFromArray(labels.astype("uint8")), True)
        found[case] = {"dice": dice(labels, reference), "dice_largest_component": dice(largest, reference),
                       "predicted_ml": labels.sum() / 1000, "largest_component_ml": largest.sum() / 1000,
                       "reference_ml": reference.sum() / 1000,
                       "components": int(sitk.GetArrayFromImage(components).max())}
        print(case, found[case], flush=True)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="folder for the labels, the set and the scores")
    parser.add_argument("--score", action="store_true", help="only score the set already in WORK")
    parser.add_argument("--islands", action="store_true",
                        help="only measure the largest-component clean-up on the set in WORK (islands.json)")
    args = parser.parse_args()
    if args.islands:
        result = islands(args.work / "enhancing.safetensors")
        (args.work / "islands.json").write_text(json.dumps(result, indent=1))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    train, test = prepare(args.work)
    set_file, scores = args.work / "enhancing.safetensors", args.work / "unseen.json"
    minutes = None
    if not args.score:
        start = time.time()
        medtuning("finetune", "--data", str(train), "--backbone", BACKBONE, "-o", str(set_file))
        minutes = (time.time() - start) / 60
    medtuning("evaluate", "--set", str(set_file), "--data", str(test), "--json", str(scores))
    result = summary(set_file, scores, minutes)
    (args.work / "summary.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
