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


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="medtuning", description=__doc__)
    parser.add_argument("--version", action="version", version=f"medtuning {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("model-info", help="parameter counts of a model configuration")
    _add_model_arguments(info)
    info.add_argument("--json", action="store_true", help="print one JSON object {total, tuned, inserted}")
    info.set_defaults(func=cmd_model_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CommandError as error:
        print(f"medtuning: error: {error}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
