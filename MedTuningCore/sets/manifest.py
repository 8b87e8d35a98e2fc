"""The manifest of an adapter set, typed: what the set does, how to rebuild and run its model,
where it comes from.

A manifest is JSON inside the set file. `Manifest.from_json(obj, source)` is its one strict
reader: it checks every key and type at once and raises one `AdapterSetError` naming the file
and listing every problem (missing keys, wrong types, unknown keys where the format is closed),
then the rules between fields. `to_json()` gives back exactly the JSON it was read from, so a
set re-saved unchanged keeps its manifest hash.

The schema is the dataclasses below: a field typed `X | None` is optional (absent in the
JSON when None), every other field is required. Closed sections (the top level, task, channels,
labels, model, backbone) refuse unknown keys; free-form sections (preprocessing, inference,
postprocessing, provenance, metrics, backbone_kwargs, terminology) are plain dicts, checked by
their own code: provenance for its required keys here, terminology by `terminology.py`.
"""

from __future__ import annotations

import copy
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, TypeVar

from ..errors import MedTuningError
from .terminology import TerminologyError, validate_terminology

FORMAT = "medtuning-adapter-set"
FORMAT_VERSION = 1
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_.")
# provenance is open (training runs add what they know) but these are always there
PROVENANCE_KEYS: dict[str, type] = {"training_data": str, "cases": int, "epochs": int, "date": str,
                                    "software": dict}

T = TypeVar("T", bound="JsonObject")


class AdapterSetError(MedTuningError):
    """An adapter set is invalid, damaged, or does not fit the backbone."""


class JsonObject:
    """A dataclass read from and written to a JSON object with exactly its fields as keys."""

    @classmethod
    def from_checked(cls: type[T], data: dict[str, Any]) -> T:
        """Build from JSON that `problems` found nothing wrong with."""
        hints = typing.get_type_hints(cls)
        return cls(**{key: _build(value, hints[key]) for key, value in data.items()})

    def to_json(self) -> dict[str, Any]:
        """The JSON object (fresh containers: changing it does not change this object)."""
        return {f.name: _to_json(getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass
class Channel(JsonObject):
    name: str


@dataclass
class Label(JsonObject):
    value: int
    name: str
    color: list[int]  # 0-255 red, green, blue
    terminology: dict[str, Any] | None = None  # category and type codes, see terminology.py


@dataclass
class Task(JsonObject):
    modality: str
    channels: list[Channel]
    labels: list[Label]  # every class but the background, in class order

    def values_by_name(self) -> dict[str, int]:
        return {label.name: label.value for label in self.labels}


@dataclass
class ModelSpec(JsonObject):
    """What rebuilds the network (the fields of models.network.ModelConfig)."""

    backbone: str
    decoder: str
    tuning: str
    alpha: int
    reference_depth: int
    img_size: int
    in_channels: int
    num_classes: int
    backbone_kwargs: dict[str, Any] | None = None
    regions: list[list[int]] | None = None  # sigmoid region outputs (data/regions.py); absent: softmax


@dataclass
class BackboneRef(JsonObject):
    """The frozen weights the set was trained on: a timm name and their content SHA-256."""

    name: str
    sha256: str
    source: str | None = None


@dataclass(kw_only=True)
class Manifest(JsonObject):
    name: str
    version: str
    description: str
    license: str
    authors: list[str]
    task: Task
    model: ModelSpec
    backbone: BackboneRef
    preprocessing: dict[str, Any]
    inference: dict[str, Any]
    provenance: dict[str, Any] = field(metadata={"required": PROVENANCE_KEYS})
    metrics: dict[str, Any]
    postprocessing: dict[str, Any] | None = None
    tensors_sha256: str = ""  # filled in by save_adapter_set
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    @classmethod
    def from_json(cls, obj: Any, source: object) -> Manifest:
        """The manifest in `obj` (parsed JSON) of the file `source`; raises AdapterSetError
        listing every problem."""
        if not isinstance(obj, dict):
            raise AdapterSetError(f"{source}: manifest: must be a JSON object")
        version = obj.get("format_version")
        if isinstance(version, int) and version > FORMAT_VERSION:
            # a newer format's other differences would only be noise: this is the one thing to fix
            raise AdapterSetError(f"{source}: manifest: format version {version} is newer than this MedTuning "
                                  f"reads ({FORMAT_VERSION}); update MedTuning")
        found = problems(obj, cls, "")
        manifest = None if found else cls.from_checked(obj)
        found = found or manifest.rule_problems()
        if found:
            raise AdapterSetError(f"{source}: manifest: " + "; ".join(found))
        return manifest

    def rule_problems(self) -> list[str]:
        """What is wrong between well-typed fields."""
        found = []
        if self.format != FORMAT:
            found.append(f"format is {self.format!r}, expected {FORMAT!r}")
        if not self.name or not set(self.name) <= NAME_CHARS:
            found.append(f"name {self.name!r} must be lower-case letters, digits, '-', '_', '.'")
        for i, label in enumerate(self.task.labels):
            if label.terminology is not None:
                try:
                    validate_terminology(label.terminology)
                except TerminologyError as error:
                    found.append(f"task.labels[{i}].terminology ({label.name}): {error}")
        if len(self.task.channels) != self.model.in_channels:
            found.append("task.channels does not match model.in_channels")
        if len(self.task.labels) != self.model.num_classes - 1:
            found.append("task.labels must list every class but the background")
        if self.model.regions is not None and len(self.model.regions) + 1 != self.model.num_classes:
            found.append("model.regions must give one region per class but the background")
        if self.model.backbone != self.backbone.name:
            found.append("model.backbone and backbone.name differ")
        return found


def problems(value: Any, kind: Any, where: str) -> list[str]:
    """Every way `value` (parsed JSON) is not of type `kind`, each naming its place."""
    kind = _required_form(kind)
    if is_dataclass(kind):
        if not isinstance(value, dict):
            return [f"{where or 'the manifest'} must be an object, got {type(value).__name__}"]
        return _object_problems(value, kind, where)
    if typing.get_origin(kind) is list:
        if not isinstance(value, list):
            return [f"{where} must be list, got {type(value).__name__}"]
        (item,) = typing.get_args(kind)
        return [p for i, v in enumerate(value) for p in problems(v, item, f"{where}[{i}]")]
    base = typing.get_origin(kind) or kind  # dict[str, Any] -> dict: JSON keys are strings anyway
    if not isinstance(value, base) or (base is int and isinstance(value, bool)):
        return [f"{where} must be {base.__name__}, got {type(value).__name__}"]
    return []


def _object_problems(data: dict[str, Any], kind: type, where: str) -> list[str]:
    hints = typing.get_type_hints(kind)
    found = []
    for f in fields(kind):
        key = f"{where}.{f.name}" if where else f.name
        if f.name not in data:
            if not _is_optional(hints[f.name]):
                found.append(f"missing {key}")
            continue
        inner = problems(data[f.name], hints[f.name], key)
        found += inner or _required_keys_problems(data[f.name], f.metadata.get("required", {}), key)
    known = {f.name for f in fields(kind)}
    found += [f"unknown key {where + '.' if where else ''}{k}" for k in sorted(set(data) - known)]
    return found


def _required_keys_problems(data: dict[str, Any], required: dict[str, type], where: str) -> list[str]:
    """The required keys of an otherwise free-form section."""
    return [p for key, kind in required.items()
            for p in (problems(data[key], kind, f"{where}.{key}") if key in data else [f"missing {where}.{key}"])]


def _is_optional(kind: Any) -> bool:
    return typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in typing.get_args(kind)


def _required_form(kind: Any) -> Any:
    """X for `X | None`: an optional field, when present, must be an X (null is refused)."""
    if _is_optional(kind):
        (kind,) = [k for k in typing.get_args(kind) if k is not type(None)]
    return kind


def _build(value: Any, kind: Any) -> Any:
    kind = _required_form(kind)
    if is_dataclass(kind):
        return kind.from_checked(value)
    if typing.get_origin(kind) is list:
        (item,) = typing.get_args(kind)
        return [_build(v, item) for v in value]
    return copy.deepcopy(value)  # the manifest owns its dicts: the caller's JSON may change later


def _to_json(value: Any) -> Any:
    if isinstance(value, JsonObject):
        return value.to_json()
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    return copy.deepcopy(value)
