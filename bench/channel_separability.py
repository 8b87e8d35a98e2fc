"""Can FLAIR and T1c intensities tell the tumour sub-regions apart, across cases?

    OMP_NUM_THREADS=1 .venv/bin/python bench/channel_separability.py

Issue 13 asks why tumour core stays low. The networks' commonest core error is non-enhancing
tumour called edema (and the reverse), and the 4 shared BraTS 2013 cases carry only FLAIR and
T1c. This measures what voxel intensity alone offers, with no network and no context:

1. per case and class, the median of each channel (the files are already z-scored per volume);
2. for pairs of classes, a classifier of the two intensities (the log ratio of the two classes'
   smoothed 2-D histograms) scored by the area under the ROC curve (AUC), trained on the other
   3 cases and tested on the held-out one (what a model learning from 3 cases can carry to a
   4th), and trained and tested on the same case (how far the classes overlap within one
   case, an optimistic bound);
3. the same held-out AUCs for the two pairs that decide tumour core, after re-normalising each
   case's channels over its brain mask in three other ways: does another normalisation make
   the rule carry from case to case?

AUC 0.5 is chance; below 0.5 the rule learnt from the other cases points the wrong way on this
one. A network also sees shape and position, so this bounds nothing it does; it says whether
the two channels' intensities alone carry the distinction from case to case. About 20 s.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from diagnose_brats import BRATS, CASES, CLASSES, channel_paths, read_label, table

#: histogram bins per channel over the z-score range that holds the tumour voxels (5th-95th
#: percentiles of every class of the 4 cases lie within -3.5 and 9)
EDGES = np.linspace(-4.0, 10.0, 57)
PAIRS = [((3,), (2,), "non-enhancing vs edema"), ((1,), (3,), "necrosis vs non-enhancing"),
         ((4,), (3,), "enhancing vs non-enhancing"), ((1, 3, 4), (2,), "core (TC) vs edema"),
         ((1,), (2,), "necrosis vs edema")]


def normalised(channel: np.ndarray, brain: np.ndarray, healthy: np.ndarray, how: str) -> np.ndarray:
    """The channel as the file has it (z-scored by its makers) or re-normalised over the brain."""
    if how == "file":
        return channel
    if how == "brain z-score":
        return (channel - channel[brain].mean()) / channel[brain].std()
    if how == "brain median / IQR":
        q1, median, q3 = np.percentile(channel[brain], [25, 50, 75])
        return (channel - median) / (q3 - q1)
    if how == "z-score of the brain outside the tumour":
        return (channel - channel[healthy].mean()) / channel[healthy].std()
    raise ValueError(how)


NORMALISATIONS = ("file", "brain z-score", "brain median / IQR", "z-score of the brain outside the tumour")


def tumour_voxels(case: str, how: str = "file") -> tuple[np.ndarray, np.ndarray]:
    """(labels, [FLAIR, T1c]) of the case's tumour voxels (label 1-4)."""
    label = sitk.GetArrayFromImage(read_label(case)).astype(np.int64)
    brain = sitk.GetArrayFromImage(sitk.ReadImage(str(BRATS / case / "brainmask.nii.gz"))) > 0
    channels = [normalised(sitk.GetArrayFromImage(sitk.ReadImage(p)), brain, brain & (label == 0), how)
                for p in channel_paths(case)]
    inside = label > 0
    return label[inside], np.stack([c[inside] for c in channels], axis=1)


def bin_index(values: np.ndarray) -> np.ndarray:
    """Flat 2-D bin of each voxel's (FLAIR, T1c); values beyond the edges go to the end bins."""
    n = len(EDGES) - 1
    ij = np.clip(np.searchsorted(EDGES, values, side="right") - 1, 0, n - 1)
    return ij[:, 0] * n + ij[:, 1]


def counts(bins: np.ndarray, labels: np.ndarray, classes: tuple[int, ...]) -> np.ndarray:
    return np.bincount(bins[np.isin(labels, classes)], minlength=(len(EDGES) - 1) ** 2).astype(np.float64)


def log_ratio(positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """Per-bin score: log of the two classes' densities, each smoothed by half a voxel per bin."""
    p = (positive + 0.5) / (positive.sum() + 0.5 * positive.size)
    q = (negative + 0.5) / (negative.sum() + 0.5 * negative.size)
    return np.log(p / q)


def binned_auc(score: np.ndarray, positive: np.ndarray, negative: np.ndarray) -> float:
    """Exact AUC of a per-bin score from per-bin counts (ties within a bin count one half)."""
    if positive.sum() == 0 or negative.sum() == 0:
        return float("nan")
    order = np.argsort(score, kind="stable")
    score, positive, negative = score[order], positive[order], negative[order]
    # bins with equal scores form one tie group
    groups = np.concatenate([[0], np.cumsum(np.diff(score) != 0)])
    pos = np.bincount(groups, weights=positive)
    neg = np.bincount(groups, weights=negative)
    below = np.concatenate([[0.0], np.cumsum(neg)[:-1]])
    return float((pos * (below + 0.5 * neg)).sum() / (positive.sum() * negative.sum()))


def median_table(data: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    rows = []
    for case, (labels, values) in data.items():
        for c in range(1, len(CLASSES)):
            chosen = values[labels == c]
            rows.append([case, CLASSES[c], int(len(chosen)) / 1000.0,
                         *(float(np.median(chosen[:, k])) if len(chosen) else float("nan") for k in (0, 1))])
    return table(["case", "class", "volume (mL)", "FLAIR median (z)", "T1c median (z)"], rows)


def pair_aucs(data: dict[str, tuple[np.ndarray, np.ndarray]], pos_classes: tuple[int, ...],
              neg_classes: tuple[int, ...]) -> dict[str, tuple[float, float]]:
    """Per held-out case: (AUC trained on the other cases, AUC trained on the case itself)."""
    per_case = {}
    for case, (labels, values) in data.items():
        bins = bin_index(values)
        per_case[case] = (counts(bins, labels, pos_classes), counts(bins, labels, neg_classes))
    aucs = {}
    for case, (pos, neg) in per_case.items():
        train_pos = sum(per_case[o][0] for o in per_case if o != case)
        train_neg = sum(per_case[o][1] for o in per_case if o != case)
        aucs[case] = (binned_auc(log_ratio(train_pos, train_neg), pos, neg), binned_auc(log_ratio(pos, neg), pos, neg))
    return aucs


def auc_table(data: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    rows = [[name, case, *aucs] for pos, neg, name in PAIRS for case, aucs in pair_aucs(data, pos, neg).items()]
    return table(["classes (positive vs negative)", "held-out case", "AUC, trained on the other 3",
                  "AUC, trained on this case"], rows)


def normalisation_table() -> str:
    rows = []
    for how in NORMALISATIONS:
        data = {case: tumour_voxels(case, how) for case in CASES}
        for pos, neg, name in PAIRS[0], PAIRS[3]:
            aucs = pair_aucs(data, pos, neg)
            rows.append([how, name, *(aucs[case][0] for case in CASES)])
    return table(["normalisation", "classes", *(f"{case} held out" for case in CASES)], rows)


def main() -> None:
    data = {case: tumour_voxels(case) for case in CASES}
    print(f"Cases: {BRATS}\n")
    print(median_table(data), "\n")
    print(auc_table(data), "\n")
    print(normalisation_table())


if __name__ == "__main__":
    main()
