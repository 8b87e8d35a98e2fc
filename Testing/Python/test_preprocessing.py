"""Intensity normalisation and the preprocessing record."""

from __future__ import annotations

import numpy as np
import pytest

from MedTuningCore.data.preprocessing import ChannelNormalization, Preprocessing, normalise
from MedTuningCore.errors import InputError


def test_zscore_uses_the_foreground_and_zeroes_the_background():
    values = np.full((4, 10, 10), -3.3, np.float32)  # BraTS-style constant background
    values[1:3, 2:8, 2:8] = np.random.default_rng(0).normal(5, 2, (2, 6, 6))
    out = normalise(values, ChannelNormalization("zscore"))
    inside = out[1:3, 2:8, 2:8]
    assert inside.mean() == pytest.approx(0, abs=1e-5) and inside.std() == pytest.approx(1, abs=1e-4)
    assert (out[0] == 0).all()


def test_ct_window_maps_to_minus_one_one():
    values = np.array([[[-2000, -160, 40, 240, 3000]]], np.float32)
    out = normalise(values, ChannelNormalization("ct", window=(-160, 240)))
    np.testing.assert_allclose(out.ravel(), [-1, -1, 0, 1, 1])


def test_percentile_clips_outliers_before_zscoring():
    values = np.random.default_rng(1).normal(0, 1, (8, 16, 16)).astype(np.float32) + 10
    values[0, 0, 0] = 1e6
    out = normalise(values, ChannelNormalization("percentile", percentiles=(1, 99)))
    assert out.max() < 5


def test_bad_normalisation_is_refused():
    with pytest.raises(InputError, match="unknown normalisation"):
        ChannelNormalization("minmax")
    with pytest.raises(InputError, match="window"):
        ChannelNormalization("ct")


def test_preprocessing_round_trips_through_json():
    import json

    spec = Preprocessing(spacing=(1.0, 1.0, 2.0), crop_foreground=True,
                         normalization=[ChannelNormalization("ct", window=(-100, 200)), ChannelNormalization()])
    again = Preprocessing.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again.spacing == (1.0, 1.0, 2.0) and again.normalization[0].method == "ct"
    assert again.for_channels(2)[1].method == "zscore"
    with pytest.raises(InputError, match="2 channel normalisations for 3"):
        again.for_channels(3)


def test_restored_probabilities_reach_the_far_border_planes():
    """A coarse grid's last voxel centre can lie inside the input's last plane (9 voxels at 1 mm
    become 4 at 2 mm here, whose last centre sits at 6 mm, not 8): the planes past it must take
    the nearest coarse value, not come back as background (diagnosed in docs/DIAGNOSIS.md)."""
    import SimpleITK as sitk

    from MedTuningCore.data.preprocessing import preprocess, restore_probabilities

    image = sitk.GetImageFromArray(np.random.default_rng(0).normal(size=(9, 9, 9)).astype(np.float32))
    _, geometry = preprocess([image], Preprocessing(spacing=(2.0, 2.0, 2.0)))
    coarse = sitk.GetArrayViewFromImage(geometry.resampled).shape
    assert coarse == (4, 4, 4)  # round(9 / 2): the far planes lie beyond the last coarse centre
    tumour = np.stack([np.zeros(coarse), np.ones(coarse)]).astype(np.float32)  # class 1 everywhere
    restored = restore_probabilities(tumour, geometry)
    assert restored.shape == (2, 9, 9, 9)
    assert (restored.argmax(0) == 1).all()
