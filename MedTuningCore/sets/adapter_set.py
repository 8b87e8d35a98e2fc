"""Adapter sets: one `.safetensors` file per task with only the tuned tensors and a JSON
manifest in its metadata. Loading uses our strict safetensors reader and `json` only.

The file's metadata holds two strings: `medtuning_manifest` (the manifest JSON) and
`medtuning_manifest_sha256` (its hash). The manifest records the SHA-256 of the tensors
(`tensors_sha256`) and of the backbone weights the set was trained on, so any change to a
tensor, to the manifest or to the backbone is detected before a set is used.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import MedTuningError
from ..io.tensor_files import TensorFileError, read_tensor_file, tensor_digest, write_tensor_file
from ..models.inserted import Inserted
from .terminology import TerminologyError, validate_terminology

FORMAT = "medtuning-adapter-set"
FORMAT_VERSION = 1
MANIFEST_KEY = "medtuning_manifest"
MANIFEST_HASH_KEY = "medtuning_manifest_sha256"


class AdapterSetError(MedTuningError):
    """An adapter set is invalid, damaged, or does not fit the backbone."""


# (key, type or tuple of types, required) for each section; nested sections are validated separately.
SCHEMA: dict[str, list[tuple[str, Any, bool]]] = {
    "": [("format", str, True), ("format_version", int, True), ("name", str, True), ("version", str, True),
         ("description", str, True), ("license", str, True), ("authors", list, True), ("task", dict, True),
         ("model", dict, True), ("backbone", dict, True), ("preprocessing", dict, True), ("inference", dict, True),
         ("postprocessing", dict, False), ("provenance", dict, True), ("metrics", dict, True),
         ("tensors_sha256", str, True)],
    "task": [("modality", str, True), ("channels", list, True), ("labels", list, True)],
    "model": [("backbone", str, True), ("decoder", str, True), ("tuning", str, True), ("alpha", int, True),
              ("reference_depth", int, True), ("img_size", int, True), ("in_channels", int, True),
              ("num_classes", int, True), ("backbone_kwargs", dict, False)],
    "backbone": [("name", str, True), ("sha256", str, True), ("source", str, False)],
    "provenance": [("training_data", str, True), ("cases", int, True), ("epochs", int, True), ("date", str, True),
                   ("software", dict, True)],
}
LABEL_SCHEMA = [("value", int, True), ("name", str, True), ("color", list, True), ("terminology", dict, False)]
CHANNEL_SCHEMA = [("name", str, True)]
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_.")


def _check_fields(where: str, data: Mapping[str, Any], fields: list[tuple[str, Any, bool]]) -> None:
    for key, kind, required in fields:
        if key not in data:
            if required:
                raise AdapterSetError(f"manifest: missing {where + '.' if where else ''}{key}")
            continue
        value = data[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise AdapterSetError(
                f"manifest: {where + '.' if where else ''}{key} must be {kind.__name__}, got {type(value).__name__}"
            )


def validate_manifest(manifest: Any) -> dict[str, Any]:
    """Check types and required keys; return the manifest. Raises AdapterSetError."""
    if not isinstance(manifest, dict):
        raise AdapterSetError("manifest: must be a JSON object")
    _check_fields("", manifest, SCHEMA[""])
    if manifest["format"] != FORMAT:
        raise AdapterSetError(f"manifest: format is {manifest['format']!r}, expected {FORMAT!r}")
    if manifest["format_version"] > FORMAT_VERSION:
        raise AdapterSetError(f"manifest: format version {manifest['format_version']} is newer than this "
                              f"MedTuning reads ({FORMAT_VERSION}); update MedTuning")
    if not manifest["name"] or not set(manifest["name"]) <= NAME_CHARS:
        raise AdapterSetError(f"manifest: name {manifest['name']!r} must be lower-case letters, digits, '-', '_', '.'")
    for section in ("task", "model", "backbone", "provenance"):
        _check_fields(section, manifest[section], SCHEMA[section])
    for i, channel in enumerate(manifest["task"]["channels"]):
        if not isinstance(channel, dict):
            raise AdapterSetError(f"manifest: task.channels[{i}] must be an object")
        _check_fields(f"task.channels[{i}]", channel, CHANNEL_SCHEMA)
    for i, label in enumerate(manifest["task"]["labels"]):
        if not isinstance(label, dict):
            raise AdapterSetError(f"manifest: task.labels[{i}] must be an object")
        _check_fields(f"task.labels[{i}]", label, LABEL_SCHEMA)
        if "terminology" in label:
            try:
                validate_terminology(label["terminology"])
            except TerminologyError as error:
                raise AdapterSetError(f"manifest: task.labels[{i}].terminology ({label['name']}): {error}") from None
    model = manifest["model"]
    if len(manifest["task"]["channels"]) != model["in_channels"]:
        raise AdapterSetError("manifest: task.channels does not match model.in_channels")
    if len(manifest["task"]["labels"]) != model["num_classes"] - 1:
        raise AdapterSetError("manifest: task.labels must list every class but the background")
    if model["backbone"] != manifest["backbone"]["name"]:
        raise AdapterSetError("manifest: model.backbone and backbone.name differ")
    return manifest


@dataclass
class AdapterSet:
    """A loaded adapter set: its manifest and its tensors (a partial state dict)."""

    manifest: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    path: Path | None = None

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def backbone_name(self) -> str:
        return self.manifest["backbone"]["name"]

    @property
    def backbone_sha256(self) -> str:
        return self.manifest["backbone"]["sha256"]

    def size_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())


def tuned_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """What an adapter set stores: every tuned parameter, plus the buffers (BatchNorm
    statistics) of the decoder and of the inserted modules. With `full` tuning that is the
    whole model."""
    inserted_buffers = {id(b) for m in model.modules() if isinstance(m, Inserted) for b in m.buffers()}
    params = {id(p) for p in model.parameters()}
    keep = {}
    for name, t in model.state_dict(keep_vars=True).items():  # persistent tensors only
        if id(t) in params:
            if t.requires_grad:
                keep[name] = t
        elif name.startswith("decoder.") or id(t) in inserted_buffers or model.config.tuning == "full":
            keep[name] = t
    return {k: v.detach().cpu().contiguous() for k, v in keep.items()}


# Distinct, colour-blind-friendly defaults (Okabe & Ito 2008), then a wheel of hues.
DEFAULT_COLORS = [[230, 159, 0], [86, 180, 233], [0, 158, 115], [240, 228, 66], [0, 114, 178], [213, 94, 0],
                  [204, 121, 167], [153, 153, 153]]


def make_manifest(
    model: nn.Module,
    backbone_sha256: str,
    name: str,
    channels: list[str],
    labels: list[str],
    *,
    version: str = "1.0.0",
    description: str = "",
    license: str = "unspecified",
    authors: list[str] | None = None,
    modality: str = "",
    colors: list[list[int]] | None = None,
    terminology: list[dict[str, Any] | None] | None = None,
    preprocessing: dict[str, Any] | None = None,
    inference: dict[str, Any] | None = None,
    postprocessing: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    backbone_source: str = "",
    label_values: list[int] | None = None,
) -> dict[str, Any]:
    """A complete manifest for `model` (a MedTuningModel) with sensible defaults.
    `terminology` gives each label's category and type codes (see `MedTuningCore.sets.terminology`)."""
    import platform

    import timm

    from .. import __version__

    label_entries = []
    for i, label in enumerate(labels):
        value = label_values[i] if label_values else i + 1
        entry = {"value": value, "name": label, "color": (colors or DEFAULT_COLORS)[i % len(colors or DEFAULT_COLORS)]}
        if terminology and i < len(terminology) and terminology[i]:
            entry["terminology"] = terminology[i]
        label_entries.append(entry)
    cfg = model.config.to_dict()
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "name": name, "version": version,
        "description": description, "license": license, "authors": authors or [],
        "task": {"modality": modality, "channels": [{"name": c} for c in channels], "labels": label_entries},
        "model": cfg,
        "backbone": {"name": cfg["backbone"], "sha256": backbone_sha256, "source": backbone_source},
        "preprocessing": preprocessing or {}, "inference": inference or {}, "postprocessing": postprocessing or {},
        "provenance": {
            "training_data": "", "cases": 0, "epochs": 0, "date": "",
            "software": {"medtuning": __version__, "torch": torch.__version__, "timm": timm.__version__,
                         "python": platform.python_version()},
            **(provenance or {}),
        },
        "metrics": metrics or {},
        "tensors_sha256": "",
    }


def save_adapter_set(path: str | os.PathLike, manifest: dict[str, Any], tensors: Mapping[str, torch.Tensor]) -> None:
    """Write a set atomically after validating its manifest."""
    manifest = dict(manifest)
    manifest.setdefault("format", FORMAT)
    manifest.setdefault("format_version", FORMAT_VERSION)
    manifest["tensors_sha256"] = tensor_digest(tensors)
    validate_manifest(manifest)
    text = json.dumps(manifest, sort_keys=True)
    write_tensor_file(path, tensors, {MANIFEST_KEY: text, MANIFEST_HASH_KEY: hashlib.sha256(text.encode()).hexdigest()})


def load_adapter_set(path: str | os.PathLike) -> AdapterSet:
    """Read and verify a set; raises AdapterSetError naming the file and what is wrong."""
    p = Path(path)
    if not p.is_file():
        raise AdapterSetError(f"{p}: no such adapter-set file")
    try:
        tensors, metadata = read_tensor_file(p)
    except TensorFileError as error:
        raise AdapterSetError(str(error)) from None
    text = metadata.get(MANIFEST_KEY)
    if text is None:
        raise AdapterSetError(f"{p}: not a MedTuning adapter set (no manifest in its metadata)")
    if hashlib.sha256(text.encode()).hexdigest() != metadata.get(MANIFEST_HASH_KEY):
        raise AdapterSetError(f"{p}: the manifest was changed or damaged (its SHA-256 does not match)")
    try:
        manifest = validate_manifest(json.loads(text))
    except json.JSONDecodeError as error:
        raise AdapterSetError(f"{p}: manifest is not valid JSON ({error})") from None
    except AdapterSetError as error:
        raise AdapterSetError(f"{p}: {error}") from None
    if tensor_digest(tensors) != manifest["tensors_sha256"]:
        raise AdapterSetError(f"{p}: tensor data was changed or damaged (SHA-256 differs from the manifest)")
    return AdapterSet(manifest, tensors, p)
