"""Few-case recipe search by cross-validation on the 4 shared BraTS cases (issue 13).

Each experiment is trained once per fold (leave one case out: 4 folds over 4 cases) for a
fixed number of steps with the same seed, with no validation during training (no epoch is
chosen on the held-out case); the held-out case is then segmented and scored on its native
1 mm grid, the prediction restored as `medtuning segment` restores it (linear resampling of
probabilities, same origin). The recipe is then chosen among the experiments on these same
folds, so the chosen row's figures are cross-validation figures of a selection, optimistic
by as much as the choice was lucky: no case outside the 4 is ever used.

Three stages with plain files between them, so the heavy one runs on a bare GPU node:

    # here (needs SimpleITK and the library's backbone):
    python bench/recipe_cv.py prepare --work .gpu
    # on the GPU node (needs torch, timm, safetensors; monai for the CNN baseline):
    python bench/recipe_cv.py run --work .gpu --out OUT --plan gpu --device cuda --jobs 15
    # here again: the table, and adapter sets from the kept tensors
    python bench/recipe_cv.py report OUT/results.json
    python bench/recipe_cv.py package OUT/brats-final.safetensors ...

The backbone travels as float16 (the transfer limit is 64 MiB; the training runs in bf16
autocast, which rounds the weights further anyway); the sets are packaged here against the
exact float32 backbone, and the kept folds are re-scored here with `medtuning evaluate`.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from MedTuningCore.data.regions import REGION_PRESETS  # noqa: E402

BRATS = ROOT.parent / "shared" / "data" / "brats2013"
CASES = ["pat0003", "pat0004", "pat0005", "pat0006"]
LABELS = ["necrosis", "edema", "non-enhancing", "enhancing"]
REGIONS = REGION_PRESETS["brats"]
BACKBONE = "vit_small_patch14_dinov2"
SPACINGS = (2.0, 1.5)


@dataclass
class Experiment:
    """One candidate: model and training settings, run on every fold."""

    name: str
    steps: int
    decoder: str = "unet_stem"
    tuning: str = "med_adapter"
    spacing: float = 1.5
    slice_size: int = 126
    alpha: int = 6
    lr: float = 2e-3
    foreground_fraction: float = 0.67
    ce_weight: float = 1.0
    class_weights: str | None = None  # "auto": cross-entropy weighted by class rarity (finetune --class-weights)
    augmentation: str = "strong"
    batch_size: int = 2
    patch_depth: int = 32
    folds: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    keep: bool = False  # bring the tuned tensors back (to package and re-score them here)
    model: str = "medtuning"  # or "segresnet" (MONAI, from scratch)
    regions: str | None = None  # e.g. "brats": WT, TC, ET as sigmoid outputs (data/regions.py)
    # train for this long instead (the trainer fits its schedule into it after the first epoch)
    max_minutes: float | None = None
    head_first_epochs: int = 0  # epochs of the decoder alone before the inserted modules join (LP-FT)

    def tag(self, fold: int | None) -> str:
        return f"{self.name}.fold{fold}" if fold is not None else f"{self.name}.all"


#: The comparison's step budget per fold: every method and ablation row trains this long.
SHORT_STEPS = 250
#: steps per epoch of every run: a checkpoint after each, the cosine schedule by epochs
ITERATIONS_PER_EPOCH = 50


def gpu_plan() -> list[Experiment]:
    """The GPU run: the recipe candidates, the Med-Adapter ablation and the 8 methods at one
    short budget; the chosen recipe at a longer budget, and the final sets on all cases."""
    short = SHORT_STEPS
    plan = [Experiment("recipe-long", 1000, keep=True)]
    plan.append(Experiment("final-brats", 1000, folds=[], keep=True))
    for method in ("med_adapter", "full", "head", "vpt_deep", "adapter", "adaptformer", "st_adapter", "lora"):
        plan.append(Experiment(f"method-{method}", short, tuning=method))
    plan += [
        Experiment("ablation-paper-init", short, tuning="med_adapter_paper"),
        Experiment("ablation-no-fft", short, tuning="med_adapter_no_fft"),
        Experiment("ablation-no-fusion", short, tuning="med_adapter_no_fusion"),
        # the ablation varies the default (the paper's start) one thing at a time; the
        # no-fft and no-fusion variants start as the paper does (models/tuning.py)
        Experiment("ablation-alpha12", short, tuning="med_adapter_paper", alpha=12),
        # ST-Adapter's bottleneck width (C/2), which beat the default on the CPU (run 20)
        Experiment("ablation-alpha2", short, tuning="med_adapter_paper", alpha=2),
        # ST-Adapter's place: the default's adapters before each block instead of after it
        Experiment("ablation-pre-block", short, tuning="med_adapter_pre_block"),
        # one scale of depth-wise convolution, as ST-Adapter: the default without its kernel-5 branch
        Experiment("ablation-no-conv5", short, tuning="med_adapter_no_conv5"),
        Experiment("ablation-lr5e-4", short, tuning="med_adapter_paper", lr=5e-4),
        Experiment("decoder-unet", short, decoder="unet"),
        Experiment("regions-brats", short, regions="brats"),
        # issue 13 item 3: rare classes (necrosis, non-enhancing) weigh more in the cross-entropy
        Experiment("loss-class-weights", short, tuning="med_adapter_paper", class_weights="auto"),
        Experiment("recipe-old", short, decoder="unet", spacing=2.0, slice_size=112, foreground_fraction=0.33),
        # the from-scratch baseline: SegResNet, 64^3 patches at 2 mm, AdamW 2e-3
        Experiment("cnn-segresnet", short, model="segresnet", spacing=2.0, patch_depth=64, slice_size=64),
    ]
    return plan


def smoke_plan() -> list[Experiment]:
    """A few steps of each kind, to check the whole chain on a CPU before a GPU run."""
    return [Experiment("smoke-stem", 2, folds=[0], keep=True, batch_size=1, patch_depth=8),
            Experiment("smoke-regions", 2, folds=[0], regions="brats", batch_size=1, patch_depth=8),
            Experiment("smoke-final", 2, folds=[], keep=True, batch_size=1, patch_depth=8),
            Experiment("smoke-cnn", 2, folds=[0], model="segresnet", batch_size=1, patch_depth=32, slice_size=32)]


def ablation_plan() -> list[Experiment]:
    """What the first GPU lease did not reach, sized for one 15-minute lease (about 28 jobs,
    in gpu_plan's order; what the lease cuts is listed as never started): the Med-Adapter
    ablation, the decoder without the stem, and region outputs. `decoder-unet` and
    `regions-brats` change the recipe of run 1 and 2 (zero-start `med_adapter`), the rows
    they compare with; the ablation rows change the new default, `med_adapter_paper`."""
    names = ("ablation-paper-init", "ablation-no-fft", "ablation-no-fusion", "decoder-unet", "regions-brats",
             "ablation-alpha12", "ablation-lr5e-4")
    return [e for e in gpu_plan() if e.name in names]


def baselines_plan() -> list[Experiment]:
    """The rest of the first lease's table: the methods it cut, the old recipe, SegResNet."""
    names = ("method-adaptformer", "method-adapter", "method-st_adapter", "method-lora", "recipe-old",
             "cnn-segresnet")
    return [e for e in gpu_plan() if e.name in names]


def cpu_baseline_plan() -> list[Experiment]:
    """The from-scratch CNN alone, small enough for a 2-core CPU (about 15 minutes a fold
    with two single-threaded jobs side by side)."""
    return [e for e in gpu_plan() if e.name == "cnn-segresnet"]


#: Minutes of training per fold of the default Med-Adapter (`med_adapter_paper`, float32, two
#: single-threaded jobs side by side) on this project's Intel Xeon CPU VM: run 8, the mean of
#: its 4 folds (49.3, 49.3, 48.0, 47.7; docs/results/recipe_cv.md). The CNN baseline at equal
#: CPU time gets the same.
DEFAULT_MINUTES_PER_FOLD_CPU = 48.6


def cpu_baseline_equal_time_plan() -> list[Experiment]:
    """The from-scratch CNN for as long as the default Med-Adapter trains per fold on the
    same CPU (the issue's "same CPU time"), not for as many steps: a step of SegResNet costs a
    fraction of a Med-Adapter step, so it gets several times more. Planned for 50 epochs; the
    trainer shortens the cosine schedule to what fits after the first epoch."""
    return [Experiment("cnn-segresnet-equal-time", 2500, model="segresnet", spacing=2.0, patch_depth=64,
                       slice_size=64, max_minutes=DEFAULT_MINUTES_PER_FOLD_CPU)]


def cpu_med_adapter_plan() -> list[Experiment]:
    """`method-med_adapter` again on the 2-core CPU (bf16 autocast, one thread per job): if
    it lands within the fold-to-fold noise of the H200 run, CPU runs of the remaining
    candidates (the ablation) can stand beside the GPU rows."""
    return [e for e in gpu_plan() if e.name == "method-med_adapter"]


def cpu_ablation_plan() -> list[Experiment]:
    """The Med-Adapter ablation on the 2-core CPU (run 4 showed CPU rows stand beside the
    H200's): the paper's initialisation (run 5, now the default), then each part of the
    default removed or changed. 45 minutes to 2 hours per candidate with two single-threaded
    jobs, by CPU; stop the runner between candidates and the finished folds are kept.
    `--skip NAME,...` leaves out candidates already on file."""
    names = ("ablation-paper-init", "ablation-no-fft", "ablation-no-fusion", "ablation-alpha12", "ablation-lr5e-4",
             "ablation-alpha2", "ablation-pre-block", "ablation-no-conv5")
    by_name = {e.name: e for e in gpu_plan()}
    return [by_name[n] for n in names]


def cpu_long_plan() -> list[Experiment]:
    """The default Med-Adapter at twice the steps (500): does it keep improving past 250, as
    the CNN did with its extra steps at equal CPU time (run 9)? The issue's longer budget;
    73 minutes per fold on the Intel VM in float32 with two jobs side by side (run 11; 97
    from run 8's cost per step on a slower VM of the type), so run it in parts that each fit
    a session (`--folds 0,1`, then `--folds 2,3`); on the same machine a stopped job also
    resumes from its last finished epoch."""
    return [Experiment("long-paper", 500, tuning="med_adapter_paper")]


def cpu_long_baseline_plan() -> list[Experiment]:
    """The from-scratch CNN at equal CPU time to `cpu-long`, counted in steps rather than
    minutes because VMs of one type differ in speed: 500 x 3.07 SegResNet steps per
    Med-Adapter step (runs 8 and 9, measured side by side on one VM type: 11.65 / 3.80 s) =
    1530, rounded up to whole epochs of 50 so the CNN never gets less than its share: 1550.
    About 98 minutes a fold at run 9's 3.8 s per step with two single-threaded jobs."""
    return [Experiment("cnn-segresnet-long", 1550, model="segresnet", spacing=2.0, patch_depth=64, slice_size=64)]


def cpu_class_weights_plan() -> list[Experiment]:
    """The default recipe with class-weighted cross-entropy (`--class-weights auto`), against
    the default's own row (run 5, CPU bf16): does weighing rare classes find the tumour core?"""
    return [e for e in gpu_plan() if e.name == "loss-class-weights"]


def cpu_late_plan() -> list[Experiment]:
    """The default's adapters in the second half of the blocks only, the position embedding
    frozen (`med_adapter_late`): the first half of the backbone runs forward only, so a step
    costs less. Same 250 steps as the default's rows (run 5, bf16), to see what it costs in
    Dice before any equal-time comparison."""
    return [Experiment("ablation-late", SHORT_STEPS, tuning="med_adapter_late")]


def equal_time_steps(step_cost: float) -> int:
    """The default's 250 steps in the time of a method whose step costs `step_cost` of the
    default's, rounded up to whole epochs so the cheaper method never gets less than its share."""
    return -(-round(SHORT_STEPS / step_cost) // ITERATIONS_PER_EPOCH) * ITERATIONS_PER_EPOCH


#: `med_adapter_late`'s step over the default's, bf16, 2-core AMD EPYC, nothing else running
#: (1.91 / 2.67 s; docs/results/finetune_cost_late_cpu.md)
LATE_STEP_COST = 0.72


def cpu_late_equal_time_plan() -> list[Experiment]:
    """`med_adapter_late` given the default's CPU time rather than its steps (run 30): the
    default's 250 steps divided by the measured step cost, 250 / 0.72 = 347, rounded up to
    whole epochs of 50 (so the cheaper variant never gets less than its share): 350. Counted
    in steps, not minutes, because VMs of one type differ in speed and the machine may be
    shared; the cosine schedule spans all 350."""
    return [Experiment("late-equal-time", equal_time_steps(LATE_STEP_COST), tuning="med_adapter_late")]


#: `head`'s step over the default's at the recipe's 32-slice patches, bf16, 2-core AMD EPYC,
#: nothing else running (3.76 / 4.25 s; docs/results/finetune_cost_late_cpu_2d.md)
HEAD_STEP_COST = 0.88


def cpu_head_equal_time_plan() -> list[Experiment]:
    """`head` (frozen backbone, decoder only) given the default's CPU time on the VM type of
    runs 30-31 (run 32): 250 / 0.88 = 284 steps, rounded up to whole epochs of 50 as for
    late (run 30): 300. Its only rows so far ran on the H200 (runs 1 and 28), so the issue's
    target 'the default at least every other method' had no same-machine, equal-time reading
    against the method that leads the tuning rows."""
    return [Experiment("head-equal-time", equal_time_steps(HEAD_STEP_COST), tuning="head")]


#: Minutes of training per job in `gpu-long`: what one 15-minute lease leaves after the
#: machine's start, the transfers, the jobs' start-up and scoring (a 590-second command).
GPU_LONG_MINUTES = 7.0


def gpu_long_plan() -> list[Experiment]:
    """The issue's longer budget on one GPU lease (run 27): the default `med_adapter_paper`
    on the 4 folds, the from-scratch CNN on the same folds, and the default on all 4 cases
    (a shipped-set candidate trained on the GPU), all nine side by side for the same minutes
    of training on the shared machine, so the CNN gets equal GPU time (its steps are cheaper,
    so it runs more of them). Each plans far more steps than fit; the trainer fits its cosine
    schedule into the minutes after the first epoch."""
    minutes, planned = GPU_LONG_MINUTES, 4000
    return [Experiment("long-gpu", planned, tuning="med_adapter_paper", keep=True, max_minutes=minutes),
            Experiment("final-gpu", planned, tuning="med_adapter_paper", folds=[], keep=True, max_minutes=minutes),
            Experiment("cnn-segresnet-gpu", planned, model="segresnet", spacing=2.0, patch_depth=64, slice_size=64,
                       max_minutes=minutes)]


def gpu_head_long_plan() -> list[Experiment]:
    """`head` (frozen backbone, decoder only: the best other method at 250 steps, run 1) for
    the 700 steps `long-gpu` ran in run 27 (its time budget fitted 14 epochs of 50), so the
    default and the head compare at the longer budget too (run 28)."""
    return [Experiment("head-long-gpu", 700, tuning="head")]


def cpu_head_first_plan() -> list[Experiment]:
    """LP-FT (Kumar et al. 2022) in the few-step regime (run 29): the zero-start `med_adapter`
    (each adapter the identity until it trains) with its adapters held back for the first 2
    of 5 epochs, so those 100 steps train exactly what `head` trains; then the adapters join
    for the last 150. Why: `head` beat every Med-Adapter variant at 250 and 700 steps and
    reached a lower training loss at equal steps (runs 1, 28), so adapters that start by
    distorting the features for a decoder that is still random may be what costs them."""
    return [Experiment("head-first", SHORT_STEPS, tuning="med_adapter", head_first_epochs=2)]


def final_plan() -> list[Experiment]:
    """The shipped set's recipe alone: its 4 folds and the set on all 4 cases, same steps."""
    return [Experiment("final-cv", 400, keep=True), Experiment("final-brats", 400, folds=[], keep=True)]


def cpu_final_plan() -> list[Experiment]:
    """The shipped `brats-glioma` retrained on all 4 cases with the default that runs 4-8 chose
    (`med_adapter_paper`) at the budget run 11 kept (250 steps; 500 did not pass its rule). No
    folds: run 8 (`ablation-paper-init`, same settings) is its cross-validation, so package it
    with `--cv ablation-paper-init --cv-results recipe_cv/cpu_paper_f32.json`. 36 minutes of
    training as one job with both threads on a 2-core AMD EPYC with AVX-512 (run 13); VMs
    without AVX-512 are slower."""
    return [Experiment("final-paper", SHORT_STEPS, tuning="med_adapter_paper", folds=[], keep=True)]


def cpu_paper_same_vm_plan() -> list[Experiment]:
    """The default `med_adapter_paper` at 250 steps in bf16 again, on the AMD EPYC VM type
    that ran `med_adapter_late` (runs 26 and 30), so that the two compare on one machine type
    and one precision (run 31): run 5, their reference until now, ran on an Intel Xeon."""
    return [Experiment("paper-same-vm", SHORT_STEPS, tuning="med_adapter_paper")]


PLANS = {"gpu": gpu_plan, "ablation": ablation_plan, "baselines": baselines_plan, "final": final_plan,
         "cpu-baseline": cpu_baseline_plan, "cpu-baseline-equal-time": cpu_baseline_equal_time_plan,
         "cpu-med-adapter": cpu_med_adapter_plan,
         "cpu-ablation": cpu_ablation_plan, "cpu-long": cpu_long_plan, "cpu-long-baseline": cpu_long_baseline_plan,
         "cpu-final": cpu_final_plan, "cpu-class-weights": cpu_class_weights_plan, "cpu-late": cpu_late_plan,
         "cpu-late-equal-time": cpu_late_equal_time_plan,
         "cpu-paper-same-vm": cpu_paper_same_vm_plan, "cpu-head-equal-time": cpu_head_equal_time_plan,
         "cpu-head-first": cpu_head_first_plan,
         "gpu-long": gpu_long_plan, "gpu-head-long": gpu_head_long_plan,
         "smoke": smoke_plan}


# -- stage 1: prepare (here) -------------------------------------------------------------
def prepare(work: Path) -> None:
    """Preprocessed cases at each spacing, the native-grid labels, the backbone in float16."""
    import torch
    from safetensors.torch import load_file, save

    from MedTuningCore.data.datasets import Case, LabelSpec
    from MedTuningCore.data.datasets import prepare as prepare_case
    from MedTuningCore.data.prepared import PreparedCase, save_prepared
    from MedTuningCore.data.preprocessing import ChannelNormalization, Preprocessing
    from MedTuningCore.sets.library import Library

    labels = LabelSpec([1, 2, 3, 4], LABELS)
    for name in CASES:
        folder = BRATS / name
        case = Case(name, [str(folder / "Flair_subtrMeanDivStd.nii.gz"), str(folder / "T1c_subtrMeanDivStd.nii.gz")],
                    str(folder / "OTMultiClass.nii.gz"))
        for spacing in (*SPACINGS, None):
            spec = Preprocessing(spacing=(spacing,) * 3 if spacing else None,
                                 normalization=[ChannelNormalization("zscore")] * 2)
            prepared = prepare_case(case, labels, spec, 2)
            sub = work / (f"sp{spacing}" if spacing else "native")
            sub.mkdir(parents=True, exist_ok=True)
            if spacing is None:  # only the reference labels, on the grid predictions are restored to
                prepared = PreparedCase(name, np.zeros((1, 1, 1, 1), np.float32), prepared.label, prepared.spacing)
            save_prepared(prepared, sub / f"{name}.npz")
    record = Library(None).backbones.resolve(BACKBONE, allow_download=False)
    state = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in load_file(record.path).items()}
    with gzip.open(work / "backbone_fp16.safetensors.gz", "wb", compresslevel=6) as f:
        f.write(save(state))
    (work / "backbone.json").write_text(json.dumps({"name": BACKBONE, "sha256": record.sha256}))
    print(f"prepared {len(CASES)} cases at {SPACINGS} mm and the backbone in {work}")


# -- stage 2: run (GPU node) ---------------------------------------------------------------
def load_cases(work: Path, spacing: float) -> dict[str, Any]:
    from MedTuningCore.data.prepared import load_prepared

    return {name: load_prepared(work / f"sp{spacing}" / f"{name}.npz") for name in CASES}


def build_network(exp: Experiment, weights: Path):
    if exp.model == "segresnet":
        from monai.networks.nets import SegResNet

        # 16 initial filters, as the baseline (MONAI's defaults otherwise)
        return SegResNet(spatial_dims=3, in_channels=2, out_channels=5, init_filters=16)
    from MedTuningCore.data.regions import parse_regions
    from MedTuningCore.models.network import build_model

    regions = parse_regions(exp.regions, [1, 2, 3, 4]).classes if exp.regions else None
    return build_model(BACKBONE, exp.decoder, exp.tuning, in_channels=2, num_classes=len(regions) + 1 if regions else 5,
                       alpha=exp.alpha, img_size=exp.slice_size, pretrained=str(weights), regions=regions)


class VolumeModel:
    """What the trainer needs from a model other than Med-Tuning's (the CNN baseline)."""

    @staticmethod
    def wrap(net, slice_size: int):
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = net
                self.config = type("Config", (), {"img_size": slice_size, "num_classes": 5, "tuning": "full"})()

            def forward(self, x):
                return self.net(x)

            def set_grad_checkpointing(self, enable: bool = True) -> None:
                pass

        return Wrapped()


def predict_probabilities(model, exp: Experiment, volume: np.ndarray, device: str, tta: bool = False):
    """Softmax probabilities [K, D, H, W] on the preprocessed grid; `tta` averages over the 8
    flips (Med-Tuning models only: bench/tta_effect.py)."""
    import torch

    if exp.model == "segresnet":
        from monai.inferers import sliding_window_inference

        model.eval()
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
            x = torch.from_numpy(volume)[None].to(device)
            roi = (exp.patch_depth, exp.slice_size, exp.slice_size)
            logits = sliding_window_inference(x, roi, 4, model, overlap=0.5, mode="gaussian")[0]
        return torch.softmax(logits.float(), 0)
    from MedTuningCore.data.regions import class_probabilities
    from MedTuningCore.inference.sliding_window import InferenceOptions, SlidingWindowPredictor

    predictor = SlidingWindowPredictor.for_model(model, InferenceOptions(device=device, overlap=0.5, tta=tta))
    outputs = predictor.predict_logits(volume).float()
    return class_probabilities(outputs, model.config.regions is not None).to(device)


def restore_to_native(probabilities, spacing: float, native_shape: tuple[int, int, int], native_spacing: float):
    """Linear resampling onto the native grid (same origin: native voxel j sits at continuous
    index j * native_spacing / spacing), the nearest value past the border, as
    preprocessing.restore_probabilities."""
    import torch
    import torch.nn.functional as F

    sizes = probabilities.shape[1:]
    axes = [torch.arange(n, device=probabilities.device, dtype=torch.float32) * native_spacing / spacing
            for n in native_shape]
    zz, yy, xx = torch.meshgrid(*axes, indexing="ij")
    grid = torch.stack([2 * xx / (sizes[2] - 1) - 1, 2 * yy / (sizes[1] - 1) - 1, 2 * zz / (sizes[0] - 1) - 1], -1)
    out = F.grid_sample(probabilities[None], grid[None], mode="bilinear", padding_mode="border", align_corners=True)
    return out[0]


def scores(prediction: np.ndarray, reference: np.ndarray, voxel_ml: float) -> dict[str, Any]:
    from MedTuningCore.evaluation.metrics import dice, dice_per_class

    per_class = dice_per_class(prediction, reference, 5)
    regions = {region: dice(np.isin(prediction, values), np.isin(reference, values))
               for region, values in REGIONS.items()}
    volumes = {name: {"predicted_ml": float((prediction == v).sum() * voxel_ml),
                      "true_ml": float((reference == v).sum() * voxel_ml)} for v, name in enumerate(LABELS, 1)}
    return {"dice": dict(zip(LABELS, map(float, per_class))), "regions": regions, "volumes": volumes}


def held_out_scores(model, exp: Experiment, volume: np.ndarray, native, device: str,
                    tta: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """The held-out case segmented on the training grid, restored to its native grid (`native`:
    its prepared case at 1 mm) and scored: (label map, scores)."""
    probabilities = predict_probabilities(model, exp, volume, device, tta=tta)
    restored = restore_to_native(probabilities, exp.spacing, native.label.shape, native.spacing[0])
    prediction = restored.argmax(0).cpu().numpy().astype(np.uint8)
    if exp.regions:  # output classes -> the label values they are written as
        from MedTuningCore.data.regions import output_classes, parse_regions

        values, _ = output_classes(parse_regions(exp.regions, [1, 2, 3, 4]), [1, 2, 3, 4], LABELS)
        prediction = np.array([0, *values], np.uint8)[prediction]
    voxel_ml = float(np.prod(native.spacing)) / 1000
    return prediction, scores(prediction, native.label, voxel_ml)


def run_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one experiment on one fold (or on all cases) and score the held-out case."""
    import torch
    from safetensors.torch import save_file

    from MedTuningCore.data.prepared import load_prepared
    from MedTuningCore.data.regions import parse_regions
    from MedTuningCore.inference.precision import precision_name
    from MedTuningCore.sets.adapter_set import tuned_state
    from MedTuningCore.training.trainer import Trainer, TrainingConfig

    torch.set_num_threads(spec.get("threads", 1))
    exp, fold, work, out = Experiment(**spec["experiment"]), spec["fold"], Path(spec["work"]), Path(spec["out"])
    cases = load_cases(work, exp.spacing)
    held_out = CASES[fold] if fold is not None else None
    train = [c for n, c in cases.items() if n != held_out]
    torch.manual_seed(0)
    net = build_network(exp, Path(spec["weights"]))
    model = VolumeModel.wrap(net, exp.slice_size) if exp.model == "segresnet" else net
    iterations = ITERATIONS_PER_EPOCH
    weights = None
    if exp.class_weights == "auto":  # imported here: finetune needs SimpleITK, which the GPU node lacks
        from MedTuningCore.training.finetune import class_weights_of

        weights = class_weights_of(train, len(LABELS) + 1)
    config = TrainingConfig(epochs=max(1, exp.steps // iterations), iterations_per_epoch=min(iterations, exp.steps),
                            batch_size=exp.batch_size, patch=(exp.patch_depth, exp.slice_size, exp.slice_size),
                            lr=exp.lr, warmup_epochs=1 if exp.steps >= 2 * iterations else 0, ce_weight=exp.ce_weight,
                            foreground_fraction=exp.foreground_fraction, augmentation=exp.augmentation, seed=0,
                            device=spec["device"], max_minutes=exp.max_minutes, ce_class_weights=weights,
                            head_first_epochs=exp.head_first_epochs)
    tag = exp.tag(fold)
    names = parse_regions(exp.regions, [1, 2, 3, 4]).names if exp.regions else LABELS
    from MedTuningCore.progress import ProgressPrinter

    # plain lines in the job's log (steps every minute, each epoch, the time budget's warning)
    progress = ProgressPrinter("log", stream=sys.stdout, case=tag)
    trainer = Trainer(model, train, [], config, out / "runs" / tag, names, progress=progress,
                      cancel_file=spec["cancel_file"])
    if exp.model == "segresnet":  # the baseline's optimiser, as the recipe: AdamW 2e-3
        trainer.optimizer = torch.optim.AdamW(trainer.params, lr=exp.lr, weight_decay=1e-5)
    resumed_after = None
    if trainer.checkpoint_path.exists():  # a job stopped (budget, session end) goes on from its last epoch
        trainer.resume()
        resumed_after = trainer.epoch
        print(f"{tag}: resuming after epoch {resumed_after} of {config.epochs}", flush=True)
    result = trainer.fit()
    model.load_state_dict(result.best_tensors, strict=False)
    record: dict[str, Any] = {
        "experiment": exp.name, "fold": fold, "held_out": held_out, "settings": spec["experiment"],
        "steps_done": result.epochs_run * config.iterations_per_epoch, "stopped_early": result.cancelled,
        "seconds": result.seconds, "seconds_per_step": result.seconds_per_step,
        "peak_memory_mb": result.peak_memory_mb, "parameters": parameter_counts(model),
        "curves": result.history, "device": device_name(spec["device"]),
        # what `--amp auto` ran in (on a CPU: the flag, the probe, or $MEDTUNING_CPU_BF16)
        "precision": precision_name(trainer.amp),
        "resumed_after_epochs": resumed_after,  # seconds and seconds_per_step: the last session only
        # training time over every session of a resumed job (the time budget's own count)
        "seconds_all_sessions": trainer.seconds_trained,
    }
    if held_out is not None:
        native = load_prepared(work / "native" / f"{held_out}.npz")
        prediction, scored = held_out_scores(model, exp, cases[held_out].volume, native, spec["device"])
        record.update(scored)
        # the same prediction with only its largest lesion kept: nnU-Net's post-processing
        # choice needs both on every fold (the shipped set's is made that way)
        voxel_ml = float(np.prod(native.spacing)) / 1000
        record["largest_component"] = scores(largest_foreground(prediction), native.label, voxel_ml)
    if exp.keep and exp.model != "segresnet":
        save_file({k: v.contiguous() for k, v in tuned_state(model).items()}, str(out / f"{tag}.safetensors"))
    return record


def largest_foreground(labels: np.ndarray) -> np.ndarray:
    """The core's post-processing (largest foreground component, 26-connectivity); on a GPU
    node without SimpleITK the same with SciPy, which that node's image holds."""
    try:
        import SimpleITK  # noqa: F401
    except ImportError:
        from scipy import ndimage

        if not labels.any():
            return labels
        components, count = ndimage.label(labels > 0, structure=np.ones((3, 3, 3), bool))
        sizes = np.bincount(components.ravel())[1:]
        return np.where(components == 1 + int(np.argmax(sizes)), labels, 0).astype(labels.dtype)
    from MedTuningCore.inference.postprocessing import largest_foreground as with_simpleitk

    return with_simpleitk(labels)


def parameter_counts(model) -> dict[str, int]:
    if hasattr(model, "parameter_counts"):
        return model.parameter_counts()
    params = list(model.parameters())
    return {"total": sum(p.numel() for p in params), "tuned": sum(p.numel() for p in params if p.requires_grad),
            "inserted": 0}


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{cpu_model() or platform.machine()} CPU, {os.cpu_count()} cores"


def cpu_model() -> str:
    """The CPU's name ("AMD EPYC ...") where the system says it: runs on VMs of one type still
    differ (AVX-512 or not), and the rows' seconds per step only compare on the same kind."""
    cpuinfo = Path("/proc/cpuinfo")  # Linux; elsewhere platform.processor() names it, if anything does
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def run_plan(work: Path, out: Path, plan: str, device: str, jobs: int, budget_s: float,
             skip: tuple[str, ...] = (), folds: tuple[int, ...] | None = None, threads: int = 1) -> None:
    """Every (experiment, fold) as its own process, `jobs` at a time, longest first; at
    `budget_s` the running jobs are told to stop (cancel file) and still score what they have.
    Experiments named in `skip` (already on file) are left out; with `folds`, only those folds
    run (this project's sessions each start on a fresh machine, so a plan longer than a
    session is split by folds, each part finishing within one). Run again with the same --out,
    a plan goes on where it stopped: finished jobs are kept, stopped ones resume from their last
    epoch's checkpoint (a long budget can span several sessions). `threads` per job: one job
    with all the cores finishes one fold sooner than several single-threaded jobs side by side,
    which matters when a session ends before a fold would (the steps are the same either way)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "jobs").mkdir(exist_ok=True)
    weights = work / "backbone_fp32.safetensors"
    if not weights.exists():
        import torch
        from safetensors.torch import load, save_file

        with gzip.open(work / "backbone_fp16.safetensors.gz", "rb") as f:
            state = load(f.read())
        save_file({k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items()}, str(weights))
    cancel = out / "STOP"
    cancel.unlink(missing_ok=True)  # a new run of the plan: an earlier budget's stop no longer applies
    unknown = set(skip) - {e.name for e in PLANS[plan]()}
    if unknown:
        raise SystemExit(f"--skip: no experiment {', '.join(sorted(unknown))} in plan {plan!r}")
    queue = [(exp, fold) for exp in sorted(PLANS[plan](), key=lambda e: -e.steps) if exp.name not in skip
             for fold in (exp.folds or [None]) if not finished(out, exp.tag(fold))
             and (folds is None or fold in folds)]
    start, running, done, never_started = time.time(), [], [], []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    while queue or running:
        while queue and len(running) < jobs and not cancel.exists():
            exp, fold = queue.pop(0)
            spec = {"experiment": exp.__dict__, "fold": fold, "work": str(work), "out": str(out),
                    "weights": str(weights), "device": device, "cancel_file": str(cancel), "threads": threads}
            spec_path = out / "jobs" / f"{exp.tag(fold)}.json"
            spec_path.write_text(json.dumps(spec))
            log = open(out / "jobs" / f"{exp.tag(fold)}.log", "w")  # noqa: SIM115 (the child writes to it)
            running.append((exp.tag(fold), subprocess.Popen(
                [sys.executable, __file__, "job", str(spec_path)], stdout=log, stderr=subprocess.STDOUT, env=env)))
        time.sleep(2)
        if time.time() - start > budget_s and not cancel.exists():
            cancel.touch()
            never_started += [exp.tag(fold) for exp, fold in queue]
            queue.clear()
            print(f"[{time.time() - start:.0f} s] budget reached: stopping {len(running)} jobs, "
                  f"{len(never_started)} never started", flush=True)
        for tag, proc in list(running):
            if proc.poll() is not None:
                running.remove((tag, proc))
                done.append(tag)
                print(f"[{time.time() - start:.0f} s] {tag} exit {proc.returncode}", flush=True)
        collect(out, never_started + [e.tag(f) for e, f in queue])
    print(f"all done in {time.time() - start:.0f} s", flush=True)


def finished(out: Path, tag: str) -> bool:
    """A job already on file that ran its whole schedule. A job the budget stopped is run again
    and resumes from its checkpoint (run_job), so a plan goes on where it was stopped."""
    result = out / "jobs" / f"{tag}.result.json"
    return result.exists() and not json.loads(result.read_text()).get("stopped_early")


def collect(out: Path, never_started: list[str]) -> None:
    rows = [json.loads(p.read_text()) for p in sorted((out / "jobs").glob("*.result.json"))]
    (out / "results.json").write_text(json.dumps({"rows": rows, "never_started": never_started}, indent=1))


def job_main(spec_path: Path) -> None:
    spec = json.loads(spec_path.read_text())
    record = run_job(spec)
    result = spec_path.with_suffix(".result.json")
    result.write_text(json.dumps(record))
    print(json.dumps({k: record.get(k) for k in ("experiment", "fold", "regions", "steps_done")}), flush=True)


# -- stage 3: report and package (here) ----------------------------------------------------
def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per experiment: mean and range over folds of each region's and class's Dice."""
    table: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row.get("fold") is None:
            continue
        entry = table.setdefault(row["experiment"], {"folds": [], "rows": []})
        entry["folds"].append(row["fold"])
        entry["rows"].append(row)
    for entry in table.values():
        for key in ("regions", "dice"):
            names = entry["rows"][0][key]
            entry[key] = {n: [r[key][n] for r in entry["rows"]] for n in names}
    return table


def read_results(results: list[Path]) -> list[tuple[Path, dict[str, Any]]]:
    return [(path, json.loads(path.read_text())) for path in results]


def load_rows(loaded: list[tuple[Path, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The rows of several results files; an experiment found in more than one file (a rerun
    in another precision, say) is named EXPERIMENT [FILE STEM] so the runs stay apart."""
    per_file = [(path, data["rows"]) for path, data in loaded]
    seen: dict[str, set[Path]] = {}
    for path, rows in per_file:
        for row in rows:
            seen.setdefault(row["experiment"], set()).add(path)
    return [dict(row, experiment=f"{row['experiment']} [{path.stem}]") if len(seen[row["experiment"]]) > 1 else row
            for path, rows in per_file for row in rows]


def report(results: list[Path]) -> str:
    """Mean ± SD over folds per experiment, best first, with where and in what precision it ran."""
    loaded = read_results(results)  # each file read once, for its rows and what never started
    table = summarise(load_rows(loaded))
    lines = ["| experiment | folds | steps | WT | TC | ET | mean | necrosis | edema | non-enh. | enhancing | "
             "s/step | peak MB | tuned (M) | precision |", "|" + "---|" * 15]

    def cell(values: list[float]) -> str:
        return f"{100 * np.mean(values):.1f} ± {100 * np.std(values):.1f}"

    order = sorted(table, key=lambda n: -np.mean([np.mean(v) for v in table[n]["regions"].values()]))
    for name in order:
        entry, rows = table[name], table[name]["rows"]
        mean = np.mean([np.mean(v) for v in entry["regions"].values()])
        # rows from before 2026-12-01 do not record it; every run then used `--amp auto`'s bf16
        precisions = sorted({r.get("precision", "bf16 (not recorded)") for r in rows})
        lines.append(
            f"| {name} | {len(rows)} | {min(r['steps_done'] for r in rows)} | "
            + " | ".join(cell(entry["regions"][r]) for r in REGIONS) + f" | {100 * mean:.1f} | "
            + " | ".join(cell(entry["dice"][c]) for c in LABELS)
            + f" | {np.mean([r['seconds_per_step'] for r in rows]):.3f} | "
              f"{max(r['peak_memory_mb'] for r in rows):.0f} | {rows[0]['parameters']['tuned'] / 1e6:.3f} | "
              f"{', '.join(precisions)} |")
    lines += postprocessed_lines(table, order)
    for path, data in loaded:
        never = data.get("never_started")
        if never:
            lines.append(f"\nNever started ({path.name}, budget): {', '.join(never)}")
    return "\n".join(lines)


def postprocessed_lines(table: dict[str, Any], order: list[str]) -> list[str]:
    """WT / TC / ET again with only the largest foreground component kept, for the experiments
    whose every fold recorded it (runs from 2026-12-02 on), and how many folds it helps."""
    lines = []
    for name in order:
        rows = table[name]["rows"]
        kept = largest_component_regions(rows)
        if kept is None:
            continue
        kept_per_fold = np.mean([kept[g] for g in REGIONS], axis=0)
        plain_per_fold = np.mean([[r["regions"][g] for r in rows] for g in REGIONS], axis=0)
        better = int(np.sum(kept_per_fold > plain_per_fold))
        lines.append(f"| {name} | " + " | ".join(f"{100 * np.mean(kept[g]):.1f}" for g in REGIONS)
                     + f" | {100 * np.mean(kept_per_fold):.1f} | {better} of {len(rows)} |")
    if not lines:
        return []
    return ["\nLargest foreground component kept (the same predictions):\n",
            "| experiment | WT | TC | ET | mean | folds it raises |", "|---|---|---|---|---|---|", *lines]


def largest_component_regions(rows: list[dict]) -> dict[str, list[float]] | None:
    """WT / TC / ET per fold with only the largest foreground component kept, or None unless
    every fold recorded it (runs from 2026-12-02 on)."""
    if not all("largest_component" in r for r in rows):
        return None
    return {g: [r["largest_component"]["regions"][g] for r in rows] for g in REGIONS}


def per_case(results: list[Path], experiments: list[str]) -> str:
    """Held-out case by case, WT / TC / ET, their mean and the last epoch's training loss of
    each named experiment (names as `report` prints them)."""
    table = summarise(load_rows(read_results(results)))
    missing = [name for name in experiments if name not in table]
    if missing:
        raise SystemExit(f"not in {', '.join(map(str, results))}: {', '.join(missing)} (have: {', '.join(table)})")
    header = "| held-out case | " + " | ".join(f"{n} WT / TC / ET | mean | loss" for n in experiments) + " |"
    lines = [header, "|" + "---|" * (1 + 3 * len(experiments))]
    for case in CASES:
        cells = []
        for name in experiments:
            row = next((r for r in table[name]["rows"] if r["held_out"] == case), None)
            if row is None:
                cells.append(" | | ")
                continue
            dice = [row["regions"][r] for r in REGIONS]
            cells.append(" / ".join(f"{d:.3f}" for d in dice) + f" | {100 * np.mean(dice):.1f} | "
                         f"{row['curves'][-1]['loss']:.3f}")
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def envelope(results: list[Path]) -> str:
    """The best score any run reached on each held-out case, region by region, and the mean of
    those bests: an oracle that picks, case by case and after seeing the answer, the luckiest
    of every experiment in the files. No rule of selection can beat it, so a target above it
    is out of reach of everything tried. Also each case's reference tumour core, by class."""
    rows = [(path.stem, row) for path, data in read_results(results) for row in data.get("rows", [])
            if row.get("fold") is not None]
    experiments = {(stem, row["experiment"]) for stem, row in rows}
    lines = [f"{len(rows)} held-out scores from {len(experiments)} experiments in {len(results)} files.\n",
             "| held-out case | " + " | ".join(f"best {g} (experiment [file])" for g in REGIONS)
             + " | reference TC (mL): necrosis / non-enhancing / enhancing |", "|" + "---|" * (2 + len(REGIONS))]
    bests: dict[str, list[float]] = {g: [] for g in REGIONS}
    for case in CASES:
        of_case = [(stem, row) for stem, row in rows if row["held_out"] == case]
        if not of_case:
            continue
        cells = []
        for g in REGIONS:
            stem, row = max(of_case, key=lambda item: item[1]["regions"][g])
            bests[g].append(row["regions"][g])
            cells.append(f"{row['regions'][g]:.3f} ({row['experiment']} [{stem}])")
        volumes = next((row["volumes"] for _, row in of_case if "volumes" in row), None)
        core = " / ".join(f"{volumes[c]['true_ml']:.1f}" for c in ("necrosis", "non-enhancing", "enhancing")) \
            if volumes else "not recorded"
        lines.append(f"| {case} | " + " | ".join(cells) + f" | {core} |")
    lines.append("| **mean of the bests** | " + " | ".join(f"**{100 * np.mean(bests[g]):.1f}**" for g in REGIONS)
                 + " | |")
    return "\n".join(lines)


#: What trained the GPU-era shipped set; `package --command` names another run.
FINAL_COMMAND = "python bench/recipe_cv.py run --plan final"


def package(tensors: Path, results: Path, tag: str, output: Path, name: str, description: str,
            training_data: str, cv_experiment: str | None = None, postprocessing: dict | None = None,
            cv_evaluations: list[Path] | None = None, cv_results: Path | None = None,
            command: str = FINAL_COMMAND) -> None:
    """An adapter set from tensors trained by `run`, against the exact float32 backbone of the
    library, with the recipe and the cross-validation figures in its manifest. The folds may
    come from another results file (`cv_results`): a set trained on all cases after the
    cross-validation that chose its recipe."""

    from safetensors.torch import load_file

    from MedTuningCore.data.preprocessing import ChannelNormalization, Preprocessing
    from MedTuningCore.models.network import assemble_model, model_config, prepare_backbone
    from MedTuningCore.sets.adapter_set import load_adapter_set, make_manifest, save_adapter_set
    from MedTuningCore.sets.library import Library

    shipped = load_adapter_set(ROOT / "Resources" / "AdapterSets" / "brats-glioma.safetensors")
    terminology = [label.terminology for label in shipped.manifest.task.labels]  # DICOM codes, kept
    data = json.loads(results.read_text())
    row = next(r for r in data["rows"] if Experiment(**r["settings"]).tag(r["fold"]) == tag)
    exp = Experiment(**row["settings"])
    if exp.regions or exp.model != "medtuning":
        raise SystemExit(f"{tag}: packaging covers the 4-label Med-Tuning models; this one is {exp.model}"
                         f"{' with regions' if exp.regions else ''}")
    record = Library(None).backbones.resolve(BACKBONE, allow_download=False)
    config = model_config(BACKBONE, exp.decoder, exp.tuning, 2, 5, exp.alpha, exp.slice_size, 128, None)
    model = assemble_model(config, prepare_backbone(config, str(record.path)), pretrained_encoder=True)
    state = load_file(str(tensors))
    missing = set(state) - set(model.state_dict())
    if missing:
        raise SystemExit(f"{tensors}: tensors the model does not have: {sorted(missing)[:5]}")
    model.load_state_dict(state, strict=False)
    cv_rows = json.loads(cv_results.read_text())["rows"] if cv_results else data["rows"]
    cv = cross_validation(summarise(cv_rows).get(cv_experiment or exp.name), postprocessing or {})
    spec = Preprocessing(spacing=(exp.spacing,) * 3, normalization=[ChannelNormalization("zscore")] * 2)
    training = {"steps": row["steps_done"], "steps_planned": exp.steps, "batch_size": exp.batch_size,
                "patch": [exp.patch_depth, exp.slice_size, exp.slice_size], "lr": exp.lr, "ce_weight": exp.ce_weight,
                "foreground_fraction": exp.foreground_fraction, "augmentation": exp.augmentation,
                "val_overlap": 0.25, "seed": 0}
    fit = fit_dice(model, spec)
    if cv_evaluations:  # `medtuning evaluate` of each fold's set on its held-out case: the full pipeline
        cv["pipeline"] = pipeline_cv(cv_evaluations)
    manifest = make_manifest(
        model, record.sha256, name, ["FLAIR", "T1c"], LABELS, description=description,
        license="CC BY-NC-SA 3.0 (non-commercial, share-alike; inherited from the BraTS 2013 data)",
        modality="MR FLAIR + T1c (z-scored in the brain)", terminology=terminology,
        preprocessing=spec.to_dict(), inference={"overlap": 0.5, "blend": "gaussian", "tta": False},
        postprocessing=postprocessing or {},
        provenance={"training_data": training_data, "cases": 4 - (row["fold"] is not None),
                    "training_cases": [c for c in CASES if c != row["held_out"]], "validation_cases": [],
                    "epochs": row["steps_done"] // ITERATIONS_PER_EPOCH, "best_epoch": None,
                    "date": time.strftime("%Y-%m-%d"),
                    "label_values": [1, 2, 3, 4], "started_from": f"backbone {BACKBONE}",
                    "recipe": {**row["settings"], "command": command},
                    "training": training, "cancelled": row["stopped_early"],
                    "stopped": (f"stopped by the run's time budget after {row['steps_done']} of {exp.steps} "
                                f"planned steps (the cosine schedule had not reached its end)")
                    if row["stopped_early"] else "",
                    "trained_on": row["device"], "backbone_transfer": backbone_transfer(row),
                    "seconds_per_step": row["seconds_per_step"], "peak_memory_mb": row["peak_memory_mb"],
                    "cross_validation": cv, "curves": row["curves"]},
        metrics={"cross_validation_regions_dice": cv.get("pipeline", cv.get("postprocessed", cv)).get(
                     "regions_dice_mean", {}),
                 "fit_dice": fit, "fit_case": FIT_CASE},
        label_values=[1, 2, 3, 4])
    save_adapter_set(output, manifest, {k: v.contiguous() for k, v in model.state_dict().items()
                                        if k in state})
    print(f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB)")


def cross_validation(summary: dict[str, Any] | None, postprocessing: dict) -> dict[str, Any]:
    """The folds' figures as the job scored them; with the largest component kept as well when
    the set keeps it and every fold recorded it (those are then the set's own figures)."""
    if not summary:
        return {}
    rows = summary["rows"]
    cv = {"folds": len(rows), "steps": rows[0]["settings"]["steps"], "experiment": rows[0]["experiment"],
          "scored_by": "the training job (bench/recipe_cv.py), without post-processing",
          "regions_dice_mean": {k: float(np.mean(v)) for k, v in summary["regions"].items()},
          "regions_dice_per_fold": summary["regions"], "held_out": [r["held_out"] for r in rows]}
    kept = largest_component_regions(rows)
    if postprocessing.get("keep_largest_foreground") and kept is not None:
        cv["postprocessed"] = {"scored_by": "the training job, largest foreground component kept (as the set does)",
                               "regions_dice_mean": {g: float(np.mean(v)) for g, v in kept.items()},
                               "regions_dice_per_fold": kept}
    return cv


def backbone_transfer(row: dict) -> str:
    """How the frozen backbone was held while training: on a GPU the job trains against a
    float16 copy, so the set is packaged against the exact float32 weights; on a CPU it
    trained against those weights themselves."""
    if "CPU" in row["device"]:
        return f"the library's float32 backbone itself ({row.get('precision', 'float32')} compute)"
    return ("float16 copy of the backbone on the GPU (bf16 autocast rounds further); packaged against the exact "
            "float32 weights")


def pipeline_cv(evaluations: list[Path]) -> dict[str, Any]:
    """Mean region Dice and HD95 over the folds' `medtuning evaluate` JSON files."""
    per_case = {case: metrics for path in evaluations
                for case, metrics in json.loads(path.read_text())["cases"].items()}
    return {"scored_by": "medtuning evaluate on each fold's set (1 mm, with the set's post-processing)",
            "held_out": sorted(per_case),
            "regions_dice_per_case": {r: {c: m[r]["dice"] for c, m in per_case.items()} for r in REGIONS},
            "regions_hd95_per_case": {r: {c: m[r]["hd95"] for c, m in per_case.items()} for r in REGIONS},
            "regions_dice_mean": {r: float(np.mean([m[r]["dice"] for m in per_case.values()])) for r in REGIONS}}


FIT_CASE = "pat0006"  # a training case of the final set: its Dice there measures fit, not accuracy


def fit_dice(model, spec) -> dict[str, float]:
    """Dice per label on FIT_CASE as the trainer validates (recorded, and reproduced by the
    tests, to show the shipped tensors are the ones trained)."""
    from MedTuningCore.data.datasets import Case, LabelSpec
    from MedTuningCore.data.datasets import prepare as prepare_case
    from MedTuningCore.training.trainer import validation_dice

    folder = BRATS / FIT_CASE
    case = Case(FIT_CASE, [str(folder / "Flair_subtrMeanDivStd.nii.gz"), str(folder / "T1c_subtrMeanDivStd.nii.gz")],
                str(folder / "OTMultiClass.nii.gz"))
    prepared = prepare_case(case, LabelSpec([1, 2, 3, 4], LABELS), spec, 2)
    model.eval()
    return dict(zip(LABELS, map(float, validation_dice(model, [prepared], 0.25))))


#: What the plot shows: the methods, the CNN baseline, and the default Med-Adapter (whose row
#: is the ablation's first candidate), each named as a user would pass it to --tuning.
PLOTTED = {"method-": "", "cnn-": "", "ablation-paper-init": "med_adapter_paper (default)"}


def plotted_name(experiment: str) -> str | None:
    for prefix, name in PLOTTED.items():
        if experiment.startswith(prefix):
            return name or experiment[len(prefix):]
    return None


def steps_note(rows: list[dict], planned: int = SHORT_STEPS) -> str:
    """What a plot label says about a row's steps: nothing at the table's 250, "cut at N"
    below it, the range above it (a row trained for a time instead of a step count)."""
    low, high = min(r["steps_done"] for r in rows), max(r["steps_done"] for r in rows)
    if low < planned:
        return f", cut at {low} steps"
    if high > planned:
        return f", {low}-{high} steps" if low != high else f", {low} steps"
    return ""


def base_name(experiment: str) -> str:
    """The experiment's own name, without the " [FILE STEM]" load_rows adds to reruns."""
    return experiment.split(" [")[0]


def superseded(table: dict[str, dict[str, Any]]) -> set[str]:
    """Rows cut short by a lease (`stopped_early`) of an experiment that another results file
    holds whole on at least the same folds: the plot shows the whole run only."""
    def whole(entry: dict[str, Any]) -> bool:
        return not any(r["stopped_early"] for r in entry["rows"])

    complete = [(base_name(n), set(e["folds"])) for n, e in table.items() if whole(e)]
    return {n for n, e in table.items()
            if not whole(e) and any(b == base_name(n) and f >= set(e["folds"]) for b, f in complete)}


def plot(results: list[Path], output: Path) -> None:
    """One line per method, best at the top: the mean of WT, TC and ET over the folds (bar:
    the fold range, dots: each held-out case), tuned parameters in the label; the default
    starred, the from-scratch CNN grey, rows cut short faded (left out where another file
    holds the same experiment whole: `superseded`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = summarise(load_rows(read_results(results)))
    replaced = superseded(table)
    bases = [base_name(n) for n in table if n not in replaced]
    lines = []
    for experiment, entry in table.items():
        # the file stem stays in the label only where two whole runs of one experiment are plotted
        name = plotted_name(base_name(experiment) if bases.count(base_name(experiment)) == 1 else experiment)
        steps = min(r["steps_done"] for r in entry["rows"])
        if name is None or steps == 0 or experiment in replaced:  # not a method, never trained, or rerun whole
            continue
        per_fold = 100 * np.mean([entry["regions"][r] for r in REGIONS], axis=0)
        tuned = entry["rows"][0]["parameters"]["tuned"] / 1e6
        label = f"{name} ({tuned:.2f} M)" + steps_note(entry["rows"])
        lines.append((per_fold.mean(), per_fold, label, "default" in name, experiment.startswith("cnn-"), steps))
    lines.sort(key=lambda line: line[0])
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(lines) + 1.2))
    for y, (mean, per_fold, _label, default, cnn, steps) in enumerate(lines):
        color = "tab:red" if default else "tab:grey" if cnn else "tab:blue"
        alpha = 1.0 if steps >= SHORT_STEPS else 0.4
        ax.plot([per_fold.min(), per_fold.max()], [y, y], color=color, alpha=alpha, linewidth=1)
        ax.plot(per_fold, [y] * len(per_fold), "o", color=color, alpha=0.35 * alpha, markersize=4)
        marker, size = ("*", 14) if default else ("s", 9) if cnn else ("D", 9)
        ax.plot(mean, y, marker, color=color, alpha=alpha, markersize=size)
    ax.set_yticks(range(len(lines)), [line[2] for line in lines], fontsize=8)
    ax.set_xlabel("mean Dice of WT, TC, ET (%) over folds; dots: the held-out cases", fontsize=9)
    ax.set_title(f"BraTS 2013, 4 folds (one case out each), {SHORT_STEPS} steps unless labelled", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(output, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="stage", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--work", type=Path, default=ROOT / ".gpu")
    r = sub.add_parser("run")
    r.add_argument("--work", type=Path, default=ROOT / ".gpu")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--plan", choices=sorted(PLANS), default="gpu")
    r.add_argument("--device", default="cuda")
    r.add_argument("--jobs", type=int, default=15)
    r.add_argument("--budget", type=float, default=420, help="seconds before running jobs are told to stop")
    r.add_argument("--skip", default="", help="comma-separated experiments of the plan to leave out (already run)")
    r.add_argument("--folds", help="comma-separated folds to run (default: every fold of each experiment)")
    r.add_argument("--threads", type=int, default=1, help="CPU threads per job (default 1)")
    j = sub.add_parser("job")
    j.add_argument("spec", type=Path)
    t = sub.add_parser("report", help="mean ± SD over folds per experiment, from one or more results files")
    t.add_argument("results", type=Path, nargs="+")
    t.add_argument("--plot", type=Path, help="also draw Dice against tuned parameters into this PNG")
    c = sub.add_parser("cases", help="per held-out case: WT / TC / ET of the named experiments side by side")
    c.add_argument("results", type=Path, nargs="+")
    c.add_argument("--experiments", required=True, help="comma-separated, named as `report` prints them")
    e = sub.add_parser("envelope", help="per held-out case, the best score of any experiment, and their mean")
    e.add_argument("results", type=Path, nargs="+")
    k = sub.add_parser("package")
    k.add_argument("tensors", type=Path)
    k.add_argument("--results", type=Path, required=True)
    k.add_argument("--tag", required=True, help="EXPERIMENT.foldN or EXPERIMENT.all")
    k.add_argument("-o", "--output", type=Path, required=True)
    k.add_argument("--name", default="brats-glioma")
    k.add_argument("--postprocessing", type=json.loads, default=None,
                   help='the set\'s post-processing as JSON, e.g. \'{"keep_largest_foreground": true}\'')
    k.add_argument("--cv-evaluate", type=Path, nargs="*", default=None,
                   help="`medtuning evaluate --json` files of the fold sets, for the manifest's figures")
    k.add_argument("--cv", help="the experiment whose folds give the cross-validation figures (default: the "
                                "tensors' own)")
    k.add_argument("--cv-results", type=Path, help="the results file holding those folds (default: --results)")
    k.add_argument("--command", default=FINAL_COMMAND,
                   help="the command that trained the tensors, for the manifest")
    k.add_argument("--description", default="Glioma sub-regions on brain MRI: necrosis, edema, non-enhancing and "
                                             "enhancing tumour")
    k.add_argument("--training-data", default="4 cases of BraTS 2013 (Menze et al. 2015, IEEE TMI; pat0003-pat0006 "
                                              "as redistributed by deepmedic). Far too few for clinical use.")
    args = parser.parse_args()
    if args.stage == "prepare":
        prepare(args.work)
    elif args.stage == "run":
        run_plan(args.work, args.out, args.plan, args.device, args.jobs, args.budget,
                 tuple(n for n in args.skip.split(",") if n),
                 tuple(int(f) for f in args.folds.split(",")) if args.folds else None, args.threads)
    elif args.stage == "job":
        job_main(args.spec)
    elif args.stage == "package":
        package(args.tensors, args.results, args.tag, args.output, args.name, args.description, args.training_data,
                args.cv, args.postprocessing, args.cv_evaluate, args.cv_results, args.command)
    elif args.stage == "envelope":
        print(envelope(args.results))
    elif args.stage == "cases":
        print(per_case(args.results, args.experiments.split(",")))
    else:
        print(report(args.results))
        if args.plot:
            plot(args.results, args.plot)


if __name__ == "__main__":
    main()
