"""`medtuning finetune`: train an adapter set on annotated cases.

Stages, with plain files between them (nnU-Net style): the run directory holds run.json
(the arguments, so `--resume DIR` needs nothing else), checkpoint.safetensors (every
epoch), best.safetensors, history.json and curves.png; the adapter set is written last.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.datasets import DatasetError, LabelSpec, load_dataset, prepare, validate
from ..data.preprocessing import ChannelNormalization, Preprocessing
from ..errors import InputError
from ..io.images import write_json
from ..models.med_adapter import DEFAULT_REFERENCE_DEPTH
from ..models.network import assemble_model, model_config, prepare_backbone
from ..progress import ProgressPrinter
from ..sets.adapter_set import make_manifest, save_adapter_set
from ..sets.library import Library
from ..sets.loader import SetLoader, config_from_manifest
from ..training.trainer import Trainer, TrainingConfig, write_history

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
    p.add_argument("--tuning", default="med_adapter")
    p.add_argument("--decoder", default="upernet")
    p.add_argument("--alpha", type=int, default=6)
    p.add_argument("--slice-size", type=int, default=None, help="in-plane size of training patches and tiles")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--iterations", type=int, default=50, help="steps per epoch")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--patch-depth", type=int, default=32, help="slices per training patch")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup-epochs", type=int, default=2)
    p.add_argument("--ce-weight", type=float, default=1.0, help="cross-entropy weight (0: the paper's Dice only)")
    p.add_argument("--accumulate", type=int, default=1, help="gradient accumulation steps")
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--val-cases", type=int, default=None, help="validation cases (default: 20%%, at least 1)")
    p.add_argument("--val-names", help="validation cases by name, comma-separated (instead of a random split)")
    p.add_argument("--folds", type=int, default=None, help="k-fold cross-validation: the number of folds")
    p.add_argument("--fold", type=int, default=0, help="with --folds: which fold (0-based) validates")
    p.add_argument("--augmentation", choices=["paper", "strong"], default="paper",
                   help="paper: flips, scale and shift; strong: also rotation, scaling, noise, blur, gamma, "
                        "low resolution and bias field (for a handful of cases)")
    p.add_argument("--val-every", type=int, default=1)
    p.add_argument("--early-stop", type=int, default=None, help="validations without improvement before stopping")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--spacing", help="target spacing x,y,z in mm (default: keep)")
    p.add_argument("--normalization", default="zscore", help="zscore | percentile | ct:LOW:HIGH | none")
    p.add_argument("--crop-foreground", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--run-dir", help="where checkpoints go (default: OUTPUT without suffix + '.run')")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR exactly where it stopped")
    p.add_argument("--cancel-file", help="stop (and write the best set) when this file appears")
    p.add_argument("--license", default="", help="licence of the set (inherit your data's)")
    p.add_argument("--description", default="")
    p.add_argument("--modality", default="")
    p.add_argument("--training-data", default="", help="describe the training data for the manifest")
    p.add_argument("--library", default=None)
    p.add_argument("--progress", choices=["auto", "json", "none"], default="auto")
    p.set_defaults(func=run_finetune)


def preprocessing_from(args: argparse.Namespace, channels: int) -> Preprocessing:
    if args.normalization.startswith("ct:"):
        _, low, high = args.normalization.split(":")
        norm = ChannelNormalization("ct", window=(float(low), float(high)))
    else:
        norm = ChannelNormalization(args.normalization)
    spacing = tuple(float(v) for v in args.spacing.split(",")) if args.spacing else None
    return Preprocessing(spacing=spacing, normalization=[norm] * channels, crop_foreground=args.crop_foreground)


def split(names: list[str], val_cases: int | None, seed: int, val_names: list[str] | None = None,
          folds: int | None = None, fold: int = 0) -> tuple[list[int], list[int]]:
    """(training, validation) case indices: named validation cases; fold `fold` of `folds`
    over a seeded permutation (every case validates in exactly one fold); or a seeded random
    20 %% (or `val_cases`)."""
    if val_names and (folds is not None or val_cases is not None):
        raise InputError("give one of --val-names, --folds or --val-cases, not several")
    if folds is not None and val_cases is not None:
        raise InputError("give --folds or --val-cases, not both")
    if val_names:
        val_names = sorted(set(val_names))
        unknown = [n for n in val_names if n not in names]
        if unknown:
            raise InputError(f"--val-names: no cases named {unknown}; the dataset has {names}")
        val = sorted(names.index(n) for n in val_names)
        return [i for i in range(len(names)) if i not in val], val
    order = np.random.default_rng(seed).permutation(len(names))
    if folds is not None:
        if not 2 <= folds <= len(names) or not 0 <= fold < folds:
            raise InputError(f"--folds {folds} --fold {fold}: need 2 <= folds <= {len(names)} cases and "
                             f"0 <= fold < folds")
        val = np.array_split(order, folds)[fold]
        return sorted(set(order.tolist()) - set(val.tolist())), sorted(val.tolist())
    n_val = max(1, round(0.2 * len(names))) if val_cases is None else val_cases
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())


@dataclass
class FinetuneOutcome:
    model: Any
    result: Any
    output: Path
    validation: list  # the prepared validation cases
    run_dir: Path


def run_finetune(args: argparse.Namespace) -> int:
    outcome = finetune(args)
    if outcome is None:
        return 0
    result = outcome.result
    summary = {"event": "done", "output": str(outcome.output), "best_epoch": result.best_epoch,
               "validation_dice": result.best_dice, "cancelled": result.cancelled,
               "seconds_per_step": result.seconds_per_step, "peak_memory_mb": result.peak_memory_mb}
    if args.progress == "json":
        print(json.dumps(summary), flush=True)
    else:
        print(f"wrote {outcome.output} (best epoch {result.best_epoch}, validation Dice "
              f"{json.dumps({k: round(v, 4) for k, v in result.best_dice.items()})})"
              f"{'; cancelled early' if result.cancelled else ''}", file=sys.stderr)
    return EXIT_CANCELLED if result.cancelled else 0


def finetune(args: argparse.Namespace) -> FinetuneOutcome | None:
    """Train and write the set; returns what a caller may inspect (None on ranks > 0)."""
    if args.resume:
        run_dir = Path(args.resume)
        saved = json.loads((run_dir / "run.json").read_text())
        resume = True
        args = argparse.Namespace(**{**saved, "resume": str(run_dir), "progress": args.progress,
                                     "cancel_file": args.cancel_file or saved.get("cancel_file")})
    else:
        if not args.data or not args.output or not (args.from_set or args.backbone):
            raise InputError("finetune needs --data, -o OUTPUT and --from SET or --backbone NAME")
        run_dir = Path(args.run_dir or str(Path(args.output).with_suffix("")) + ".run")
        resume = False
    output = Path(args.output)
    if not output.parent.is_dir():
        raise InputError(f"{output}: the directory {output.parent} does not exist")
    library = Library(args.library)
    dataset = load_dataset(args.data, read_labels=not args.labels)  # --labels replaces dataset.json's
    start_set = library.get(args.from_set) if args.from_set else None

    labels = LabelSpec.parse(args.labels) if args.labels else dataset.labels
    if labels is None and start_set is not None:
        names = [lb["name"] for lb in start_set.manifest["task"]["labels"]]
        labels = LabelSpec([lb["value"] for lb in start_set.manifest["task"]["labels"]], names)
    if labels is None:
        raise InputError("give --labels (the dataset does not name its labels)")
    channel_names = (args.channels.split(",") if args.channels else dataset.channel_names
                     or ([c["name"] for c in start_set.manifest["task"]["channels"]] if start_set else []))
    in_channels = len(channel_names) or len(dataset.cases[0].images)
    channel_names = channel_names or [f"channel{i}" for i in range(in_channels)]
    val_names = [n.strip() for n in args.val_names.split(",") if n.strip()] if getattr(args, "val_names", None) \
        else None
    train_idx, val_idx = split([c.name for c in dataset.cases], args.val_cases, args.seed, val_names,
                               getattr(args, "folds", None), getattr(args, "fold", 0))
    try:
        validate(dataset, labels, in_channels, min_cases=len(val_idx) + 1)
    except DatasetError as error:
        raise InputError(str(error)) from None

    import torch

    torch.manual_seed(args.seed)  # the fresh adapters and decoder: the same start for the same seed
    model, backbone_sha, preprocessing = build_training_model(args, library, start_set, labels, in_channels)
    progress = None if args.progress == "none" else ProgressPrinter(args.progress)
    log = progress or (lambda e: None)
    log({"event": "progress", "stage": "preparing", "fraction": 0.0})
    prepared = [prepare(c, labels, preprocessing, in_channels) for c in dataset.cases]
    train = [prepared[i] for i in train_idx]
    val = [prepared[i] for i in val_idx]
    config = TrainingConfig(
        epochs=args.epochs, iterations_per_epoch=args.iterations, batch_size=args.batch_size,
        patch=(args.patch_depth, model.config.img_size, model.config.img_size), lr=args.lr,
        warmup_epochs=args.warmup_epochs, ce_weight=args.ce_weight, accumulate=args.accumulate,
        grad_checkpointing=args.grad_checkpointing, val_every=args.val_every, early_stop=args.early_stop,
        seed=args.seed, device=args.device, augmentation=getattr(args, "augmentation", "paper"))
    trainer = Trainer(model, train, val, config, run_dir, labels.names, progress, args.cancel_file)
    if trainer.rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            write_json(run_dir / "run.json", {k: v for k, v in vars(args).items() if k != "func"})
    if resume and trainer.checkpoint_path.exists():
        trainer.resume()
    result = trainer.fit()
    if trainer.rank != 0:
        return None
    write_history(run_dir, result.history)
    plot_curves(run_dir, result.history)
    model.load_state_dict(result.best_tensors, strict=False)
    manifest = make_manifest(
        model, backbone_sha, args.name or output.name.split(".")[0], channel_names, labels.names,
        description=args.description, license=args.license or "unspecified", modality=args.modality,
        preprocessing=preprocessing.to_dict(),
        inference={"overlap": 0.5, "blend": "gaussian", "tta": False},
        provenance={
            "training_data": args.training_data or dataset.description, "cases": len(train),
            "validation_cases": [prepared[i].name for i in val_idx], "training_cases": [p.name for p in train],
            "epochs": result.epochs_run, "best_epoch": result.best_epoch,
            "date": time.strftime("%Y-%m-%d"), "label_values": labels.values,
            "started_from": start_set.name if start_set else f"backbone {model.config.backbone}",
            "training": config.to_dict(), "cancelled": result.cancelled,
            "curves": [{k: v for k, v in h.items()} for h in result.history],
            "seconds_per_step": result.seconds_per_step, "peak_memory_mb": result.peak_memory_mb,
        },
        metrics={"validation_dice": result.best_dice, "validation_mean_dice": result.best_score}
        if result.best_score is not None else {},
        backbone_source=start_set.manifest["backbone"].get("source", "") if start_set else "",
        label_values=labels.values,
    )
    save_adapter_set(output, manifest, result.best_tensors)
    return FinetuneOutcome(model, result, output, val, run_dir)


def build_training_model(args, library: Library, start_set, labels: LabelSpec, in_channels: int):
    """(model, backbone SHA-256, preprocessing) from a starting set or a bare backbone."""
    if start_set is not None:
        config = config_from_manifest(start_set.manifest)
        if config.in_channels != in_channels:
            raise InputError(f"the set {start_set.name} takes {config.in_channels} channels, "
                             f"the data has {in_channels}")
        loader = SetLoader(library)
        same_labels = config.num_classes == labels.num_classes
        if same_labels:
            model = loader.model_for(start_set)
        else:  # new labels: the same adapters and decoder trunk, a fresh classifier
            config = model_config(config.backbone, config.decoder, config.tuning, in_channels, labels.num_classes,
                                  config.alpha, config.img_size, config.reference_depth, config.backbone_kwargs)
            record = library.backbones.verify(config.backbone)
            model = assemble_model(config, prepare_backbone(config, str(record.path)), pretrained_encoder=True)
            state = model.state_dict()
            keep = {k: v for k, v in start_set.tensors.items() if k in state and state[k].shape == v.shape}
            model.load_state_dict(keep, strict=False)
        model.train()
        preprocessing = Preprocessing.from_dict(start_set.manifest["preprocessing"])
        return model, start_set.backbone_sha256, preprocessing
    try:
        record = library.backbones.resolve(args.backbone, allow_download=True)
    except Exception as error:
        raise InputError(str(error)) from None
    config = model_config(args.backbone, args.decoder, args.tuning, in_channels, labels.num_classes, args.alpha,
                          args.slice_size, DEFAULT_REFERENCE_DEPTH, None)
    model = assemble_model(config, prepare_backbone(config, str(record.path)), pretrained_encoder=True)
    return model, record.sha256, preprocessing_from(args, in_channels)


def plot_curves(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """Loss and validation Dice per epoch as curves.png (needs matplotlib; skipped without)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    if not history:
        return
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [h["epoch"] for h in history]
    ax[0].plot(epochs, [h["loss"] for h in history], marker="o")
    ax[0].set(title="training loss", xlabel="epoch")
    val = [h for h in history if "val_dice" in h]
    for name in (val[0]["val_dice"] if val else {}):
        ax[1].plot([h["epoch"] for h in val], [h["val_dice"][name] for h in val], marker="o", label=name)
    ax[1].set(title="validation Dice", xlabel="epoch", ylim=(0, 1))
    if val:
        ax[1].legend()
    fig.tight_layout()
    tmp = run_dir / ".curves.png.tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(run_dir / "curves.png")
