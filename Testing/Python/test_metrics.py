"""Metrics against hand-computed values and an independent brute-force HD95."""

from __future__ import annotations

import numpy as np
import pytest

from MedTuningCore.evaluation.metrics import case_metrics, directed_surface_distances, mask_metrics, summarise, surface


def box(shape, lo, hi):
    m = np.zeros(shape, bool)
    m[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return m


def brute_force_surface_distances(a, b, spacing):
    """Every surface point of a to every one of b, in mm: the nearest for each, both ways."""
    pa = np.argwhere(surface(a)) * np.array(spacing)
    pb = np.argwhere(surface(b)) * np.array(spacing)
    d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    return d.min(axis=1), d.min(axis=0)


def brute_force_hd95(a, b, spacing):
    d_ab, d_ba = brute_force_surface_distances(a, b, spacing)
    return max(np.percentile(d_ab, 95), np.percentile(d_ba, 95))


def test_dice_and_volumes_by_hand():
    a = box((10, 10, 10), (0, 0, 0), (2, 5, 5))  # 50 voxels
    b = box((10, 10, 10), (1, 0, 0), (3, 5, 5))  # 50 voxels, 25 shared
    m = mask_metrics(a, b, (2.0, 1.0, 1.0))
    assert m["dice"] == pytest.approx(0.5)
    assert m["volume_pred_ml"] == pytest.approx(50 * 2 / 1000) and m["volume_diff_ml"] == 0


def test_hd95_of_a_shifted_box_with_anisotropic_spacing():
    """Shifting a box by one slice of 3 mm: every surface point is within 3 mm."""
    a = box((12, 12, 12), (2, 2, 2), (8, 8, 8))
    b = box((12, 12, 12), (3, 2, 2), (9, 8, 8))
    m = mask_metrics(a, b, (3.0, 0.5, 0.5))
    assert m["hd95"] == pytest.approx(3.0)
    assert m["hd95"] == pytest.approx(brute_force_hd95(a, b, (3.0, 0.5, 0.5)))


@pytest.mark.parametrize("seed", range(5))
def test_hd95_matches_an_independent_brute_force_computation(seed):
    rng = np.random.default_rng(seed)
    a = rng.random((9, 11, 13)) < 0.3
    b = rng.random((9, 11, 13)) < 0.3
    spacing = (2.5, 0.7, 1.3)
    assert mask_metrics(a, b, spacing)["hd95"] == pytest.approx(brute_force_hd95(a, b, spacing), rel=1e-5)


def test_surface_dice_at_a_tolerance():
    """Two 6-voxel cubes, one shifted by a slice: each has 6^3 - 4^3 = 152 surface voxels. The
    side-wall rings (6 x 6 - 4 x 4 = 20 voxels) of the 5 shared slices, 100 voxels, lie on the
    other cube's surface too (distance 0); the other 52 are one voxel from it. At 0.5 mm only
    the shared ones count: (100 + 100) / (152 + 152); at 1 mm all do."""
    a = box((12, 12, 12), (2, 2, 2), (8, 8, 8))
    b = box((12, 12, 12), (3, 2, 2), (9, 8, 8))
    assert mask_metrics(a, b, (1.0, 1.0, 1.0), tolerance_mm=0.5)["surface_dice"] == pytest.approx(200 / 304)
    assert mask_metrics(a, b, (1.0, 1.0, 1.0), tolerance_mm=1.0)["surface_dice"] == 1.0


@pytest.mark.parametrize("seed", range(3))
def test_surface_distances_and_surface_dice_match_a_brute_force_computation(seed):
    rng = np.random.default_rng(seed)
    a = rng.random((9, 11, 13)) < 0.3
    b = rng.random((9, 11, 13)) < 0.3
    spacing, tolerance = (2.5, 0.7, 1.3), 1.9
    d_ab, d_ba = brute_force_surface_distances(a, b, spacing)
    fast_ab, fast_ba = directed_surface_distances(a, b, spacing)
    np.testing.assert_allclose(fast_ab, d_ab, rtol=1e-5)
    np.testing.assert_allclose(fast_ba, d_ba, rtol=1e-5)
    expected = ((d_ab <= tolerance).sum() + (d_ba <= tolerance).sum()) / (d_ab.size + d_ba.size)
    assert mask_metrics(a, b, spacing, tolerance_mm=tolerance)["surface_dice"] == pytest.approx(expected)


def test_empty_structures_follow_the_brats_convention():
    empty = np.zeros((155, 240, 240), bool)
    some = box((155, 240, 240), (10, 10, 10), (20, 20, 20))
    both = mask_metrics(empty, empty, (1.0, 1.0, 1.0))
    assert (both["dice"], both["hd95"], both["surface_dice"]) == (1.0, 0.0, 1.0)
    missed = mask_metrics(empty, some, (1.0, 1.0, 1.0))
    assert missed["dice"] == 0.0 and missed["hd95"] == pytest.approx(373.128664, abs=1e-4)
    assert mask_metrics(some, empty, (1.0, 1.0, 1.0))["dice"] == 0.0


def test_brats_regions_and_summary():
    ref = np.zeros((6, 6, 6), np.int32)
    ref[1:3, 1:3, 1:3] = 1
    ref[3:5, 1:3, 1:3] = 2
    ref[1:3, 3:5, 1:3] = 4
    pred = ref.copy()
    pred[3:5, 1:3, 1:3] = 1  # edema called necrosis: WT perfect, TC over-segmented
    out = case_metrics(pred, ref, (1, 1, 1), {"necrosis": 1, "edema": 2, "enhancing": 4},
                       {"WT": [1, 2, 3, 4], "TC": [1, 3, 4], "ET": [4]})
    assert out["WT"]["dice"] == 1.0 and out["ET"]["dice"] == 1.0
    assert out["TC"]["dice"] == pytest.approx(2 * 16 / (24 + 16))
    assert out["edema"]["dice"] == 0.0
    summary = summarise({"a": out, "b": out})
    assert summary["TC"]["dice_mean"] == pytest.approx(0.8) and summary["TC"]["dice_std"] == 0


def test_summary_means_and_standard_deviations_by_hand():
    """Population standard deviation over the cases that have the structure or metric."""
    summary = summarise({"a": {"WT": {"dice": 0.8, "hd95": 2.0}},
                         "b": {"WT": {"dice": 0.6}, "ET": {"dice": 1.0}},
                         "c": {"WT": {"dice": 0.1, "hd95": 6.0}}})
    assert summary["WT"]["dice_mean"] == pytest.approx(0.5)
    assert summary["WT"]["dice_std"] == pytest.approx(np.sqrt((0.3 ** 2 + 0.1 ** 2 + 0.4 ** 2) / 3))
    assert summary["WT"]["hd95_mean"] == pytest.approx(4.0) and summary["WT"]["hd95_std"] == pytest.approx(2.0)
    assert summary["ET"] == {"dice_mean": 1.0, "dice_std": 0.0}


def test_kits_composite():
    ref = np.zeros((4, 4, 4), np.int32)
    ref[1:3, 1:3, 1:3] = 1
    ref[1, 1, 1] = 2
    out = case_metrics(ref, ref, (1, 1, 1), {"kidney": 1, "tumour": 2}, {"kidney": [1, 2], "tumour": [2]})
    assert out["composite"]["dice"] == 1.0
