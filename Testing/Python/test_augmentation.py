"""Strong augmentation keeps images and labels aligned, is seeded, and really varies patches;
k-fold and named validation splits; the tissue labels of the MNI template; PNG montages."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from MedTuningCore.data import augmentation
from MedTuningCore.data.datasets import PreparedCase
from MedTuningCore.data.mni_template import tissue_label_map
from MedTuningCore.data.sampling import SamplingOptions, random_patch, training_batch
from MedTuningCore.errors import InputError
from MedTuningCore.evaluation.montage import PALETTE, write_montage
from MedTuningCore.training.finetune import split


def blocks_case() -> PreparedCase:
    """Labels 0-3 in blocks; the image channel holds the label value itself, so alignment is visible."""
    label = np.zeros((40, 64, 64), np.uint8)
    label[5:35, 10:30, 10:54] = 1
    label[5:35, 34:54, 10:30] = 2
    label[12:28, 34:54, 36:54] = 3
    return PreparedCase("blocks", label[None].astype(np.float32), label, (1.0, 1.0, 1.0))


def context_crop(case: PreparedCase, patch: tuple[int, int, int]):
    m = augmentation.context_margin(patch)
    box = tuple(slice(0, p + 2 * k) for p, k in zip(patch, m))
    return case.volume[(slice(None), *box)], case.label[box], m


def test_identity_and_quarter_turn_are_exact():
    case = blocks_case()
    patch = (16, 40, 40)
    x, y, m = context_crop(case, patch)
    centre = tuple(slice(k, k + p) for p, k in zip(patch, m))
    xi, yi = augmentation.spatial(x, y, patch, (1.0, 1.0, 1.0), None, force=(np.zeros(3), 1.0))
    assert np.array_equal(yi, y[centre]) and np.allclose(xi[0], x[0][centre], atol=1e-5)
    xr, yr = augmentation.spatial(x, y, patch, (1.0, 1.0, 1.0), None, force=(np.array([0, 0, np.pi / 2]), 1.0))
    turned = [np.rot90(y[centre], k, axes=(1, 2)) for k in (1, -1)]
    assert any(np.array_equal(yr, t) for t in turned)  # a true rotation in-plane, no shear or shift
    assert not np.array_equal(yr, y[centre])
    # an anisotropic grid rotates in millimetres: a 90-degree turn about z of a 2 mm x 1 mm
    # in-plane grid maps a 10 mm bar along x onto 10 mm along y (20 voxels), not 5
    bar = np.zeros((8, 60, 30), np.uint8)
    bar[4, 30, 12:17] = 1  # 5 voxels x 2 mm along x, centred
    _, turned_bar = augmentation.spatial(bar[None].astype(np.float32), bar, (8, 40, 20), (1.0, 0.5, 1.0), None,
                                         force=(np.array([0, 0, np.pi / 2]), 1.0))
    rows = np.unique(np.argwhere(turned_bar)[:, 1])
    assert 8 <= len(rows) <= 12 and len(np.unique(np.argwhere(turned_bar)[:, 2])) <= 2


def test_random_spatial_draws_keep_image_and_label_aligned():
    case = blocks_case()
    patch = (16, 40, 40)
    x, y, _ = context_crop(case, patch)
    rng = np.random.default_rng(0)
    for _ in range(20):
        xo, yo = augmentation.spatial(x, y, patch, (1.0, 1.0, 1.0), rng)
        assert xo.shape == (1, *patch) and yo.shape == patch and yo.dtype == np.uint8
        exact = np.isclose(xo[0], np.round(xo[0]), atol=1e-4)  # away from edges bilinear values are whole
        assert (np.round(xo[0]) == yo)[exact].mean() > 0.99


def test_context_never_changes_which_voxels_patches_reach():
    """With context, patches still reach every voxel of a volume only slightly larger than
    the patch, and the patch part itself is never padding (the context may be)."""
    shape = (20, 44, 44)
    index = np.arange(1, np.prod(shape) + 1, dtype=np.float32).reshape(shape)  # voxel id + 1
    case = PreparedCase("edge", index[None], np.ones(shape, np.uint8), (1.0, 1.0, 1.0))
    options = SamplingOptions(patch=(16, 40, 40), foreground_fraction=0.0)
    rng = np.random.default_rng(0)
    m = augmentation.context_margin(options.patch)
    covered = np.zeros(np.prod(shape), bool)
    for _ in range(1500):  # 125 possible starts: all are drawn
        x, y = random_patch(case, options, rng, m)
        assert y.shape == tuple(p + 2 * k for p, k in zip(options.patch, m))
        inner = x[0, m[0]:m[0] + 16, m[1]:m[1] + 40, m[2]:m[2] + 40]
        assert (inner > 0).all()  # real voxels, never padding
        covered[inner.astype(np.int64).ravel() - 1] = True
    assert covered.all()  # border voxels included


def test_strong_batches_are_seeded_and_differ_from_paper_augmentation():
    case = blocks_case()
    strong = SamplingOptions(patch=(16, 48, 48), augmentation="strong")
    a = training_batch([case], 4, strong, np.random.default_rng(3))
    b = training_batch([case], 4, strong, np.random.default_rng(3))
    c = training_batch([case], 4, strong, np.random.default_rng(4))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert a[0].shape == (4, 1, 16, 48, 48) and a[0].dtype == np.float32 and a[1].dtype == np.int64
    paper = training_batch([case], 4, SamplingOptions(patch=(16, 48, 48)), np.random.default_rng(3))
    assert not np.array_equal(a[0], paper[0])
    with pytest.raises(ValueError, match="augmentation"):
        SamplingOptions(augmentation="extreme")


def test_intensity_transforms_keep_shape_and_finite_values():
    x = np.random.default_rng(0).normal(size=(2, 8, 24, 24)).astype(np.float32)
    rng = np.random.default_rng(1)
    outs = [augmentation.intensity(x, rng) for _ in range(30)]
    assert all(o.shape == x.shape and o.dtype == np.float32 and np.isfinite(o).all() for o in outs)
    assert sum(not np.allclose(o, x) for o in outs) >= 20  # most draws change something
    field = augmentation.bias_field((8, 24, 24), np.random.default_rng(0))
    assert field.min() > 0.49 and field.max() < 2.01  # within a factor of 2
    assert np.abs(np.diff(field, axis=2)).max() < 0.2  # and smooth


def test_kfold_split_validates_every_case_exactly_once():
    names = [f"case{i}" for i in range(7)]
    seen = []
    for fold in range(3):
        train, val = split(names, None, seed=5, folds=3, fold=fold)
        assert not set(train) & set(val) and sorted(train + val) == list(range(7))
        seen += val
    assert sorted(seen) == list(range(7))
    assert split(names, None, 5, folds=3, fold=1) == split(names, None, 5, folds=3, fold=1)
    with pytest.raises(InputError, match="folds"):
        split(names, None, 0, folds=8)
    with pytest.raises(InputError, match="fold"):
        split(names, None, 0, folds=2, fold=2)


def test_named_validation_cases():
    names = ["pat0003", "pat0004", "pat0005", "pat0006"]
    assert split(names, None, 0, val_names=["pat0006"]) == ([0, 1, 2], [3])
    with pytest.raises(InputError, match="pat9999"):
        split(names, None, 0, val_names=["pat9999"])
    with pytest.raises(InputError, match="not several"):
        split(names, None, 0, val_names=["pat0006"], folds=2)
    with pytest.raises(InputError, match="not both"):
        split(names, 1, 0, folds=2)


def test_tissue_label_map_thresholds_and_keeps_the_grid():
    gm = np.zeros((4, 5, 6), np.uint8)
    wm = np.zeros((4, 5, 6), np.uint8)
    gm[0], wm[0] = 200, 40  # grey
    gm[1], wm[1] = 40, 200  # white
    gm[2], wm[2] = 120, 120  # neither above one half
    gm[3], wm[3] = 128, 127  # grey just above one half
    images = []
    for a in (gm, wm):
        im = sitk.GetImageFromArray(a)
        im.SetSpacing((1.0, 2.0, 3.0))
        im.SetOrigin((5.0, 6.0, 7.0))
        images.append(im)
    labels = tissue_label_map(*images)
    arr = sitk.GetArrayFromImage(labels)
    assert (arr[0] == 1).all() and (arr[1] == 2).all() and (arr[2] == 0).all() and (arr[3] == 1).all()
    assert labels.GetSpacing() == (1.0, 2.0, 3.0) and labels.GetOrigin() == (5.0, 6.0, 7.0)


def test_montage_shows_labels_in_their_colours(tmp_path):
    image = sitk.GetImageFromArray(np.random.default_rng(0).uniform(0, 100, (30, 40, 50)).astype(np.float32))
    image.SetSpacing((1.0, 1.0, 2.0))
    label = np.zeros((30, 40, 50), np.uint8)
    label[5:25, 10:30, 10:40] = 2
    labels = sitk.GetImageFromArray(label)
    labels.CopyInformation(image)
    write_montage(tmp_path / "m.png", image, labels)
    png = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "m.png")))
    assert png.ndim == 3 and png.shape[2] == 3
    assert png.shape[0] >= 3 * 40 and png.shape[1] >= 4 * 50  # 3 views x 4 slices, 2 mm slices shown as 2 px
    assert PALETTE[2][2] - PALETTE[2][0] > 100  # label 2 is sky blue: much more blue than red
    assert (png[..., 2].astype(int) - png[..., 0] > 40).sum() > 1000  # and it shows
