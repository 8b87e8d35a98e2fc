"""Fine-tuning as one Python call: `finetune(FinetuneConfig(...))`.

Stages, with plain files between them (nnU-Net style): the run folder holds run.json (the
configuration, so `resume(run_dir)` needs nothing else), checkpoint.safetensors (every epoch),
best.safetensors, history.json and curves.png; the adapter set is written last.

    from MedTuningCore import FinetuneConfig, finetune
    outcome = finetune(FinetuneConfig(data="Task01/", backbone="vit_small_patch14_dinov2",
                                      output="my-set.safetensors", epochs=20))
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..data.datasets import DatasetError, LabelSpec, load_dataset, prepare, validate
from ..data.preprocessing import ChannelNormalization, Preprocessing
from ..data.regions import RegionSpec, output_classes, parse_regions
from ..errors import InputError
from ..inference.postprocessing import PostProcessing, choose_postprocessing
from ..io.atomic import atomic_path, write_json
from ..models.med_adapter import DEFAULT_REFERENCE_DEPTH
from ..models.network import assemble_model, model_config, prepare_backbone
from ..models.tuning import DEFAULT_TUNING, TUNING_WITHOUT_INSERTED
from ..progress import ProgressCallback
from ..sets.adapter_set import make_manifest, save_adapter_set
from ..sets.library import Library
from ..sets.loader import SetLoader, config_from_manifest
from .losses import frequency_class_weights
from .trainer import Trainer, TrainingConfig, TrainingResult, write_history

#: A new user's run, with no options, ends within this many minutes (see Trainer.fit_to_time_budget)
DEFAULT_MAX_MINUTES = 30.0


@dataclass
class FinetuneConfig:
    """Everything a fine-tuning run needs (the options of `medtuning finetune`)."""

    data: str | None = None  # a folder with dataset.json (MSD / nnU-Net) or a CSV of channel and label files
    output: str | None = None  # the new adapter set (.safetensors)
    from_set: str | None = None  # start from this adapter set (name or file) ...
    backbone: str | None = None  # ... or from this backbone with fresh adapters
    labels: str | None = None  # names for values 1, 2, ... or VALUE:NAME pairs (default: dataset.json's)
    channels: str | None = None  # channel names, comma-separated
    name: str | None = None  # set name (default: the output file's stem)
    tuning: str = DEFAULT_TUNING
    decoder: str = "unet_stem"
    alpha: int = 6
    slice_size: int | None = None
    epochs: int = 50
    iterations: int = 50  # steps per epoch
    batch_size: int = 2
    patch_depth: int = 32
    lr: float = 2e-3
    warmup_epochs: int = 2
    head_first_epochs: int = 0  # epochs that train all but the inserted modules first (LP-FT)
    ce_weight: float = 1.0  # 0: the paper's Dice only
    class_weights: str | None = None  # cross-entropy weight per class: auto | W0,W1,... (background first)
    foreground_fraction: float = 0.67  # share of patches centred on a random foreground class
    regions: str | None = None  # train nested regions as sigmoid outputs: brats | kits | NAME=V,V;NAME=V
    max_minutes: float | None = None  # fit the schedule into this time; None: DEFAULT_MAX_MINUTES; 0: no limit
    accumulate: int = 1
    grad_checkpointing: bool = False
    amp: str = "auto"  # bf16 autocast: auto (where native: CUDA, CPUs with bf16) | bf16 | none
    val_cases: int | None = None
    val_names: str | None = None
    folds: int | None = None
    fold: int = 0
    augmentation: str = "strong"  # or "paper" (flips, scale and shift only)
    val_every: int = 1
    early_stop: int | None = None
    seed: int = 0
    spacing: str | None = None  # "x,y,z" in mm
    normalization: str = "zscore"  # zscore | percentile | ct:LOW:HIGH | none
    crop_foreground: bool = False
    postprocessing: str = "auto"  # auto (chosen on the validation cases) | none | largest
    device: str = "auto"
    run_dir: str | None = None  # default: OUTPUT without suffix + ".run"
    cancel_file: str | None = None  # stop (and write the best set) when this file appears
    license: str = ""
    description: str = ""
    modality: str = ""
    training_data: str = ""
    library: str | None = None

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FinetuneConfig:
        """From run.json or a dict; keys of the command line that are not configuration
        (progress, resume, threads...) are left out."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def config_to_argv(config: FinetuneConfig) -> list[str]:
    """The command line that gives `config` back (options left at their default are omitted)."""
    argv: list[str] = []
    for f in fields(FinetuneConfig):
        value = getattr(config, f.name)
        if value is None or value == f.default:
            continue
        flag = "--from" if f.name == "from_set" else "--" + f.name.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    return argv


def preprocessing_from(config: FinetuneConfig, channels: int) -> Preprocessing:
    if config.normalization.startswith("ct:"):
        _, low, high = config.normalization.split(":")
        norm = ChannelNormalization("ct", window=(float(low), float(high)))
    else:
        norm = ChannelNormalization(config.normalization)
    spacing = tuple(float(v) for v in config.spacing.split(",")) if config.spacing else None
    return Preprocessing(spacing=spacing, normalization=[norm] * channels, crop_foreground=config.crop_foreground)


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
    postprocessing_choice: dict = field(default_factory=dict)  # as the manifest's provenance records it


#: What runs written before these options existed trained with: their run.json lacks the keys,
#: and a resumed run must continue as it started, not with today's defaults.
LEGACY_DEFAULTS: dict[str, Any] = {"foreground_fraction": 0.33, "max_minutes": 0.0, "regions": None, "amp": "cuda",
                                   "postprocessing": "none"}
POSTPROCESSING_MODES = ("auto", "none", "largest")


def resume(run_dir: str | Path, progress: ProgressCallback | None = None,
           cancel_file: str | None = None) -> FinetuneOutcome | None:
    """Continue the run in `run_dir` exactly where it stopped (its run.json says the rest)."""
    run_dir = Path(run_dir)
    try:
        saved = json.loads((run_dir / "run.json").read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"{run_dir}: not a fine-tuning run to resume (its run.json cannot be read: {error}); "
                         f"give the folder an earlier `medtuning finetune` wrote (OUTPUT.run, or its --run-dir)"
                         ) from None
    config = FinetuneConfig.from_dict({**LEGACY_DEFAULTS, **saved, "run_dir": str(run_dir),
                                       "cancel_file": cancel_file or saved.get("cancel_file")})
    return finetune(config, progress, resuming=True)


def finetune(config: FinetuneConfig, progress: ProgressCallback | None = None,
             resuming: bool = False) -> FinetuneOutcome | None:
    """Train and write the set; returns what a caller may inspect (None on ranks > 0 of a
    distributed run). `progress` receives the events a progress printer shows."""
    if not config.data or not config.output or not (config.from_set or config.backbone):
        raise InputError("finetune needs data, an output file and a set (--from) or a backbone (--backbone) to "
                         "start from")
    if config.from_set and config.backbone:
        raise InputError("start from a set or from a backbone, not both")
    if config.postprocessing not in POSTPROCESSING_MODES:
        raise InputError(f"--postprocessing {config.postprocessing}: choose one of {', '.join(POSTPROCESSING_MODES)}")
    if not 0.0 <= config.foreground_fraction <= 1.0:
        raise InputError(f"--foreground-fraction {config.foreground_fraction}: give a share between 0 and 1")
    check_head_first(config)
    given_weights = parse_class_weights(config.class_weights)
    run_dir = Path(config.run_dir or str(Path(config.output).with_suffix("")) + ".run")
    output = Path(config.output)
    if not output.parent.is_dir():
        raise InputError(f"{output}: the directory {output.parent} does not exist")
    library = Library(config.library)
    dataset = load_dataset(config.data, read_labels=not config.labels)  # --labels replaces dataset.json's
    start_set = library.get(config.from_set) if config.from_set else None

    labels = LabelSpec.parse(config.labels) if config.labels else dataset.labels
    if labels is None and start_set is not None:
        known = start_set.manifest.task.labels
        labels = LabelSpec([lb.value for lb in known], [lb.name for lb in known])
    if labels is None:
        raise InputError("give --labels (the dataset does not name its labels)")
    channel_names = (config.channels.split(",") if config.channels else dataset.channel_names
                     or ([c.name for c in start_set.manifest.task.channels] if start_set else []))
    in_channels = len(channel_names) or len(dataset.cases[0].images)
    channel_names = channel_names or [f"channel{i}" for i in range(in_channels)]
    val_names = [n.strip() for n in config.val_names.split(",") if n.strip()] if config.val_names \
        else None
    train_idx, val_idx = split([c.name for c in dataset.cases], config.val_cases, config.seed, val_names,
                               config.folds, config.fold)
    try:
        validate(dataset, labels, in_channels, min_cases=len(val_idx) + 1)
    except DatasetError as error:
        raise InputError(str(error)) from None

    import torch

    torch.manual_seed(config.seed)  # the fresh adapters and decoder: the same start for the same seed
    regions = training_regions(config, dataset, labels)
    check_class_weights(config.class_weights, given_weights, labels, regions)
    model, backbone_sha, preprocessing = build_training_model(config, library, start_set, labels, in_channels,
                                                              regions)
    # what the set writes: its labels, or for a region model one class per region
    out_values, out_names = (output_classes(regions, labels.values, labels.names) if regions
                             else (labels.values, labels.names))
    log = progress or (lambda e: None)
    log({"event": "progress", "stage": "preparing", "fraction": 0.0})
    prepared = [prepare(c, labels, preprocessing, in_channels) for c in dataset.cases]
    train = [prepared[i] for i in train_idx]
    val = [prepared[i] for i in val_idx]
    training = TrainingConfig(
        epochs=config.epochs, iterations_per_epoch=config.iterations, batch_size=config.batch_size,
        patch=(config.patch_depth, model.config.img_size, model.config.img_size), lr=config.lr,
        warmup_epochs=config.warmup_epochs, head_first_epochs=config.head_first_epochs, ce_weight=config.ce_weight,
        ce_class_weights=given_weights or (class_weights_of(train, labels.num_classes) if config.class_weights
                                           else None),
        foreground_fraction=config.foreground_fraction,
        max_minutes=(DEFAULT_MAX_MINUTES if config.max_minutes is None else config.max_minutes) or None,
        accumulate=config.accumulate,
        grad_checkpointing=config.grad_checkpointing, amp=config.amp, val_every=config.val_every,
        early_stop=config.early_stop,
        seed=config.seed, device=config.device, augmentation=config.augmentation)
    trainer = Trainer(model, train, val, training, run_dir, regions.names if regions else labels.names, progress,
                      config.cancel_file)
    if trainer.rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resuming:
            write_json(run_dir / "run.json", config.to_dict())
    if resuming and trainer.checkpoint_path.exists():
        trainer.resume()
    result = trainer.fit()
    if trainer.rank != 0:
        return None
    write_history(run_dir, result.history)
    plot_curves(run_dir, result.history)
    model.load_state_dict(result.best_tensors, strict=False)
    inherited = start_set.manifest.postprocessing if start_set else None
    postprocessing, choice = set_postprocessing(config.postprocessing, result, inherited)
    manifest = make_manifest(
        model, backbone_sha, config.name or output.name.split(".")[0], channel_names, out_names,
        description=config.description, license=config.license or "unspecified", modality=config.modality,
        preprocessing=preprocessing.to_dict(),
        inference={"overlap": 0.5, "blend": "gaussian", "tta": False},
        provenance={
            "training_data": config.training_data or dataset.description, "cases": len(train),
            "validation_cases": [prepared[i].name for i in val_idx], "training_cases": [p.name for p in train],
            "epochs": result.epochs_run, "best_epoch": result.best_epoch,
            "date": time.strftime("%Y-%m-%d"), "label_values": labels.values,
            **({"regions": dict(zip(regions.names, [sorted(v for c in r for v in labels.groups[c - 1])
                                                      for r in regions.classes]))}
               if regions else {}),
            "started_from": start_set.name if start_set else f"backbone {model.config.backbone}",
            "training": training.to_dict(), "cancelled": result.cancelled,
            "curves": [{k: v for k, v in h.items()} for h in result.history],
            "seconds_per_step": result.seconds_per_step, "peak_memory_mb": result.peak_memory_mb,
            "postprocessing_choice": choice,
        },
        metrics={"validation_dice": result.best_dice, "validation_mean_dice": result.best_score}
        if result.best_score is not None else {},
        postprocessing=postprocessing.to_dict() if postprocessing.active else None,
        backbone_source=(start_set.manifest.backbone.source or "") if start_set else "",
        label_values=out_values,
    )
    save_adapter_set(output, manifest, result.best_tensors)
    return FinetuneOutcome(model, result, output, val, run_dir, choice)


def parse_class_weights(text: str | None) -> list[float] | None:
    """--class-weights: None for `auto` or none given, else the numbers (checked against the
    labels once they are known, by check_class_weights)."""
    if not text or text == "auto":
        return None
    try:
        weights = [float(v) for v in text.split(",")]
    except ValueError:
        raise InputError(f"--class-weights {text}: give 'auto' or one positive number per class, background "
                         f"first, comma-separated (e.g. 1,5,2)") from None
    if min(weights) <= 0:
        raise InputError(f"--class-weights {text}: every weight must be above 0 (a class of weight 0 is never "
                         f"learned from its cross-entropy); give 'auto' or positive numbers")
    return weights


def check_head_first(config: FinetuneConfig) -> None:
    """`--head-first-epochs` must leave the inserted modules at least one epoch, and needs a
    method that inserts some (checked before any case is prepared)."""
    held, epochs = config.head_first_epochs, config.epochs
    if held < 0 or (held and held >= epochs):  # --epochs 0 (no training) stays allowed without it
        raise InputError(f"--head-first-epochs {held}: give 0 to {epochs - 1} (fewer than --epochs {epochs}), so "
                         "the inserted modules train for at least one epoch")
    if held and not config.from_set and config.tuning in TUNING_WITHOUT_INSERTED:
        raise InputError(f"--head-first-epochs {held} holds back the modules a method inserts, and --tuning "
                         f"{config.tuning} inserts none: leave the option out, or choose a method that inserts "
                         "modules (a Med-Adapter, adapter, LoRA...)")


def check_class_weights(text: str | None, weights: list[float] | None, labels: LabelSpec,
                        regions: RegionSpec | None) -> None:
    if text and regions:
        raise InputError(f"--class-weights {text} weighs the cross-entropy of plain labels, and this run trains "
                         f"regions ({', '.join(regions.names)}) as sigmoid outputs: leave out one of the two")
    if weights is not None and len(weights) != labels.num_classes:
        names = ", ".join(["background", *labels.names])
        raise InputError(f"--class-weights {text}: {len(weights)} weights for {labels.num_classes} classes; give "
                         f"one per class in this order: {names}")


def class_weights_of(cases: list, num_classes: int) -> list[float]:
    """--class-weights auto: from the voxel counts of the training cases' labels at the
    training spacing (losses.frequency_class_weights); a resumed run recomputes the same."""
    counts = sum(np.bincount(c.label.ravel(), minlength=num_classes)[:num_classes] for c in cases)
    return frequency_class_weights([int(n) for n in counts])


def set_postprocessing(mode: str, result: TrainingResult, inherited: dict[str, Any] | None = None
                       ) -> tuple[PostProcessing, dict[str, Any]]:
    """The post-processing a new set carries, and how it was chosen (for its provenance).
    `auto` decides on the validation Dice of the best epoch, with and without keeping only the
    largest foreground component (nnU-Net's first post-processing step). With nothing to
    decide on, a set continued `--from` another keeps that set's choice, a new one gets none."""
    if mode == "largest":
        return PostProcessing(keep_largest_foreground=True), {"mode": mode}
    if mode == "none":
        return PostProcessing(), {"mode": mode}
    best = next((h for h in result.history if h["epoch"] == result.best_epoch and "val_dice" in h), None)
    if best is None or "val_dice_largest_component" not in best:
        reason = "no validation" if best is None else "the best epoch's record predates the largest-component score"
        if (inherited or {}).get("keep_largest_foreground"):  # the one choice that holds whatever the labels
            return (PostProcessing(keep_largest_foreground=True),
                    {"mode": mode, "decided_on": f"{reason}: kept the starting set's", "keep_largest_foreground": True})
        return PostProcessing(), {"mode": mode, "decided_on": reason}
    spec = choose_postprocessing(best["val_dice"], best["val_dice_largest_component"])
    return spec, {"mode": mode, "decided_on": f"validation Dice of epoch {result.best_epoch}",
                  "validation_dice": best["val_dice"],
                  "validation_dice_largest_component": best["val_dice_largest_component"],
                  "keep_largest_foreground": spec.keep_largest_foreground}


def training_regions(config: FinetuneConfig, dataset, labels: LabelSpec) -> RegionSpec | None:
    """--regions, else the nested regions the dataset.json declares (nnU-Net v2), else None.
    A dataset's regions are not used with --from (sets keep their own outputs) or --labels
    (the labels given replace dataset.json's)."""
    if config.regions:
        return parse_regions(config.regions, labels.values)
    if dataset.regions and config.from_set:
        raise InputError(f"{config.data}: its dataset.json declares regions ({', '.join(dataset.regions)}), and "
                         f"fine-tuning regions from a set (--from) is not supported yet: start from a backbone "
                         f"(--backbone), or give --labels to train the plain labels instead")
    if dataset.regions:  # its classes are the regions' differences (region_label_spec): region i holds i..K-1
        count = len(dataset.regions)
        return RegionSpec(list(dataset.regions), [list(range(i, count + 1)) for i in range(1, count + 1)])
    return None


def build_training_model(settings: FinetuneConfig, library: Library, start_set, labels: LabelSpec, in_channels: int,
                         regions: RegionSpec | None = None):
    """(model, backbone SHA-256, preprocessing) from a starting set or a bare backbone."""
    if start_set is not None and (regions or start_set.manifest.model.regions):
        raise InputError(f"fine-tuning {'from a region set' if start_set.manifest.model.regions else 'regions'} "
                         f"with --from is not supported yet: start from the backbone (--backbone "
                         f"{start_set.backbone_name}) with --regions")
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
        preprocessing = Preprocessing.from_dict(start_set.manifest.preprocessing)
        return model, start_set.backbone_sha256, preprocessing
    try:
        record = library.backbones.resolve(settings.backbone, allow_download=True)
    except Exception as error:
        raise InputError(str(error)) from None
    classes = len(regions.classes) + 1 if regions else labels.num_classes
    config = model_config(settings.backbone, settings.decoder, settings.tuning, in_channels, classes,
                          settings.alpha, settings.slice_size, DEFAULT_REFERENCE_DEPTH, None,
                          regions.classes if regions else None)
    model = assemble_model(config, prepare_backbone(config, str(record.path)), pretrained_encoder=True)
    return model, record.sha256, preprocessing_from(settings, in_channels)


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
    try:
        with atomic_path(run_dir / "curves.png", ".png") as tmp:  # the suffix tells matplotlib the format
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)
