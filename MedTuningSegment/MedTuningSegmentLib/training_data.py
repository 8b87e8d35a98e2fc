"""The fine-tuning data of one GUI run: cases annotated in the scene plus, optionally, the
cases of a dataset folder, as one CSV the core reads.

Scene cases are written with label values 1..N in the order of `label_names`. A folder's
label values follow its own dataset.json, so its label maps are rewritten with the same
numbering (matched by name); its images are used where they are. A folder whose label names
differ from the scene's is refused: a case without a label would teach that the structure is
background.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk


class TrainingDataError(ValueError):
    """The cases cannot be combined; the message says what to change."""


def folder_rows(folder: Path, label_names: Sequence[str], out_dir: Path) -> tuple[list[list[str]], list[str]]:
    """CSV rows (channel files..., label file) for the cases of a dataset folder, and its
    label names when `label_names` is empty (a folder-only run)."""
    from MedTuningCore.data.datasets import load_dataset

    try:
        dataset = load_dataset(folder)
    except Exception as error:  # the core's message names the file and the problem
        raise TrainingDataError(f"{folder}: {error}") from None
    if dataset.labels is None:
        raise TrainingDataError(f"{folder / 'dataset.json'} does not name its labels; add a 'labels' entry")
    if dataset.regions:  # the module trains plain labels; renumbering classes that gather values would mix them
        raise TrainingDataError(
            f"{folder / 'dataset.json'} declares regions ({', '.join(dataset.regions)}): train it with the command "
            f"line, which trains its regions (medtuning finetune --data {folder} --backbone ...)")
    names = list(label_names) or list(dataset.labels.names)
    if sorted(dataset.labels.names) != sorted(names):
        raise TrainingDataError(
            f"the labels of {folder} ({', '.join(dataset.labels.names)}) differ from the segments of the scene "
            f"cases ({', '.join(names)}); rename the segments or set 'Segment names -> labels' to the same names")
    target = {value: names.index(name) + 1 for value, name in zip(dataset.labels.values, dataset.labels.names)}
    rows = []
    for i, case in enumerate(dataset.cases):
        label = Path(case.label)
        if any(v != t for v, t in target.items()):
            label = relabel(label, target, out_dir / f"folder{i}_label.nrrd")
        rows.append([*map(str, case.images), str(label)])
    return rows, names


def relabel(path: Path, mapping: dict[int, int], output: Path) -> Path:
    """The label map at `path` with values renumbered by `mapping` (others unchanged)."""
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    out = array.copy()
    for source, target in mapping.items():
        out[array == source] = target
    result = sitk.GetImageFromArray(out.astype(np.uint8))
    result.CopyInformation(image)
    sitk.WriteImage(result, str(output), True)
    return output


def write_csv(rows: Sequence[Sequence[str]], path: Path) -> Path:
    with Path(path).open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return Path(path)
