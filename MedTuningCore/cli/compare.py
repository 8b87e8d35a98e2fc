"""`medtuning compare`: the paper's comparison table on your data (see evaluation/compare.py).
Usage:

    medtuning compare --methods med_adapter_paper,full,head --out results/ -- --data brats.csv \\
        --labels necrosis,edema,non-enhancing,enhancing --backbone vit_small_patch14_dinov2 --epochs 20
"""

from __future__ import annotations

import argparse

from ..evaluation.compare import compare, markdown_table
from ..models import TUNING_METHODS
from ..models.tuning import DEFAULT_TUNING
from ..training.finetune import FinetuneConfig
from .finetune import finetune_arguments


def add_compare_parser(sub) -> None:
    p = sub.add_parser("compare", help="fine-tune several tuning methods on one split and tabulate them")
    # the Med-Adapter variant new sets get (the ablation's best), against full fine-tuning and the head alone
    p.add_argument("--methods", default=f"{DEFAULT_TUNING},full,head",
                   help=f"comma-separated (default: {DEFAULT_TUNING},full,head): {', '.join(TUNING_METHODS)}")
    p.add_argument("--out", required=True, help="directory for the sets, runs and results")
    p.add_argument("--regions", default=None, help="brats, kits or NAME=V,V;...")
    p.add_argument("--folds", type=int, default=None,
                   help="k-fold cross-validation: train each method k times, every case validated once")
    p.add_argument("finetune_args", nargs=argparse.REMAINDER, help="after --: the arguments of `finetune`")
    p.set_defaults(func=run_compare)


def run_compare(args: argparse.Namespace) -> int:
    # the finetune options go through finetune's own parser (so --data=x, abbreviations and
    # errors behave as in `medtuning finetune`) into one FinetuneConfig
    base = FinetuneConfig.from_dict(vars(finetune_arguments([a for a in args.finetune_args if a != "--"])))
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    rows = compare(methods, base, args.out, args.folds, args.regions)
    print(markdown_table(rows))
    return 0 if all("error" not in r for r in rows) else 1
