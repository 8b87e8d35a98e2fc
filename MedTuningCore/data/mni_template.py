"""The MNI ICBM152 2009a template bundled in PyPI's nilearn: a T1 image and its tissue maps.

nilearn ships the skull-stripped T1 average and its grey- and white-matter probability maps
(197 x 233 x 189 at 1 mm, probabilities stored as uint8 0-255) inside its wheel, so they can
be had offline from the package registry. MedTuning reads the files only and never imports
nilearn (whose import pulls in scikit-learn, pandas and more): `pip install --no-deps nilearn`
is enough. The template is from the McConnell Brain Imaging Centre (Fonov et al. 2011,
NeuroImage 54:313; Fonov et al. 2009, NeuroImage 47:S102); its licence allows use and
redistribution with the copyright notice, which TEMPLATE_LICENSE gives.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import MedTuningError

FILES = {kind: f"mni_icbm152_{kind}_tal_nlin_sym_09a_converted.nii.gz" for kind in ("t1", "gm", "wm")}
TISSUE_LABELS = {1: "grey-matter", 2: "white-matter"}
TEMPLATE_LICENSE = ("MNI ICBM152 2009a template, Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging "
                    "Centre, Montreal Neurological Institute, McGill University: use, copy, modify and distribute "
                    "with this notice")
HOW_TO_GET = "install it with `pip install --no-deps nilearn` (the files come inside its wheel; no download)"


class TemplateError(MedTuningError):
    """The nilearn template files are missing."""


def template_dir() -> Path:
    """nilearn's data folder, found without importing nilearn."""
    spec = find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise TemplateError(f"the MNI152 template needs the nilearn package; {HOW_TO_GET}")
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    missing = [name for name in FILES.values() if not (folder / name).is_file()]
    if missing:
        raise TemplateError(f"{folder}: nilearn is installed but lacks {', '.join(missing)}; "
                            f"reinstall it: {HOW_TO_GET}")
    return folder


def template_path(kind: str) -> Path:
    """The file of the T1 ('t1') or a tissue probability map ('gm', 'wm')."""
    return template_dir() / FILES[kind]


def tissue_label_map(gm: sitk.Image, wm: sitk.Image) -> sitk.Image:
    """Grey matter 1 and white matter 2 where their probability exceeds one half (the maps
    sum to at most 1, so the two never overlap); 0 elsewhere, CSF included."""
    g = sitk.GetArrayFromImage(gm).astype(np.float32)
    w = sitk.GetArrayFromImage(wm).astype(np.float32)
    scale = 255.0 if max(g.max(), w.max()) > 1.5 else 1.0  # nilearn stores 0-255
    label = np.zeros(g.shape, np.uint8)
    label[g / scale > 0.5] = 1
    label[(w / scale > 0.5) & (w > g)] = 2
    image = sitk.GetImageFromArray(label)
    image.CopyInformation(gm)
    return image


def load_template() -> tuple[sitk.Image, sitk.Image]:
    """(T1 as float32, tissue label map) on the template's 1 mm grid."""
    t1 = sitk.Cast(sitk.ReadImage(str(template_path("t1"))), sitk.sitkFloat32)
    labels = tissue_label_map(sitk.ReadImage(str(template_path("gm"))), sitk.ReadImage(str(template_path("wm"))))
    return t1, labels
