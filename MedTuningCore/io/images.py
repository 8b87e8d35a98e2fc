"""Reading and writing volumes with SimpleITK: NIfTI, NRRD, MetaImage and DICOM series.

Channels of one case come as one file each (e.g. FLAIR + T1c) or as one 4D / vector file.
Everything written goes to a temporary file in the target directory first and is then
renamed, so an interrupted run never leaves a half-written output behind.
"""

from __future__ import annotations

import gzip
import os
import struct
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .atomic import atomic_path

READABLE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".seg.nrrd", ".mha", ".mhd", ".nhdr")
WRITABLE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".seg.nrrd", ".mha", ".mhd")

# Tolerances for "the same grid": well below what any scanner or resampler can tell apart.
SPACING_RTOL = 1e-4
ORIGIN_ATOL_MM = 1e-3
DIRECTION_ATOL = 1e-4


def image_suffix(path: str | os.PathLike) -> str:
    name = Path(path).name.lower()
    for suffix in sorted(READABLE_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return Path(path).suffix.lower()


def read_image(path: str | os.PathLike) -> sitk.Image:
    """Read one image file, or a DICOM series from a directory."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or directory")
    if p.is_dir():
        return read_dicom_series(p)
    if image_suffix(p) in (".nii", ".nii.gz"):
        check_nifti_file(p)
    try:
        return sitk.ReadImage(str(p))
    except RuntimeError as error:
        detail = str(error).strip().splitlines()[-1][:200] if str(error).strip() else "unknown reason"
        raise InputError(
            f"{p}: cannot read this image ({detail}). Check that the file is complete and is NIfTI, NRRD, "
            f"MetaImage or a DICOM series directory."
        ) from None


def check_nifti_file(path: Path) -> None:
    """ITK reads a truncated NIfTI without complaint (missing voxels become garbage) and
    turns NaN voxels into 0, so check the raw file: as many voxel bytes as the header
    announces, and no NaN or infinite values in floating-point data."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError, zlib.error) as error:
        raise InputError(f"{path}: cannot read this image (damaged or truncated: {error})") from None
    if len(data) < 348:
        raise InputError(f"{path}: cannot read this image (no complete NIfTI header: damaged or not NIfTI)")
    endian = "<" if struct.unpack("<i", data[:4])[0] == 348 else ">"
    if struct.unpack(endian + "i", data[:4])[0] != 348:
        return  # NIfTI-2 or not NIfTI at all: leave it to the reader
    dims = struct.unpack(endian + "8h", data[40:56])
    datatype, bitpix = struct.unpack(endian + "2h", data[70:74])
    offset = int(struct.unpack(endian + "f", data[108:112])[0])
    voxels = int(np.prod([max(d, 1) for d in dims[1: 1 + max(min(dims[0], 7), 0)]]))
    expected = offset + voxels * bitpix // 8
    if len(data) < expected:
        raise InputError(
            f"{path}: cannot read this image (truncated: {len(data)} of {expected} bytes); the file is incomplete"
        )
    float_types = {16: "f4", 64: "f8"}  # NIfTI DT_FLOAT32, DT_FLOAT64
    if datatype in float_types:
        values = np.frombuffer(data, dtype=endian + float_types[datatype], count=voxels, offset=offset)
        bad = int(values.size - np.isfinite(values).sum())
        if bad:
            raise InputError(f"{path}: {bad} voxels are NaN or infinite; fix or mask them before segmenting")


def read_dicom_series(directory: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(directory))
    if not series:
        raise InputError(f"{directory}: no DICOM series found in this directory")
    if len(series) > 1:
        raise InputError(
            f"{directory}: holds {len(series)} DICOM series ({', '.join(series[:4])}...); "
            f"put each series in its own directory"
        )
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(directory), series[0]))
    try:
        return reader.Execute()
    except RuntimeError as error:
        raise InputError(f"{directory}: cannot read the DICOM series ({str(error).strip()[:200]})") from None


def split_channels(image: sitk.Image, path: Path) -> list[sitk.Image]:
    """A 3D scalar image is one channel; a 3D vector image or a 4D image is several."""
    if image.GetDimension() == 2 or (image.GetDimension() == 3 and 1 in image.GetSize()[:2]):
        raise InputError(f"{path}: is a 2D image (size {image.GetSize()}); MedTuning segments 3D volumes")
    if image.GetDimension() == 4:
        size = list(image.GetSize())
        count = size[3]
        size[3] = 0
        channels = []
        for c in range(count):
            extractor = sitk.ExtractImageFilter()
            extractor.SetSize(size)
            extractor.SetIndex([0, 0, 0, c])
            channels.append(extractor.Execute(image))
        return channels
    if image.GetDimension() != 3:
        raise InputError(f"{path}: has {image.GetDimension()} dimensions; expected a 3D volume")
    if image.GetNumberOfComponentsPerPixel() > 1:
        return [sitk.VectorIndexSelectionCast(image, c) for c in range(image.GetNumberOfComponentsPerPixel())]
    return [image]


def grid_differences(a: sitk.Image, b: sitk.Image) -> list[str]:
    """How two images' grids differ, in words (empty when they share a grid)."""
    out = []
    if a.GetSize() != b.GetSize():
        out.append(f"size {a.GetSize()} vs {b.GetSize()}")
    if not np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=SPACING_RTOL, atol=0):
        out.append(f"spacing {fmt(a.GetSpacing())} vs {fmt(b.GetSpacing())}")
    if not np.allclose(a.GetOrigin(), b.GetOrigin(), rtol=0, atol=ORIGIN_ATOL_MM):
        out.append(f"origin {fmt(a.GetOrigin())} vs {fmt(b.GetOrigin())}")
    if not np.allclose(a.GetDirection(), b.GetDirection(), rtol=0, atol=DIRECTION_ATOL):
        out.append(f"direction {fmt(a.GetDirection())} vs {fmt(b.GetDirection())}")
    return out


def fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


@dataclass
class LoadedCase:
    """The channels of one case as float32 3D images on one grid, with their sources."""

    channels: list[sitk.Image]
    sources: list[str]

    @property
    def reference(self) -> sitk.Image:
        return self.channels[0]


def check_values(image: sitk.Image, source: str) -> None:
    values = sitk.GetArrayViewFromImage(image)
    finite = np.isfinite(values)
    if not finite.all():
        raise InputError(
            f"{source}: {int((~finite).sum())} voxels are NaN or infinite; fix or mask them before segmenting"
        )
    if values.min() == values.max():
        raise InputError(f"{source}: every voxel has the value {values.flat[0]:g}; the volume is empty")


def load_case(
    paths: Sequence[str | os.PathLike],
    expected_channels: int | None = None,
    channel_names: Sequence[str] | None = None,
    resample_channels: bool = False,
) -> LoadedCase:
    """Read, split and check the channels of one case.

    Raises InputError naming the file for: missing or unreadable files, 2D images, 4D
    images where 3D ones are expected, a wrong channel count, channels on different grids
    (unless `resample_channels`, which resamples them onto the first), NaN/Inf voxels and
    constant volumes.
    """
    channels: list[sitk.Image] = []
    sources: list[str] = []
    for path in paths:
        image = read_image(path)
        parts = split_channels(image, Path(path))
        if len(parts) > 1 and len(paths) > 1:
            raise InputError(
                f"{path}: is a 4D / multi-component image, but one 3D file per channel was given; "
                f"give either one file per channel or a single 4D file"
            )
        for c, part in enumerate(parts):
            channels.append(sitk.Cast(part, sitk.sitkFloat32))
            sources.append(str(path) if len(parts) == 1 else f"{path} [channel {c}]")
    if expected_channels is not None and len(channels) != expected_channels:
        names = f" ({', '.join(channel_names)})" if channel_names else ""
        what = "4D image where a 3D volume is expected" if len(paths) == 1 and len(channels) > 1 else "input"
        raise InputError(
            f"{', '.join(map(str, paths))}: {what} with {len(channels)} channel(s); "
            f"this set needs {expected_channels}{names}, in that order"
        )
    for c in range(1, len(channels)):
        differences = grid_differences(channels[0], channels[c])
        if not differences:
            channels[c].CopyInformation(channels[0])
            continue
        if not resample_channels:
            raise InputError(
                f"{sources[c]} is not on the grid of {sources[0]}: {'; '.join(differences)}. "
                f"Register the channels, or pass --resample-channels to resample them onto the first"
            )
        channels[c] = sitk.Resample(channels[c], channels[0], sitk.Transform(), sitk.sitkLinear, 0.0,
                                    sitk.sitkFloat32)
    for image, source in zip(channels, sources):
        check_values(image, source)
    return LoadedCase(channels, sources)


def check_output_path(path: str | os.PathLike, overwrite: bool) -> Path:
    """Fail before any work if the output cannot or must not be written."""
    p = Path(path)
    if image_suffix(p) not in WRITABLE_SUFFIXES:
        raise InputError(f"{p}: unsupported output format; use one of {', '.join(WRITABLE_SUFFIXES)}")
    if not p.parent.is_dir():
        raise InputError(f"{p}: the directory {p.parent} does not exist; create it first")
    if p.exists() and not overwrite:
        raise InputError(f"{p}: exists already; pass --overwrite to replace it")
    return p


def write_image(image: sitk.Image, path: str | os.PathLike, compress: bool = True) -> None:
    """Write atomically: a temporary file beside the target, then a rename."""
    p = Path(path)
    suffix = image_suffix(p)
    if suffix == ".mhd":
        write_metaimage_pair(image, p, compress)
        return
    with atomic_path(p, suffix) as tmp:  # the suffix tells ITK which format to write
        try:
            sitk.WriteImage(image, str(tmp), compress)
        except RuntimeError as error:  # ITK reports a full disk or a refused file this way
            reason = str(error).strip().splitlines()[-1]
            raise InputError(f"{p}: could not be written ({reason}); free some space or choose a folder you can "
                             f"write to") from None


def write_metaimage_pair(image: sitk.Image, path: Path, compress: bool) -> None:
    """.mhd points at a separate data file by name, so the pair cannot go through one temporary
    name: write both under their final names in a private folder beside the target, move the
    data file first and the header last (a reader finds no header before its data)."""
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.", suffix=".tmpdir") as folder:
        header = Path(folder) / path.name
        sitk.WriteImage(image, str(header), compress)
        for item in Path(folder).iterdir():
            if item != header:
                os.replace(item, path.parent / item.name)
        os.replace(header, path)
