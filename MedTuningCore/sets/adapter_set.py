"""Adapter sets: one `.safetensors` file per task with only the tuned tensors and a JSON
manifest in its metadata (`manifest.py`). Loading uses `io.tensor_files` and `json` only.

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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..io.tensor_files import TensorFileError, raw_digest, read_raw, tensor_digest, to_torch, write_tensor_file
from .manifest import AdapterSetError, BackboneRef, Channel, Label, Manifest, ModelSpec, Task

if TYPE_CHECKING:  # PyTorch is imported where tensors are made: listing sets does not need it
    import torch
    from torch import nn

MANIFEST_KEY = "medtuning_manifest"
MANIFEST_HASH_KEY = "medtuning_manifest_sha256"


@dataclass
class AdapterSet:
    """A loaded adapter set: its manifest and its tensors (a partial state dict)."""

    manifest: Manifest
    tensors: dict[str, torch.Tensor]
    path: Path | None = None

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def backbone_name(self) -> str:
        return self.manifest.backbone.name

    @property
    def backbone_sha256(self) -> str:
        return self.manifest.backbone.sha256

    def size_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def summary(self) -> dict:
        """What a listing shows of the set (`medtuning sets list`, the Slicer module's table)."""
        size = self.path.stat().st_size if self.path else self.size_bytes()
        return set_summary(self.manifest, size)


def set_summary(m: Manifest, size_bytes: int) -> dict:
    return {
        "name": m.name, "version": m.version, "task": m.task.modality,
        "channels": [c.name for c in m.task.channels], "labels": [lb.name for lb in m.task.labels],
        "backbone": m.backbone.name, "tuning": m.model.tuning, "size_mb": round(size_bytes / 1e6, 2),
        "license": m.license, "metrics": m.metrics,
    }


def tuned_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """What an adapter set stores: every tuned parameter, plus the buffers (BatchNorm
    statistics) of the decoder and of the inserted modules. With `full` tuning that is the
    whole model."""
    from ..models.inserted import Inserted

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
) -> Manifest:
    """A complete manifest for `model` (a MedTuningModel) with sensible defaults.
    `terminology` gives each label's category and type codes (see `MedTuningCore.sets.terminology`)."""
    import platform

    import timm
    import torch

    from .. import __version__

    palette = colors or DEFAULT_COLORS
    label_entries = [
        Label(value=label_values[i] if label_values else i + 1, name=label, color=palette[i % len(palette)],
              terminology=terminology[i] if terminology and i < len(terminology) and terminology[i] else None)
        for i, label in enumerate(labels)]
    cfg = model.config
    return Manifest(
        name=name, version=version, description=description, license=license, authors=authors or [],
        task=Task(modality=modality, channels=[Channel(c) for c in channels], labels=label_entries),
        model=ModelSpec(**cfg.to_dict()),
        backbone=BackboneRef(name=cfg.backbone, sha256=backbone_sha256, source=backbone_source),
        preprocessing=preprocessing or {}, inference=inference or {}, postprocessing=postprocessing or {},
        provenance={
            "training_data": "", "cases": 0, "epochs": 0, "date": "",
            "software": {"medtuning": __version__, "torch": torch.__version__, "timm": timm.__version__,
                         "python": platform.python_version()},
            **(provenance or {}),
        },
        metrics=metrics or {},
    )


def save_adapter_set(path: str | os.PathLike, manifest: Manifest, tensors: Mapping[str, torch.Tensor]) -> None:
    """Write a set atomically after validating its manifest (by the reader's own rules: a set
    that would not load is never written)."""
    document = replace(manifest, tensors_sha256=tensor_digest(tensors)).to_json()
    Manifest.from_json(document, path)
    text = manifest_text(document)
    write_tensor_file(path, tensors, {MANIFEST_KEY: text, MANIFEST_HASH_KEY: hashlib.sha256(text.encode()).hexdigest()})


def manifest_text(document: Mapping[str, Any]) -> str:
    return json.dumps(document, sort_keys=True)


def read_release_id(path: str | os.PathLike) -> tuple[Manifest, str]:
    """The verified manifest of a set and the SHA-256 its file records for it. The manifest
    names the tensors' own hash, so this identifies one release of a set whatever file it was
    copied to (the shipped sets' release record uses it). The stored hash, not one computed
    again from the parsed manifest: a later MedTuning that writes manifests differently still
    recognises the files an earlier one wrote."""
    manifest, _raw, digest = _read_verified(Path(path))
    return manifest, digest


def load_adapter_set(path: str | os.PathLike) -> AdapterSet:
    """Read and verify a set; raises AdapterSetError naming the file and what is wrong."""
    manifest, raw, _digest = _read_verified(Path(path))
    return AdapterSet(manifest, to_torch(raw), Path(path))


def read_manifest(path: str | os.PathLike) -> Manifest:
    """The manifest of a set, verified like `load_adapter_set` (tensor bytes included), without
    importing PyTorch: for listings."""
    return _read_verified(Path(path))[0]


def _read_verified(p: Path) -> tuple[Manifest, dict, str]:
    """The manifest, the raw tensors and the manifest's SHA-256, all checked."""
    if not p.is_file():
        raise AdapterSetError(f"{p}: no such adapter-set file")
    try:
        raw, metadata = read_raw(p)
    except TensorFileError as error:
        raise AdapterSetError(str(error)) from None
    text = metadata.get(MANIFEST_KEY)
    if text is None:
        raise AdapterSetError(f"{p}: not a MedTuning adapter set (no manifest in its metadata)")
    digest = hashlib.sha256(text.encode()).hexdigest()
    if digest != metadata.get(MANIFEST_HASH_KEY):
        raise AdapterSetError(f"{p}: the manifest was changed or damaged (its SHA-256 does not match)")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise AdapterSetError(f"{p}: manifest is not valid JSON ({error})") from None
    manifest = Manifest.from_json(document, p)
    if raw_digest(raw) != manifest.tensors_sha256:
        raise AdapterSetError(f"{p}: tensor data was changed or damaged (SHA-256 differs from the manifest)")
    return manifest, raw, digest
