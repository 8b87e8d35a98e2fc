"""The `medtuning` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

EXIT_USAGE = 2


class CommandError(Exception):
    """A user-facing failure: printed as one clear line, exit code 2."""


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    from .models import DECODERS, TUNING_METHODS

    parser.add_argument("--backbone", default="vit_base_patch16_224", help="timm vit_* or swin_* model name")
    parser.add_argument("--decoder", default="upernet", choices=list(DECODERS))
    parser.add_argument("--tuning", default="med_adapter", choices=list(TUNING_METHODS))
    parser.add_argument("--alpha", type=int, default=6, help="Med-Adapter bottleneck reduction ratio")
    parser.add_argument("--in-channels", type=int, default=4)
    parser.add_argument("--classes", type=int, default=4, help="output classes, background included")
    parser.add_argument("--img-size", type=int, default=None, help="in-plane slice size (default 128 px)")


def cmd_model_info(args: argparse.Namespace) -> int:
    from .models import build_model

    try:
        model = build_model(
            backbone=args.backbone, decoder=args.decoder, tuning=args.tuning, alpha=args.alpha,
            in_channels=args.in_channels, num_classes=args.classes, img_size=args.img_size,
        )
    except ValueError as error:
        raise CommandError(str(error)) from error
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
    from .segment_command import run_segment

    return run_segment(args)


def _add_segment_parser(sub) -> None:
    seg = sub.add_parser("segment", help="segment volumes with an adapter set")
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
                     help="in-plane tile in px (default: the model's slice size; ViTs accept any patch multiple)")
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


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="medtuning", description=__doc__)
    parser.add_argument("--version", action="version", version=f"medtuning {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("model-info", help="parameter counts of a model configuration")
    _add_model_arguments(info)
    info.add_argument("--json", action="store_true", help="print one JSON object {total, tuned, inserted}")
    info.set_defaults(func=cmd_model_info)
    _add_segment_parser(sub)
    from .library_commands import add_library_parsers

    add_library_parsers(sub)
    from .finetune_command import add_finetune_parser

    add_finetune_parser(sub)
    from .evaluate_command import add_evaluate_parser

    add_evaluate_parser(sub)
    from .compare_command import add_compare_parser

    add_compare_parser(sub)
    from .demo_command import add_demo_parser

    add_demo_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .errors import MedTuningError

    try:
        return args.func(args)
    except (CommandError, MedTuningError) as error:
        print(f"medtuning: error: {error}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
