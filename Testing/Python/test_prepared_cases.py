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


def test_training_imports_where_simpleitk_is_missing(tmp_path):
    """A bare GPU node has torch and timm but no SimpleITK: the trainer, the model factory and
    prepared cases must import there (a module-level SimpleITK import in post-processing once
    broke every job of a GPU run at start-up)."""
    import os
    import subprocess
    import sys

    blocker = tmp_path / "SimpleITK"
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ImportError('no SimpleITK on this node')\n")
    code = ("import MedTuningCore.training.trainer, MedTuningCore.models.network, MedTuningCore.data.prepared\n"
            "import MedTuningCore.inference.postprocessing as p\n"
            "print(p.choose_postprocessing({'a': 0.5}, {'a': 0.6}).keep_largest_foreground)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "True"
