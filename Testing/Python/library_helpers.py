"""A small real backbone (timm vit_tiny, random weights) in a temporary library, and sets on it."""

from __future__ import annotations

import shutil
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file

from MedTuningCore.models import build_model
from MedTuningCore.sets.adapter_set import make_manifest, save_adapter_set, tuned_state
from MedTuningCore.sets.library import Library

BACKBONE = "vit_tiny_patch16_224"
SHIPPED_SETS = Path(__file__).resolve().parents[2] / "Resources" / "AdapterSets"


def ship_only(folder: Path, monkeypatch, *names: str) -> Path:
    """A shipped-sets folder of the test's own, holding copies of these real shipped sets."""
    folder.mkdir()
    for name in names:
        shutil.copy(SHIPPED_SETS / f"{name}.safetensors", folder)
    monkeypatch.setenv("MEDTUNING_SHIPPED_SETS", str(folder))
    return folder


def library_with_backbone(root: Path, seed: int = 0) -> Library:
    torch.manual_seed(seed)
    standard = timm.create_model(BACKBONE, pretrained=False, num_classes=0)
    weights = root / f"{BACKBONE}-{seed}.safetensors"
    root.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in standard.state_dict().items()}, str(weights))
    library = Library(root / "library")
    library.backbones.import_file(BACKBONE, weights)
    return library


def tuned_model(library: Library, tuning: str = "med_adapter", classes: int = 3, channels: int = 1,
                seed: int = 1) -> torch.nn.Module:
    """A small model on the library's backbone whose tuned tensors differ from a fresh model's."""
    record = library.backbones.verify(BACKBONE)
    torch.manual_seed(seed)
    model = build_model(backbone=BACKBONE, decoder="setr_naive", tuning=tuning, in_channels=channels,
                        num_classes=classes, img_size=32, reference_depth=8, pretrained=str(record.path))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.01)
    return model


def save_model_as_set(library: Library, model: torch.nn.Module, path: Path, name: str = "demo", **manifest) -> Path:
    cfg = model.config
    doc = make_manifest(model, library.backbones.verify(BACKBONE).sha256, name,
                        [f"ch{i}" for i in range(cfg.in_channels)], [f"label{i}" for i in range(1, cfg.num_classes)],
                        modality="MR", license="CC-BY-4.0", **manifest)
    save_adapter_set(path, doc, tuned_state(model))
    return path


def make_set(library: Library, path: Path, name: str = "demo", tuning: str = "med_adapter", classes: int = 3,
             channels: int = 1, seed: int = 1, **manifest) -> Path:
    return save_model_as_set(library, tuned_model(library, tuning, classes, channels, seed), path, name, **manifest)
