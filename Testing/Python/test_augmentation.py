"""Strong augmentation keeps images and labels aligned, is seeded, and really varies patches;
k-fold and named validation splits; the tissue labels of the MNI template; PNG montages."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from MedTuningCore import augmentation
from MedTuningCore.datasets import PreparedCase
from MedTuningCore.errors import InputError
from MedTuningCore.finetune_command import split
from MedTuningCore.mni_template import tissue_label_map
from MedTuningCore.montage import PALETTE, write_montage
from MedTuningCore.sampling import SamplingOptions, training_batch


def blocks_case() -> PreparedCase:
    """Labels 0-3 in blocks; the image channel holds the label value itself, so alignment is visible."""
    label = np.zeros((40, 64, 64), np.uint8)
    label[5:35, 10:30, 10:54] = 1
    label[5:35, 34:54, 10:30] = 2
    label[12:28, 34:54, 36:54] = 3
    return PreparedCase("blocks", label[None].astype(np.float32), label, (1.0, 1.0, 1.0))


def test_spatial_transform_moves_image_and_label_together():
    case = blocks_case()
    rng = np.random.default_rng(0)
    moved = 0
    for _ in range(20):
        big = augmentation.context_patch((16, 48, 48))
        x, y = augmentation.spatial(np.pad(case.volume, ((0, 0), (0, 0), (0, 0), (0, 0)))[:, :big[0], :big[1], :big[2]],
                                    case.label[:big[0], :big[1], :big[2]], (16, 48, 48), rng)
        assert x.shape == (1, 16, 48, 48) and y.shape == (16, 48, 48) and y.dtype == np.uint8
        assert set(np.unique(y)) <= {0, 1, 2, 3}
        exact = np.isclose(x[0], np.round(x[0]), atol=1e-4)  # away from edges bilinear values are whole
        agree = (np.round(x[0]) == y)[exact].mean()
        assert agree > 0.99, agree
        centre = case.label[:big[0], :big[1], :big[2]][2:18, 6:54, 6:54]
        moved += not np.array_equal(y, centre)
    assert moved >= 3  # rotations or scalings happened (p = 0.3 each)


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
