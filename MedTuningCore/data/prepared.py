"""A case after preprocessing, as the trainer sees it, and its plain-file form.

Preprocessed cases saved as .npz (nnU-Net keeps a "preprocessed" folder between planning and
training the same way) let training run where image IO is not installed, e.g. a bare GPU
node: nothing here needs SimpleITK.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.atomic import atomic_path


@dataclass
class PreparedCase:
    """A case preprocessed for training: network input, class-index labels, spacing."""

    name: str
    volume: np.ndarray  # float32 [C, D, H, W]
    label: np.ndarray  # uint8 [D, H, W], class indices
    spacing: tuple[float, float, float]  # (x, y, z) mm of the preprocessed grid


def save_prepared(case: PreparedCase, path: str | Path) -> None:
    """Write `case` as a compressed .npz: the volume as float16 where it fits (z-scored
    intensities keep three significant digits, far finer than MRI noise), else float32 (raw
    CT numbers and the like)."""
    fits = np.abs(case.volume).max(initial=0) < 6e4  # float16's largest finite value is 65504
    volume = case.volume.astype(np.float16 if fits else np.float32)
    with atomic_path(Path(path), ".npz") as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, volume=volume, label=case.label.astype(np.uint8),
                            spacing=np.asarray(case.spacing, dtype=np.float64), name=np.asarray(case.name))


def load_prepared(path: str | Path) -> PreparedCase:
    """Read a case written by `save_prepared` (no pickled objects are accepted)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return PreparedCase(str(data["name"]), data["volume"].astype(np.float32), data["label"],
                                tuple(float(v) for v in data["spacing"]))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise InputError(f"{path}: not a preprocessed case ({error}); write one with save_prepared") from None
