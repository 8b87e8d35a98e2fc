"""Can FLAIR and T1c intensities tell the tumour sub-regions apart, across cases?

    OMP_NUM_THREADS=1 .venv/bin/python bench/channel_separability.py

Issue 13 asks why tumour core stays low. The networks' commonest core error is non-enhancing
tumour called edema (and the reverse), and the 4 shared BraTS 2013 cases carry only FLAIR and
T1c. This measures what voxel intensity alone offers, with no network and no context:

1. per case and class, the median of each channel (the files are already z-scored per volume);
2. for pairs of classes, a classifier of the two intensities (the log ratio of the two classes'
   2-D histogram densities, every training case weighing the same) scored by the area under
   the ROC curve (AUC), trained on the other 3 cases and tested on the held-out one (what a
   model learning from 3 cases can carry to a 4th), and trained and tested on the same case
   (how far the classes overlap within one case, an optimistic bound);
3. the same held-out AUCs for the two pairs that decide tumour core, after re-normalising each
   case's channels in four other ways (three over its brain mask, and the trainer's own
   default): does another normalisation make the rule carry from case to case?

AUC 0.5 is chance; below 0.5 the rule learnt from the other cases points the wrong way on this
one. A network also sees shape and position, so this bounds nothing it does; it says whether
the two channels' intensities alone carry the distinction from case to case. About 15 s on
one CPU thread.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from diagnose_brats import BRATS, CASES, CLASSES, channel_paths, read_label, table

from MedTuningCore.data.preprocessing import ChannelNormalization, normalise

#: histogram bins per channel, between the pooled 0.1st and 99.9th percentiles of the tumour
#: voxels of the 4 cases under the normalisation in use (the rare voxels beyond go to the end bins)
BINS = 56
PAIRS = {"non-enhancing vs edema": ((3,), (2,)), "necrosis vs non-enhancing": ((1,), (3,)),
         "enhancing vs non-enhancing": ((4,), (3,)), "core (TC) vs edema": ((1, 3, 4), (2,)),
         "necrosis vs edema": ((1,), (2,))}
#: the two pairs that decide tumour core when the whole tumour is found
CORE_PAIRS = ("non-enhancing vs edema", "core (TC) vs edema")
Voxels = dict[str, tuple[np.ndarray, np.ndarray]]  # case: (labels, [FLAIR, T1c]) of its tumour voxels


def z_score(values: np.ndarray, over: np.ndarray) -> np.ndarray:
    return (values - values[over].mean()) / values[over].std()


def median_iqr(values: np.ndarray, over: np.ndarray) -> np.ndarray:
    q1, median, q3 = np.percentile(values[over], [25, 50, 75])
    return (values - median) / (q3 - q1)


#: how each channel is normalised: name -> f(channel, brain mask, brain outside the tumour)
NORMALISATIONS = {
    "file": lambda channel, brain, healthy: channel,  # as the files have it (z-scored by their makers)
    "brain z-score": lambda channel, brain, healthy: z_score(channel, brain),
    "brain median / IQR": lambda channel, brain, healthy: median_iqr(channel, brain),
    "z-score of the brain outside the tumour": lambda channel, brain, healthy: z_score(channel, healthy),
    # what the trainer feeds the network (its default: z-score over voxels above the minimum)
    "MedTuning's default (foreground z-score)":
        lambda channel, brain, healthy: normalise(channel, ChannelNormalization()),
}


def tumour_voxels(case: str, how: str = "file") -> tuple[np.ndarray, np.ndarray]:
    """(labels, [FLAIR, T1c]) of the case's tumour voxels (label 1-4)."""
    label = sitk.GetArrayFromImage(read_label(case)).astype(np.int64)
    brain = sitk.GetArrayFromImage(sitk.ReadImage(str(BRATS / case / "brainmask.nii.gz"))) > 0
    channels = [NORMALISATIONS[how](sitk.GetArrayFromImage(sitk.ReadImage(p)), brain, brain & (label == 0))
                for p in channel_paths(case)]
    inside = label > 0
    return label[inside], np.stack([c[inside] for c in channels], axis=1)


def bin_edges(data: Voxels) -> list[np.ndarray]:
    pooled = np.concatenate([values for _, values in data.values()])
    return [np.linspace(*np.percentile(pooled[:, k], [0.1, 99.9]), BINS + 1) for k in range(2)]


def bin_index(values: np.ndarray, edges: list[np.ndarray]) -> np.ndarray:
    """Flat 2-D bin of each voxel's (FLAIR, T1c); values beyond the edges go to the end bins."""
    ij = [np.clip(np.searchsorted(e, values[:, k], side="right") - 1, 0, BINS - 1) for k, e in enumerate(edges)]
    return ij[0] * BINS + ij[1]


def class_histogram(bins: np.ndarray, labels: np.ndarray, classes: tuple[int, ...]) -> np.ndarray:
    """Voxel count per 2-D bin of the voxels of `classes`."""
    return np.bincount(bins[np.isin(labels, classes)], minlength=BINS**2).astype(np.float64)


def density(histograms: list[np.ndarray]) -> np.ndarray:
    """The class's density over the bins from one or more cases, each case weighing the same
    (the largest case's voxels must not make the rule alone), half a count added to every bin
    so that no bin has density 0."""
    return np.mean([(h + 0.5) / (h + 0.5).sum() for h in histograms], axis=0)


def binned_auc(score: np.ndarray, positive: np.ndarray, negative: np.ndarray) -> float:
    """AUC of a per-bin score from per-bin counts: voxels of one bin, and of bins whose scores
    are equal to 12 decimals, are ties and count one half."""
    if positive.sum() == 0 or negative.sum() == 0:
        return float("nan")
    score = np.round(score, 12)
    order = np.argsort(score, kind="stable")
    score, positive, negative = score[order], positive[order], negative[order]
    groups = np.concatenate([[0], np.cumsum(np.diff(score) != 0)])
    pos = np.bincount(groups, weights=positive)
    neg = np.bincount(groups, weights=negative)
    below = np.concatenate([[0.0], np.cumsum(neg)[:-1]])
    return float((pos * (below + 0.5 * neg)).sum() / (positive.sum() * negative.sum()))


def median_table(data: Voxels) -> str:
    rows = []
    for case, (labels, values) in data.items():
        for c in range(1, len(CLASSES)):
            chosen = values[labels == c]
            rows.append([case, CLASSES[c], len(chosen) / 1000.0,  # 1 mm voxels: 1000 per mL
                         *(float(np.median(chosen[:, k])) if len(chosen) else float("nan") for k in (0, 1))])
    return table(["case", "class", "volume (mL)", "FLAIR median (z)", "T1c median (z)"], rows)


def binned(data: Voxels) -> Voxels:
    """case: (labels, flat 2-D bin of each voxel), on edges shared by all cases."""
    edges = bin_edges(data)
    return {case: (labels, bin_index(values, edges)) for case, (labels, values) in data.items()}


def pair_aucs(data: Voxels, pair: str) -> dict[str, tuple[float, float]]:
    """Per held-out case of `binned` data: (AUC of the log density ratio learnt on the other
    cases, AUC of the one learnt on the case itself)."""
    pos_classes, neg_classes = PAIRS[pair]
    per_case = {case: (class_histogram(bins, labels, pos_classes), class_histogram(bins, labels, neg_classes))
                for case, (labels, bins) in data.items()}
    aucs = {}
    for case, (pos, neg) in per_case.items():
        others = [per_case[o] for o in per_case if o != case]
        learnt = np.log(density([p for p, _ in others]) / density([n for _, n in others]))
        own = np.log(density([pos]) / density([neg]))
        aucs[case] = (binned_auc(learnt, pos, neg), binned_auc(own, pos, neg))
    return aucs


def auc_table(data: Voxels) -> str:
    data = binned(data)
    rows = [[pair, case, *aucs] for pair in PAIRS for case, aucs in pair_aucs(data, pair).items()]
    return table(["classes (positive vs negative)", "held-out case", "AUC, trained on the other 3",
                  "AUC, trained on this case"], rows)


def normalisation_table(loaded: dict[str, Voxels]) -> str:
    rows = []
    for how, data in loaded.items():
        data = binned(data)
        for pair in CORE_PAIRS:
            aucs = pair_aucs(data, pair)
            rows.append([how, pair, *(aucs[case][0] for case in CASES)])
    return table(["normalisation", "classes", *(f"{case} held out" for case in CASES)], rows)


def main() -> None:
    loaded = {how: {case: tumour_voxels(case, how) for case in CASES} for how in NORMALISATIONS}
    print(f"Cases: {BRATS}\n")
    print(median_table(loaded["file"]), "\n")
    print(auc_table(loaded["file"]), "\n")
    print(normalisation_table(loaded))


if __name__ == "__main__":
    main()
