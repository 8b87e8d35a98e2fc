"""`medtuning finetune`: the options of training.finetune.FinetuneConfig on the command line,
and the summary printed at the end (see MedTuningCore/training/finetune.py for the stages)."""

from __future__ import annotations

import argparse
import json
import sys

from ..progress import ProgressPrinter

EXIT_CANCELLED = 130


def add_finetune_parser(sub) -> None:
    p = sub.add_parser("finetune", help="train an adapter set on annotated cases")
    p.add_argument("--data", help="dataset: folder with dataset.json (MSD / nnU-Net) or a CSV of channel and label "
                                  "files")
    p.add_argument("--labels", help="label names for values 1, 2, ... or VALUE:NAME pairs, comma-separated "
                                    "(default: from dataset.json or the starting set)")
    p.add_argument("--channels", help="channel names, comma-separated (default: from the dataset or set)")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--from", dest="from_set", help="start from this adapter set (name or file)")
    start.add_argument("--backbone", help="start from this backbone (timm name) with fresh adapters")
    p.add_argument("-o", "--output", help="the new adapter set (.safetensors)")
    p.add_argument("--name", help="set name (default: the output file's stem)")
    # the default is models.tuning.DEFAULT_TUNING and the names are models.TUNING_METHODS
    # (kept as literals so --help does not import torch; test_api keeps them equal)
    p.add_argument("--tuning", default="med_adapter_paper",
                   help="what is trained besides the decoder: med_adapter_paper (default: Med-Adapters started as "
                        "the paper does), med_adapter (up-projection started at zero), med_adapter_no_fft, "
                        "med_adapter_no_fusion, med_adapter_pre_block, med_adapter_no_conv5, med_adapter_late, head, "
                        "full, vpt_shallow, "
                        "vpt_deep, adapter, adaptformer, st_adapter, lora")
    p.add_argument("--decoder", default="unet_stem",
                   help="unet_stem (default: light U-Net with a full-resolution image stem), unet, upernet, setr_*, "
                        "swin_unet")
    p.add_argument("--alpha", type=int, default=6,
                   help="Med-Adapter bottleneck reduction ratio: hidden width = token width / alpha (default 6)")
    p.add_argument("--slice-size", type=int, default=None, help="in-plane size of training patches and tiles")
    p.add_argument("--epochs", type=int, default=50,
                   help="planned epochs (default 50); --max-minutes may shorten the schedule")
    p.add_argument("--iterations", type=int, default=50, help="steps per epoch (default 50)")
    p.add_argument("--batch-size", type=int, default=2, help="patches per step (default 2)")
    p.add_argument("--patch-depth", type=int, default=32, help="slices per training patch (default 32)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate of Adam (default 2e-3)")
    p.add_argument("--warmup-epochs", type=int, default=2,
                   help="epochs of linear warm-up before the cosine decay (default 2)")
    p.add_argument("--head-first-epochs", type=int, default=0,
                   help="train the decoder (and the method's other non-inserted parts) alone for this many epochs "
                        "before the inserted modules join (linear probing then fine-tuning; default 0)")
    p.add_argument("--ce-weight", type=float, default=1.0, help="cross-entropy weight (0: the paper's Dice only)")
    p.add_argument("--class-weights",
                   help="weigh each class's cross-entropy: 'auto' (sqrt of the most frequent class's voxel count "
                        "over the class's, in the training labels: background 1, a class 100 times rarer 10) "
                        "or one number per class, background first, comma-separated (default: equal)")
    p.add_argument("--regions", help="train nested regions as sigmoid outputs (nnU-Net's region training): 'brats' "
                                     "(WT=1,2,3,4;TC=1,3,4;ET=4), 'kits', or NAME=V,V;NAME=V, largest first (default: "
                                     "the nested regions an nnU-Net v2 dataset.json declares, if any)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="fit the training schedule into this many minutes, re-estimated after every epoch "
                        "(default 30; 0: no limit, run every epoch)")
    p.add_argument("--foreground-fraction", type=float, default=0.67,
                   help="share of training patches centred on a voxel of a randomly chosen class (each class "
                        "equally likely, as nnU-Net oversamples foreground)")
    p.add_argument("--accumulate", type=int, default=1, help="gradient accumulation steps")
    p.add_argument("--grad-checkpointing", action="store_true",
                   help="recompute the frozen blocks' activations in the backward pass: less memory, more time")
    p.add_argument("--amp", choices=["auto", "bf16", "none"], default="auto",
                   help="bf16 autocast: auto (default) where the device computes it natively (CUDA, CPUs with "
                        "bf16 instructions that a short probe finds faster than float32), float32 elsewhere; "
                        "none: always float32")
    p.add_argument("--val-cases", type=int, default=None, help="validation cases (default: 20%%, at least 1)")
    p.add_argument("--val-names", help="validation cases by name, comma-separated (instead of a random split)")
    p.add_argument("--folds", type=int, default=None, help="k-fold cross-validation: the number of folds")
    p.add_argument("--fold", type=int, default=0, help="with --folds: which fold (0-based) validates")
    p.add_argument("--augmentation", choices=["paper", "strong"], default="strong",
                   help="strong (default, for a handful of cases): flips, rotation, scaling, noise, blur, gamma, "
                        "low resolution and bias field; paper: flips, scale and shift only")
    p.add_argument("--val-every", type=int, default=1, help="validate every N epochs (default 1)")
    p.add_argument("--early-stop", type=int, default=None, help="validations without improvement before stopping")
    p.add_argument("--seed", type=int, default=0, help="random seed of the split, sampling and weights (default 0)")
    p.add_argument("--spacing", help="target spacing x,y,z in mm (default: keep)")
    p.add_argument("--normalization", default="zscore", help="zscore | percentile | ct:LOW:HIGH | none")
    p.add_argument("--crop-foreground", action="store_true",
                   help="crop each case to the box of its non-zero voxels in any channel (e.g. skull-stripped MRI)")
    # training.finetune.POSTPROCESSING_MODES as literals (no torch for --help; test_api keeps them equal)
    p.add_argument("--postprocessing", choices=["auto", "none", "largest"], default="auto",
                   help="what the set applies after inference: auto (default) keeps only the largest foreground "
                        "component if that raised the mean validation Dice and lowered no class, as nnU-Net "
                        "decides; none; largest")
    p.add_argument("--device", default="auto", help="auto (default: CUDA when present, else CPU), cpu, cuda, cuda:N")
    p.add_argument("--run-dir", help="where checkpoints go (default: OUTPUT without suffix + '.run')")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR exactly where it stopped")
    p.add_argument("--cancel-file", help="stop (and write the best set) when this file appears")
    p.add_argument("--license", default="", help="licence of the set (inherit your data's)")
    p.add_argument("--description", default="", help="what the set segments, for its manifest")
    p.add_argument("--modality", default="", help="imaging modality, for the manifest (e.g. MRI, CT)")
    p.add_argument("--training-data", default="", help="describe the training data for the manifest")
    p.add_argument("--library", default=None, help="library directory for --from names and backbone weights "
                                                   "(default: $MEDTUNING_HOME or user data)")
    p.add_argument("--progress", choices=["auto", "json", "none"], default="auto",
                   help="auto (default): a bar on a terminal, plain periodic lines in a log; json: one JSON "
                        "object per line; none: quiet")
    p.set_defaults(func=run_finetune)


def finetune_arguments(argv: list[str]) -> argparse.Namespace:
    """`medtuning finetune ARGV` parsed by the real parser (for commands that pass them on)."""
    parser = argparse.ArgumentParser(prog="medtuning")
    add_finetune_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["finetune", *argv])


def run_finetune(args: argparse.Namespace) -> int:
    from ..training.finetune import FinetuneConfig, finetune, resume  # torch: not for --help

    progress = None if args.progress == "none" else ProgressPrinter(args.progress)
    if args.resume:
        outcome = resume(args.resume, progress, args.cancel_file)
    else:
        outcome = finetune(FinetuneConfig.from_dict(vars(args)), progress)
    if outcome is None:
        return 0
    result = outcome.result
    summary = {"event": "done", "output": str(outcome.output), "best_epoch": result.best_epoch,
               "validation_dice": result.best_dice, "cancelled": result.cancelled,
               "seconds_per_step": result.seconds_per_step, "peak_memory_mb": result.peak_memory_mb,
               "postprocessing": outcome.postprocessing_choice}
    if args.progress == "json":
        print(json.dumps(summary), flush=True)
    else:
        print(f"wrote {outcome.output} (best epoch {result.best_epoch}, validation Dice "
              f"{json.dumps({k: round(v, 4) for k, v in result.best_dice.items()})})"
              f"{largest_component_note(outcome.postprocessing_choice)}"
              f"{'; cancelled early' if result.cancelled else ''}", file=sys.stderr)
    return EXIT_CANCELLED if result.cancelled else 0


def largest_component_note(choice: dict) -> str:
    """'; keeps only the largest component (...)' when the set applies that clean-up."""
    if choice.get("mode") == "largest":
        return "; keeps only the largest component (--postprocessing largest)"
    if choice.get("keep_largest_foreground"):
        dice = {k: round(v, 4) for k, v in choice["validation_dice_largest_component"].items()}
        return f"; keeps only the largest component, which raised it to {json.dumps(dice)}"
    return ""
