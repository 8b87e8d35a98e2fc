"""Train the adapter sets shipped in Resources/AdapterSets with `medtuning finetune`.

    .venv/bin/python scripts/train_shipped_sets.py brain-tissue [--work DIR] [--resume]
    .venv/bin/python scripts/train_shipped_sets.py brats-glioma [--work DIR] [--resume]
    .venv/bin/python scripts/train_shipped_sets.py brats-glioma-vitb   # GPU + ImageNet-21k weights

Each recipe writes its training data description into a work folder, runs the project's own
`medtuning finetune` with the arguments below (recorded in the set's manifest), and copies
the set into Resources/AdapterSets. On a 2-core CPU brain-tissue takes 40 minutes and
brats-glioma about 40 (36 min of training in run 13, on an AVX-512 VM); `--resume` continues
a stopped run from its last epoch. (The shipped brats-glioma was trained by
bench/recipe_cv.py with the same settings, and its manifest also carries the
cross-validation figures; a set this script writes does not.)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from MedTuningCore.data.mni_template import TEMPLATE_LICENSE, TISSUE_LABELS, load_template  # noqa: E402
from MedTuningCore.io.atomic import copy_file_atomic  # noqa: E402

SHIPPED = ROOT / "Resources" / "AdapterSets"
BRATS = ROOT.parent / "shared" / "data" / "brats2013"
BACKBONE = "vit_small_patch14_dinov2"

RECIPES = {
    "brain-tissue": [
        "--backbone", BACKBONE, "--decoder", "unet_stem", "--tuning", "med_adapter_paper", "--max-minutes", "40",
        "--foreground-fraction", "0.67",
        "--labels", ",".join(f"{v}:{n}" for v, n in TISSUE_LABELS.items()), "--channels", "T1",
        "--spacing", "1.5,1.5,1.5", "--slice-size", "112", "--patch-depth", "32", "--batch-size", "2",
        "--epochs", "12", "--iterations", "40", "--val-every", "3", "--augmentation", "strong",
        "--val-names", "mni152-check", "--seed", "0", "--modality", "MR T1 (skull-stripped)",
        "--license", f"non-restrictive: {TEMPLATE_LICENSE}",
        "--description", "Grey and white matter on skull-stripped T1 MRI (a demonstration set)",
        "--training-data", "ONE image: the MNI ICBM152 2009a symmetric T1 average bundled in PyPI nilearn "
        "0.14.1, labelled by thresholding its grey- and white-matter probability maps at 0.5, with strong "
        "spatial and intensity augmentation. The validation case is the same template: there is no "
        "independent data, so the validation Dice measures fit, not generalisation.",
    ],
    # The recipe chosen by 4-fold cross-validation (docs/results/recipe_cv.md: runs 4-8 chose the
    # paper's adapter start, run 11 kept 250 steps), on all 4 cases with no validation case. The
    # shipped set was trained with these settings on a 2-core CPU by
    # `bench/recipe_cv.py run --plan cpu-final` (the same Trainer, float32); this command is the
    # same training for anyone, on any device (bench/recipe_cv.py's took 36 minutes).
    "brats-glioma": [
        "--backbone", BACKBONE, "--decoder", "unet_stem", "--tuning", "med_adapter_paper",
        "--labels", "1:necrosis,2:edema,3:non-enhancing,4:enhancing", "--channels", "FLAIR,T1c",
        "--spacing", "1.5,1.5,1.5", "--slice-size", "126", "--patch-depth", "32", "--batch-size", "2",
        "--epochs", "5", "--iterations", "50", "--warmup-epochs", "1", "--foreground-fraction", "0.67",
        "--augmentation", "strong", "--val-cases", "0", "--seed", "0", "--max-minutes", "0",
        "--modality", "MR FLAIR + T1c (z-scored in the brain)",
        "--license", "CC BY-NC-SA 3.0 (non-commercial, share-alike; inherited from the BraTS 2013 data)",
        "--description", "Glioma sub-regions on brain MRI: necrosis, edema, non-enhancing and enhancing tumour",
        "--training-data", "4 cases of BraTS 2013 (Menze et al. 2015, IEEE TMI; pat0003-pat0006 as "
        "redistributed by deepmedic). Far too few for clinical use.",
    ],
    # The paper's configuration (Table 8: ViT-B/16 ImageNet-21k + UPerNet, lr 2e-3, 250 epochs,
    # 25 warm-up, batch 16, 128^3 crops). Needs a GPU and the ImageNet-21k weights, which these
    # machines cannot download: with a network, finetune fetches them from timm's hub; without,
    # `medtuning backbones import vit_base_patch16_224.orig_in21k model.safetensors` first.
    # Med-Adapters started as the official code starts them (med_adapter_paper). Not run by us
    # (the one GPU lease went to the cross-validation of the few-case recipe); not shipped.
    "brats-glioma-vitb": [
        "--backbone", "vit_base_patch16_224.orig_in21k", "--decoder", "upernet", "--tuning", "med_adapter_paper",
        "--labels", "1:necrosis,2:edema,3:non-enhancing,4:enhancing", "--channels", "FLAIR,T1c",
        "--slice-size", "128", "--patch-depth", "128", "--batch-size", "16",
        "--epochs", "250", "--warmup-epochs", "25", "--iterations", "4", "--val-every", "10", "--lr", "2e-3",
        "--augmentation", "strong", "--val-names", "pat0006", "--seed", "0", "--device", "cuda",
        "--modality", "MR FLAIR + T1c (z-scored in the brain)",
        "--license", "CC BY-NC-SA 3.0 (non-commercial, share-alike; inherited from the BraTS 2013 data)",
        "--description", "Glioma sub-regions, the paper's ViT-B/16 + UPerNet configuration",
        "--training-data", "3 cases of BraTS 2013 (pat0003, pat0004, pat0005), validated on pat0006.",
    ],
}


def brain_tissue_data(work: Path) -> Path:
    """The template as two CSV rows: 'mni152' trains and an identical copy 'mni152-check'
    validates (finetune keeps validation cases out of training, so the copy has its own name)."""
    t1, labels = load_template()
    rows = []
    for name in ("mni152", "mni152-check"):
        folder = work / name
        folder.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(t1, str(folder / "t1.nii.gz"), True)
        sitk.WriteImage(labels, str(folder / "tissue.nii.gz"), True)
        rows.append(f"{name}/t1.nii.gz,{name}/tissue.nii.gz")
    csv = work / "dataset.csv"
    csv.write_text("T1,label\n" + "\n".join(rows) + "\n")
    return csv


def brats_data(work: Path) -> Path:
    cases = sorted(p for p in BRATS.glob("pat*") if p.is_dir())
    if len(cases) != 4:
        raise SystemExit(f"{BRATS}: expected the 4 BraTS 2013 cases of ../shared/data")
    rows = [f"{c}/Flair_subtrMeanDivStd.nii.gz,{c}/T1c_subtrMeanDivStd.nii.gz,{c}/OTMultiClass.nii.gz"
            for c in cases]  # the CSV names each case after its label's folder: pat0003, ...
    work.mkdir(parents=True, exist_ok=True)
    csv = work / "dataset.csv"
    csv.write_text("FLAIR,T1c,label\n" + "\n".join(rows) + "\n")
    return csv


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", choices=sorted(RECIPES))
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: ../medtuning-work/RECIPE)")
    parser.add_argument("--resume", action="store_true", help="continue the run in the work folder")
    parser.add_argument("--library", default=None)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    work = (args.work or ROOT.parent / "medtuning-work" / args.recipe).resolve()
    output = work / f"{args.recipe}.safetensors"
    run_dir = work / "run"
    library = ["--library", args.library] if args.library else []
    if args.resume:
        cmd = ["finetune", "--resume", str(run_dir), "--progress", "json"]
    else:
        csv = brain_tissue_data(work) if args.recipe == "brain-tissue" else brats_data(work)
        device = [] if "--device" in RECIPES[args.recipe] else ["--device", args.device]
        cmd = ["finetune", "--data", str(csv), *RECIPES[args.recipe], "--name", args.recipe, "-o", str(output),
               "--run-dir", str(run_dir), *device, "--progress", "json", *library]
    print("medtuning " + " ".join(cmd), flush=True)
    code = subprocess.call([sys.executable, "-m", "MedTuningCore", *cmd], cwd=ROOT)
    if code != 0:
        return code
    if args.recipe not in ("brain-tissue", "brats-glioma"):
        print(f"wrote {output}")
        return 0
    from set_terminology import apply_terminology  # finetune knows label names only: add their codes
    from shipped_releases import file_at_head, release_new_version

    SHIPPED.mkdir(parents=True, exist_ok=True)
    shipped = SHIPPED / output.name
    # the release this one replaces is the committed file, which users have (not the working
    # tree's, which an earlier retrain that was never committed may have overwritten)
    previous = work / f"previous-{output.name}"
    released = file_at_head(args.recipe, previous)
    copy_file_atomic(output, shipped)  # never picked up half-copied
    print(f"copied {output} to {SHIPPED}")
    apply_terminology(args.recipe, shipped)
    if released:  # libraries holding the earlier release get this one on its next use
        print(f"{shipped}: version {release_new_version(args.recipe, previous, SHIPPED)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
