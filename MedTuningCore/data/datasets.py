"""Training data: MSD / nnU-Net folders, CSV lists, or in-memory pairs; validated up front.

Every problem found is reported at once (missing files, labels outside the label list,
image and label on different grids, empty labels, too few cases), before any training.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import MedTuningError
from ..io.images import grid_differences, image_suffix, load_case, read_image
from .prepared import PreparedCase  # noqa: F401  (re-exported: it was defined here)
from .preprocessing import Preprocessing, preprocess, preprocess_label


class DatasetError(MedTuningError):
    """The dataset cannot be used; the message lists every problem found."""


@dataclass
class Case:
    """One annotated case: channel images (paths or SimpleITK images) and a label map."""

    name: str
    images: list[str | sitk.Image]
    label: str | sitk.Image


@dataclass
class LabelSpec:
    """Which label values make classes 1..K-1, and their names. A class may gather several
    values ('1+3+4:tumour core'); its output value is the first of them."""

    values: list[int]
    names: list[str]
    groups: list[list[int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.groups = self.groups or [[v] for v in self.values]

    @property
    def num_classes(self) -> int:
        return len(self.values) + 1

    @property
    def all_values(self) -> list[int]:
        return [v for group in self.groups for v in group]

    @classmethod
    def parse(cls, text: str) -> LabelSpec:
        """'edema,enhancing' (values 1, 2, ...), '1:necrosis,2:edema,4:enhancing', or '1+3+4:core,2:edema'."""
        groups, names = [], []
        for i, item in enumerate(filter(None, (t.strip() for t in text.split(","))), start=1):
            value, _, name = item.rpartition(":")
            try:
                groups.append([int(v) for v in value.split("+")] if value else [i])
            except ValueError:
                raise DatasetError(f"--labels {text!r}: {item!r} is not NAME, VALUE:NAME or VALUE+VALUE:NAME") from None
            names.append(name)
        flat = [v for g in groups for v in g]
        if not names or len(set(flat)) != len(flat) or 0 in flat:
            raise DatasetError(f"--labels {text!r}: give distinct non-zero label values")
        return cls([g[0] for g in groups], names, groups)

    def lookup(self) -> np.ndarray:
        """A table mapping label values to class indices (unknown values to 255)."""
        table = np.full(max(self.all_values) + 1, 255, np.uint8)
        table[0] = 0
        for cls_index, group in enumerate(self.groups, start=1):
            table[group] = cls_index
        return table


@dataclass
class Dataset:
    cases: list[Case]
    channel_names: list[str] = field(default_factory=list)
    labels: LabelSpec | None = None
    description: str = ""
    regions: dict[str, list[int]] | None = None  # nested regions its dataset.json declares (nnU-Net v2)


def nnunet_regions(source: Path, labels: dict) -> dict[str, list[int]] | None:
    """The regions of an nnU-Net v2 dataset.json that declares them, largest first, or None.

    Once one label entry lists several values, every entry is a region (nnU-Net's region-based
    training, e.g. {"whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": 3}).
    MedTuning trains such regions as sigmoid outputs when they are nested (data/regions.py);
    each class it writes is a region minus the next one, with the smallest value of that
    difference, which is what nnU-Net's `regions_class_order` gives for BraTS's and KiTS's."""
    entries = {name: sorted(int(v) for v in (value if isinstance(value, list) else [value]))
               for name, value in labels.items() if isinstance(value, int | list) and value not in (0, [0])}
    if not any(len(values) > 1 for values in entries.values()):
        return None
    regions = dict(sorted(entries.items(), key=lambda item: -len(item[1])))
    names = list(regions)
    for outer, inner in zip(names, names[1:]):
        if not set(regions[inner]) < set(regions[outer]):
            raise DatasetError(
                f"{source}: the regions {outer!r} {regions[outer]} and {inner!r} {regions[inner]} are not nested; "
                f"MedTuning trains nested regions only (each inside the one before, as BraTS's): list the plain "
                f"labels with --labels VALUE:NAME and give nested regions with --regions NAME=V,V;NAME=V")
    return regions


def region_label_spec(regions: dict[str, list[int]]) -> LabelSpec:
    """The classes under nested regions: class i gathers the values of region i that are not in
    region i + 1 and is named after region i, as nnU-Net writes region i's voxels (BraTS 2013's
    WT, TC, ET -> WT: 2, TC: 1+3, ET: 4). Its output value is the smallest of them."""
    names, members = list(regions), list(regions.values())
    groups = [sorted(set(outer) - set(inner)) for outer, inner in zip(members, [*members[1:], []])]
    return LabelSpec([g[0] for g in groups], names, groups)


def dataset_json_labels(labels: dict) -> LabelSpec | None:
    """The labels of an MSD ({"value": "name"}) or nnU-Net v2 ({"name": value}) dataset.json
    that declares no regions (for one that does: `region_label_spec`)."""
    pairs = []
    for key, value in labels.items():
        if isinstance(value, int | list):  # nnU-Net v2: {"name": value} (a one-value list is a plain label)
            pairs.append((int(value[0]) if isinstance(value, list) else value, key))
        else:  # MSD: {"value": "name"}
            pairs.append((int(key), str(value)))
    pairs = sorted(p for p in pairs if p[0] != 0)
    return LabelSpec([v for v, _ in pairs], [n for _, n in pairs]) if pairs else None


def load_folder(root: Path, read_labels: bool = True) -> Dataset:
    """A Medical Segmentation Decathlon or nnU-Net v2 folder with dataset.json. With
    `read_labels` False its label list is not interpreted (the caller names the labels)."""
    try:
        meta = json.loads((root / "dataset.json").read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DatasetError(f"{root / 'dataset.json'}: cannot read ({error})") from None
    channels = meta.get("channel_names") or meta.get("modality") or {}
    names = [channels[k] for k in sorted(channels, key=int)]
    labels, regions = None, None
    if read_labels:
        regions = nnunet_regions(root / "dataset.json", meta.get("labels", {}))
        labels = region_label_spec(regions) if regions else dataset_json_labels(meta.get("labels", {}))
    cases = []
    if isinstance(meta.get("training"), list):  # MSD: one 4D file or per-channel list per case
        for entry in meta["training"]:
            image = root / entry["image"]
            stem = image.name[: -len(image_suffix(image))]
            cases.append(Case(stem, [str(image)], str(root / entry["label"])))
    else:  # nnU-Net v2: imagesTr/CASE_XXXX<ending>, labelsTr/CASE<ending>
        ending = meta.get("file_ending", ".nii.gz")
        for label in sorted((root / "labelsTr").glob(f"*{ending}")):
            case = label.name[: -len(ending)]
            images = [str(root / "imagesTr" / f"{case}_{c:04d}{ending}") for c in range(max(len(names), 1))]
            cases.append(Case(case, images, str(label)))
    return Dataset(cases, names, labels, meta.get("description", meta.get("name", str(root))), regions)


def load_csv(path: Path) -> Dataset:
    """Rows of channel files and, last, the label file; a header row is optional.
    Relative paths are relative to the CSV file."""
    rows = [r for r in csv.reader(path.read_text().splitlines()) if r and not r[0].startswith("#")]
    header: list[str] = []
    if rows and not any(image_suffix(c.strip()) in (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd", ".nhdr")
                        for c in rows[0]):
        header = [c.strip() for c in rows.pop(0)]
    resolved = [[c.strip() if os.path.isabs(c.strip()) else str((path.parent / c.strip()).resolve()) for c in row]
                for row in rows]
    # name cases after the label's folder (BraTS-style layouts), else after the label file
    names = [Path(r[-1]).parent.name for r in resolved]
    if len(set(names)) != len(names):
        names = [Path(r[-1]).name[: -len(image_suffix(r[-1]))] for r in resolved]
    if len(set(names)) != len(names):
        names = [f"case{i:03d}" for i in range(len(resolved))]
    cases = [Case(n, r[:-1], r[-1]) for n, r in zip(names, resolved)]
    return Dataset(cases, header[:-1], None, f"CSV {path.name}")


def load_dataset(source: str | os.PathLike | Sequence[tuple[Sequence[sitk.Image], sitk.Image]],
                 read_labels: bool = True) -> Dataset:
    """A dataset folder, a CSV list or in-memory (images, label) pairs. `read_labels` False
    leaves a dataset.json's label list alone, for callers that are given the labels."""
    if isinstance(source, list | tuple):
        return Dataset([Case(f"case{i:03d}", list(images), label) for i, (images, label) in enumerate(source)],
                       description="in-memory cases")
    path = Path(source)
    if path.is_dir() and (path / "dataset.json").is_file():
        return load_folder(path, read_labels)
    if path.suffix.lower() == ".csv" and path.is_file():
        return load_csv(path)
    raise DatasetError(f"{path}: not a dataset (a folder with dataset.json, or a .csv of channel and label files)")


def _info(item: str | sitk.Image) -> sitk.Image:
    """Grid information without reading voxels (files) or the image itself."""
    if isinstance(item, sitk.Image):
        return item
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(item))
    reader.ReadImageInformation()
    info = sitk.Image([max(1, s) for s in reader.GetSize()[:3]], sitk.sitkUInt8)
    info.SetSpacing(reader.GetSpacing()[:3])
    info.SetOrigin(reader.GetOrigin()[:3])
    info.SetDirection([reader.GetDirection()[r * reader.GetDimension() + c] for r in range(3) for c in range(3)])
    return info


def validate(dataset: Dataset, labels: LabelSpec, channels: int, min_cases: int) -> None:
    """Check everything before training; raise one DatasetError listing all problems."""
    problems = []
    if len(dataset.cases) < min_cases:
        problems.append(("", f"{len(dataset.cases)} case(s) found, at least {min_cases} needed for the "
                             "requested split"))
    allowed = set([0, *labels.all_values])
    for case in dataset.cases:
        items = [*case.images, case.label]
        missing = [str(i) for i in items if not isinstance(i, sitk.Image) and not Path(i).exists()]
        if missing:
            problems += [(case.name, f"missing file {m}") for m in missing]
            continue
        if len(case.images) != channels and not (len(case.images) == 1 and channels > 1):
            problems.append((case.name, f"{len(case.images)} channel file(s), the model takes {channels}"))
        try:
            label_info = _info(case.label)
            for image in case.images:
                differences = grid_differences(_info(image), label_info)
                if differences and not (isinstance(image, str) and _info(image).GetDimension() == 4):
                    problems.append((case.name, f"image {image} and label are on different grids: "
                                                 f"{'; '.join(differences)}"))
            label_image = case.label if isinstance(case.label, sitk.Image) else read_image(case.label)
            values = np.unique(sitk.GetArrayViewFromImage(label_image))  # the view needs label_image alive
        except (RuntimeError, MedTuningError) as error:
            problems.append((case.name, f"cannot read ({error})"))
            continue
        unknown = sorted(set(int(v) for v in values) - allowed)
        if unknown:
            problems.append((case.name, f"label values {unknown} are not in the label list {sorted(allowed)}"))
        if set(int(v) for v in values) <= {0}:
            problems.append((case.name, "the label map is empty (no foreground)"))
    if problems:
        raise DatasetError(describe_problems(problems))


def describe_problems(problems: list[tuple[str, str]]) -> str:
    """All problems on one line, each once with the cases it concerns (a dataset of 200 cases
    with one wrong label value gives one entry, not 200 lines)."""
    cases: dict[str, list[str]] = {}
    for case, text in problems:
        cases.setdefault(text, []).append(case)
    parts = [text if not names[0] else f"{', '.join(names[:5])}{' and more' if len(names) > 5 else ''}: {text}"
             for text, names in cases.items()]
    return f"the dataset has {len(parts)} problem(s): " + "; ".join(parts)



def prepare(case: Case, labels: LabelSpec, spec: Preprocessing, channels: int) -> PreparedCase:
    if all(isinstance(i, str) for i in case.images):
        loaded = load_case(case.images, channels).channels  # reads and checks each file once
    else:
        loaded = [sitk.Cast(i if isinstance(i, sitk.Image) else read_image(i), sitk.sitkFloat32)
                  for i in case.images]
    volume, geometry = preprocess(loaded, spec)
    label_image = case.label if isinstance(case.label, sitk.Image) else read_image(case.label)
    label_image = sitk.Cast(label_image, sitk.sitkUInt16)  # BraTS stores labels as float
    raw = preprocess_label(label_image, geometry, spec)
    table = labels.lookup()
    mapped = table[np.clip(raw, 0, len(table) - 1)]
    grid = geometry.resampled if geometry.resampled is not None else geometry.oriented
    return PreparedCase(case.name, volume, mapped, tuple(grid.GetSpacing()))
