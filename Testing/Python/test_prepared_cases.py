"""Preprocessed cases as plain files (.npz), readable without SimpleITK and without pickle."""

from __future__ import annotations

import numpy as np
import pytest

from MedTuningCore.data.prepared import PreparedCase, load_prepared, save_prepared
from MedTuningCore.errors import InputError


def test_a_case_survives_the_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    case = PreparedCase("pat0001", rng.normal(size=(2, 3, 4, 5)).astype(np.float32),
                        rng.integers(0, 5, (3, 4, 5)).astype(np.uint8), (1.5, 1.5, 2.0))
    save_prepared(case, tmp_path / "pat0001.npz")
    again = load_prepared(tmp_path / "pat0001.npz")
    assert again.name == "pat0001" and again.spacing == (1.5, 1.5, 2.0)
    assert again.volume.dtype == np.float32
    np.testing.assert_allclose(again.volume, case.volume, rtol=1e-3, atol=1e-3)  # stored as float16
    np.testing.assert_array_equal(again.label, case.label)
    assert list(tmp_path.iterdir()) == [tmp_path / "pat0001.npz"]  # no temporary file left


def test_a_pickle_or_a_stranger_file_is_refused_by_name(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, volume=np.array([object()], dtype=object), label=np.zeros(1), spacing=np.ones(3),
             name=np.asarray("x"))
    with pytest.raises(InputError, match="bad.npz"):
        load_prepared(bad)
    other = tmp_path / "other.npz"
    np.savez(other, something=np.zeros(3))
    with pytest.raises(InputError, match="other.npz: not a preprocessed case"):
        load_prepared(other)
