"""Post-processing against hand-made label maps (anisotropic spacing)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from MedTuningCore.inference.postprocessing import (
    PostProcessing,
    choose_postprocessing,
    largest_foreground,
    postprocess,
)


def label_image(array, spacing=(1.0, 1.0, 2.0)):
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing)
    return image


def base():
    a = np.zeros((10, 20, 20), np.uint8)
    a[2:8, 2:10, 2:10] = 1  # big: 6*8*8 = 384 voxels = 768 mm3
    a[2:4, 15:17, 15:17] = 1  # island: 8 voxels = 16 mm3
    a[5:7, 14:19, 14:19] = 2  # class 2: 50 voxels = 100 mm3
    a[8, 0, 0] = 2  # class-2 speck: 1 voxel = 2 mm3
    return a


def test_keep_largest_component_per_class():
    out = sitk.GetArrayFromImage(postprocess(label_image(base()), PostProcessing(keep_largest=[1])))
    assert (out == 1).sum() == 384 and out[3, 16, 16] == 0
    assert (out == 2).sum() == 51  # class 2 untouched


def test_remove_islands_smaller_than_a_volume_in_mm3():
    out = sitk.GetArrayFromImage(postprocess(label_image(base()), PostProcessing(min_island_mm3=20.0)))
    assert (out == 1).sum() == 384  # the 16 mm3 island is gone
    assert (out == 2).sum() == 50  # the 2 mm3 speck is gone


def test_island_threshold_uses_the_spacing():
    spec = PostProcessing(min_island_mm3=30.0)
    thick = sitk.GetArrayFromImage(postprocess(label_image(base(), spacing=(1.0, 1.0, 2.0)), spec))
    thin = sitk.GetArrayFromImage(postprocess(label_image(base(), spacing=(1.0, 1.0, 0.5)), spec))
    assert (thick == 2).sum() == 50  # 50 voxels of 2 mm3 = 100 mm3: kept
    assert (thin == 2).sum() == 0  # 50 voxels of 0.5 mm3 = 25 mm3: removed


def test_fill_holes():
    a = np.zeros((7, 12, 12), np.uint8)
    a[1:6, 2:10, 2:10] = 1
    a[3, 5:7, 5:7] = 0  # enclosed hole
    out = sitk.GetArrayFromImage(postprocess(label_image(a), PostProcessing(fill_holes=[1])))
    assert (out[3, 5:7, 5:7] == 1).all()
    assert out[0].sum() == 0  # the outside stays background


def test_nothing_to_do_returns_the_input():
    image = label_image(base())
    assert postprocess(image, PostProcessing()) is image


def test_keep_largest_foreground_keeps_the_lesion_with_all_its_classes():
    """One lesion of two touching classes stays whole; islands of any class elsewhere go."""
    a = np.zeros((10, 20, 20), np.uint8)
    a[2:8, 2:10, 2:10] = 2  # the lesion: edema ...
    a[4:6, 4:8, 4:8] = 4  # ... with enhancing tumour inside it
    a[2:4, 15:17, 15:17] = 4  # a far island of the inner class
    a[8, 18, 18] = 2  # and a speck of the outer one
    out = sitk.GetArrayFromImage(postprocess(label_image(a), PostProcessing(keep_largest_foreground=True)))
    lesion = np.zeros_like(a)
    lesion[2:8, 2:10, 2:10] = a[2:8, 2:10, 2:10]
    np.testing.assert_array_equal(out, lesion)
    empty = postprocess(label_image(np.zeros_like(a)), PostProcessing(keep_largest_foreground=True))
    assert not sitk.GetArrayFromImage(empty).any()  # nothing found stays nothing, no error


def test_largest_foreground_on_an_array_keeps_the_largest_component_and_its_classes():
    a = base()
    a[3, 3, 3] = 2  # a second class inside the big component stays
    out = largest_foreground(a)
    assert out.dtype == a.dtype and out[3, 3, 3] == 2
    assert (out == 1).sum() == 383 and not out[2:4, 15:17, 15:17].any() and not out[5:7, 14:19, 14:19].any()
    assert not largest_foreground(np.zeros((3, 4, 5), np.int64)).any()


def test_the_largest_component_is_chosen_only_if_it_helps_the_mean_and_hurts_no_class():
    raw = {"tumour": 0.60, "cyst": 0.40}
    assert choose_postprocessing(raw, {"tumour": 0.70, "cyst": 0.40}).keep_largest_foreground
    assert not choose_postprocessing(raw, {"tumour": 0.80, "cyst": 0.39}).keep_largest_foreground  # a class loses
    assert not choose_postprocessing(raw, dict(raw)).keep_largest_foreground  # no gain, no change
    assert not choose_postprocessing({}, {}).active  # nothing validated: nothing chosen
