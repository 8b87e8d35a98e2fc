"""The `medtuning` command line."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from collections.abc import Collection, Sequence
from typing import NamedTuple

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


class Command(NamedTuple):
    module: str  # the module, relative to this package, whose `adder` adds the command's parser
    adder: str
    help: str  # the line in `medtuning --help`; the same as the one `adder` gives (a test checks)


# The command modules import torch and more, which takes seconds (and once failed on Windows for a
# POSIX-only import): `medtuning --help` names the commands from this table alone, and a command's
# module is imported only when that command is given. In the order of `medtuning --help`.
COMMANDS: dict[str, Command] = {
    "model-info": Command(".app", "_add_model_info_parser", "parameter counts of a model configuration"),
    "segment": Command(".app", "_add_segment_parser", "segment volumes with an adapter set"),
    "sets": Command(".library", "add_library_parsers", "the local library of adapter sets"),
    "backbones": Command(".library", "add_library_parsers", "cached backbone weights"),
    "doctor": Command(".library", "add_library_parsers", "versions, devices, library, and what is missing"),
    "finetune": Command(".finetune", "add_finetune_parser", "train an adapter set on annotated cases"),
    "evaluate": Command(".evaluate", "add_evaluate_parser",
                        "Dice, HD95, surface Dice and volumes of a set on annotated cases"),
    "compare": Command(".compare", "add_compare_parser",
                       "fine-tune several tuning methods on one split and tabulate them"),
    "demo": Command(".demo", "add_demo_parser",
                    "segment the MNI152 T1 template with the shipped brain-tissue set (offline)"),
}


# Commands that run a network; they take --threads.
THREADED_COMMANDS = ("segment", "finetune", "evaluate", "compare", "demo")


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for PyTorch (default: all cores; $OMP_NUM_THREADS when it is set)")


def use_cpu_threads(count: int | None) -> None:
    """Set PyTorch's CPU thread count, which is process-wide: only the command line does this, a
    program using the library keeps its own setting. The default, all cores, is what segmenting
    and training were measured with; an OMP_NUM_THREADS the user set wins over it."""
    from ..errors import InputError

    if count is not None and count < 1:
        raise InputError(f"--threads {count}: give at least 1")
    if count is None and os.environ.get("OMP_NUM_THREADS"):
        return  # PyTorch read it at start-up
    import torch

    torch.set_num_threads(count or os.cpu_count() or 1)


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    from ..models import DECODERS, TUNING_METHODS
    from ..models.network import DEFAULT_SLICE_SIZE
    from ..models.tuning import DEFAULT_TUNING

    parser.add_argument("--backbone", default="vit_base_patch16_224", help="timm vit_* or swin_* model name")
    parser.add_argument("--decoder", default="upernet", choices=list(DECODERS))
    parser.add_argument("--tuning", default=DEFAULT_TUNING, choices=list(TUNING_METHODS))
    parser.add_argument("--alpha", type=int, default=6, help="Med-Adapter bottleneck reduction ratio")
    parser.add_argument("--in-channels", type=int, default=4)
    parser.add_argument("--classes", type=int, default=4, help="output classes, background included")
    parser.add_argument("--img-size", type=int, default=None,
                        help=f"in-plane slice size (default {DEFAULT_SLICE_SIZE} px)")


def cmd_model_info(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from ..models import build_model

    try:
        model = build_model(
            backbone=args.backbone, decoder=args.decoder, tuning=args.tuning, alpha=args.alpha,
            in_channels=args.in_channels, num_classes=args.classes, img_size=args.img_size,
        )
    except ValueError as error:
        raise UsageError(str(error)) from None
    counts = model.parameter_counts()
    if args.json:
        print(json.dumps(counts))
        return 0
    total = counts["total"]
    # The paper gives percentages of the plain model (what full fine-tuning trains).
    plain = total - counts["inserted"]
    cfg = model.config
    print(f"{cfg.backbone} + {cfg.decoder}, tuning {cfg.tuning}, {cfg.in_channels} channels, "
          f"{cfg.num_classes} classes, {cfg.img_size} px slices")
    print(f"  total     {total:>13,}  ({total / 1e6:.3f} M)")
    for key in ("tuned", "inserted"):
        print(f"  {key:<9} {counts[key]:>13,}  ({counts[key] / 1e6:.3f} M, {100 * counts[key] / plain:.2f}% of full)")
    return 0


def cmd_segment(args: argparse.Namespace) -> int:
    from .segment import run_segment

    return run_segment(args)


def _add_segment_parser(sub) -> None:
    seg = sub.add_parser("segment", help=COMMANDS["segment"].help)
    seg.add_argument("inputs", nargs="+", metavar="INPUT",
                     help="one file per channel (or one 4D file), a DICOM directory; with --batch: "
                          "directories or globs of cases (multi-channel cases named CASE_0000.nii.gz, CASE_0001...)")
    seg.add_argument("--set", required=True, dest="set_spec", action="append",
                     help="an installed adapter set (name) or set file; repeat to segment with several sets and "
                          "merge; or a model description (.json or key=value pairs; random weights)")
    seg.add_argument("--library", default=None, help="library directory (default: $MEDTUNING_HOME or user data)")
    seg.add_argument("-o", "--output", required=True, help="label map file (with --batch: output directory)")
    seg.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (default: the set's, auto)")
    seg.add_argument("--tta", action="store_true", default=None, help="average over flips of all three axes")
    seg.add_argument("--overlap", type=float, default=None, help="window overlap in [0, 1) (default 0.5)")
    seg.add_argument("--batch-size", type=int, default=None, help="windows per forward pass")
    seg.add_argument("--window-depth", type=int, default=None,
                     help="slices per slab (default: whole volume up to 2 x the model's reference depth)")
    seg.add_argument("--tile-size", type=int, default=None,
                     help="in-plane tile in px (default: the set's slice size; ViTs accept any patch multiple)")
    seg.add_argument("--whole-slices", action=argparse.BooleanOptionalAction, default=None,
                     help="ViT sets take each slice whole (up to twice their slice size): about 2x faster on the "
                          "CPU, Dice may change slightly (docs/INFERENCE.md); default: the set's choice, tiles")
    seg.add_argument("--amp", choices=["auto", "bf16", "fp16", "none"], default=None,
                     help="reduced precision: auto (default) uses bf16 where the GPU or CPU computes it "
                          "natively (on a CPU: and faster than float32, by a short probe), float32 elsewhere; "
                          "none: always float32")
    seg.add_argument("--compile", action="store_true", default=None, help="torch.compile the model (CUDA)")
    seg.add_argument("--probabilities", metavar="FILE", help="also write class probabilities (vector image)")
    seg.add_argument("--resample-channels", action="store_true",
                     help="resample channels onto the first channel's grid instead of refusing")
    seg.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    seg.add_argument("--batch", action="store_true", help="segment many cases with one loaded model")
    seg.add_argument("--output-format", default=".nii.gz", help="with --batch: output suffix (default .nii.gz)")
    seg.add_argument("--progress", choices=["auto", "json", "none"], default="auto",
                     help="a bar on a terminal, or JSON lines on stdout for programs")
    seg.set_defaults(func=cmd_segment)


def _add_model_info_parser(sub) -> None:
    info = sub.add_parser("model-info", help=COMMANDS["model-info"].help)
    _add_model_arguments(info)
    info.add_argument("--json", action="store_true", help="print one JSON object {total, tuned, inserted}")
    info.set_defaults(func=cmd_model_info)


def build_parser(full: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The `medtuning` parser. The commands named in `full` (default: all) get their whole parser,
    which imports their module; the others only their name and help line, enough for
    `medtuning --help` and for finding which command was given."""
    from .. import __version__

    parser = argparse.ArgumentParser(prog="medtuning", description=__doc__)
    parser.add_argument("--version", action="version", version=f"medtuning {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    # sets, backbones and doctor share one adder: wanting one of them adds all three
    wanted = {(c.module, c.adder) for name, c in COMMANDS.items() if full is None or name in full}
    for name, command in COMMANDS.items():
        if name in sub.choices:  # added already by its group's adder
            continue
        if (command.module, command.adder) in wanted:
            getattr(importlib.import_module(command.module, __package__), command.adder)(sub)
        else:  # no -h of its own: `medtuning NAME --help` is left to NAME's whole parser
            sub.add_parser(name, help=command.help, add_help=False)
    for name in THREADED_COMMANDS:
        if full is None or name in full:
            add_threads_argument(sub.choices[name])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    started = time.perf_counter()
    argv = sys.argv[1:] if argv is None else list(argv)
    # First which command (this pass alone answers --help, --version and a missing or unknown
    # command), then that command's whole parser.
    command = build_parser(full=()).parse_known_args(argv)[0].command
    args = build_parser(full={command}).parse_args(argv)
    args.started = started  # for the start-up time a command reports
    from ..errors import MedTuningError

    # The one error boundary: a user's mistake is one line and exit 2; Ctrl-C is exit 130.
    try:
        if args.command in THREADED_COMMANDS:
            use_cpu_threads(args.threads)
        return args.func(args)
    except MedTuningError as error:
        print(f"medtuning: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("medtuning: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
