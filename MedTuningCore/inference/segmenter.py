"""The Python API for segmentation: load a model once, segment many cases.

    segmenter = Segmenter.from_description({"model": {...}, "preprocessing": {...}})
    result = segmenter.segment_files(["flair.nii.gz", "t1c.nii.gz"])
    sitk.WriteImage(result.labels, "seg.nii.gz")

Until adapter-set files exist, a *description* (JSON) stands for a set: the model
configuration, preprocessing, inference and post-processing defaults, channel and label
names. Its weights are random (seeded), which makes the whole pipeline testable.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from ..data.preprocessing import (
    CaseGeometry,
    Preprocessing,
    preprocess,
    restore_probabilities_last,
    to_input_grid,
)
from ..data.regions import class_probabilities, nested_labels
from ..errors import InputError
from ..io.images import load_case
from ..models import MedTuningModel, build_model
from ..progress import ProgressCallback, notify
from ..sets.adapter_set import DEFAULT_COLORS, AdapterSet
from ..sets.loader import SetLoader
from ..sets.manifest import Manifest
from .postprocessing import PostProcessing, postprocess
from .sliding_window import InferenceOptions, SlidingWindowPredictor


@dataclass
class SegmentationResult:
    labels: sitk.Image  # uint8 label map on the input grid
    probabilities: sitk.Image | None  # float32 vector image (one component per class) or None
    seconds: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"


@dataclass
class SetDescription:
    """What a set says about a model, apart from its weights."""

    model: dict[str, Any]
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    inference: InferenceOptions = field(default_factory=InferenceOptions)
    postprocessing: PostProcessing = field(default_factory=PostProcessing)
    channels: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    label_values: list[int] = field(default_factory=list)  # output value of classes 1..K-1
    seed: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SetDescription:
        if "model" not in data:
            raise InputError("a set description needs a 'model' entry (backbone, decoder, tuning, classes...)")
        return cls(
            model=dict(data["model"]),
            preprocessing=Preprocessing.from_dict(data.get("preprocessing", {})),
            inference=InferenceOptions(**data.get("inference", {})),
            postprocessing=PostProcessing(**data.get("postprocessing", {})),
            channels=list(data.get("channels", [])),
            labels=list(data.get("labels", [])),
            seed=int(data.get("seed", 0)),
        )

    @classmethod
    def parse(cls, text: str) -> SetDescription:
        """A JSON file, a JSON string, or `key=value,...` model arguments."""
        path = Path(text)
        if text.endswith(".json"):
            if not path.is_file():
                raise InputError(f"{path}: no such set description file")
            try:
                return cls.from_dict(json.loads(path.read_text()))
            except (json.JSONDecodeError, TypeError) as error:
                raise InputError(f"{path}: not a valid set description ({error})") from None
        if text.lstrip().startswith("{"):
            return cls.from_dict(json.loads(text))
        model: dict[str, Any] = {}
        for item in filter(None, text.split(",")):
            if "=" not in item:
                raise InputError(f"--set {text!r}: expected a .json file or key=value pairs, e.g. "
                                 f"backbone=vit_small_patch14_dinov2,decoder=upernet,in_channels=2,num_classes=5")
            key, value = item.split("=", 1)
            model[key.strip()] = int(value) if value.strip().lstrip("-").isdigit() else value.strip()
        return cls(model=model)


def description_from_manifest(manifest: Manifest) -> SetDescription:
    return SetDescription(
        model=manifest.model.to_json(),
        preprocessing=Preprocessing.from_dict(manifest.preprocessing),
        inference=InferenceOptions(**manifest.inference),
        postprocessing=PostProcessing(**(manifest.postprocessing or {})),
        channels=[c.name for c in manifest.task.channels],
        labels=[label.name for label in manifest.task.labels],
        label_values=[label.value for label in manifest.task.labels],
    )


class Segmenter:
    """A loaded model with its preprocessing; segments arrays, images or files."""

    def __init__(self, model: MedTuningModel, description: SetDescription) -> None:
        self.adapter_set: AdapterSet | None = None
        self.description = description
        self.model = model
        self.predictor = SlidingWindowPredictor.for_model(model, description.inference)

    @classmethod
    def from_description(cls, description: SetDescription | dict[str, Any] | str) -> Segmenter:
        if isinstance(description, str):
            description = SetDescription.parse(description)
        elif isinstance(description, dict):
            description = SetDescription.from_dict(description)
        torch.manual_seed(description.seed)
        try:
            model = build_model(**description.model)
        except TypeError as error:
            raise InputError(f"set description: bad model entry ({error})") from None
        return cls(model, description)

    @classmethod
    def from_set(cls, adapter_set: AdapterSet | str, loader: SetLoader | None = None,
                 inference: dict[str, Any] | None = None) -> Segmenter:
        """Load an adapter set (an installed name or a file), verifying it and its backbone.
        Pass one `SetLoader` for several sets so that they share the backbone."""
        loader = loader or SetLoader()
        if not isinstance(adapter_set, AdapterSet):
            adapter_set = loader.library.get(adapter_set)
        description = description_from_manifest(adapter_set.manifest)
        if inference:
            description.inference = replace(description.inference, **inference)
        segmenter = cls(loader.model_for(adapter_set), description)
        segmenter.adapter_set = adapter_set
        return segmenter

    @property
    def in_channels(self) -> int:
        return self.model.config.in_channels

    @property
    def device(self) -> torch.device:
        return self.predictor.device

    def predict_preprocessed(self, volume: np.ndarray, progress: ProgressCallback | None = None) -> np.ndarray:
        """Preprocessed [C, D, H, W] -> class probabilities [K, D, H, W] (float32)."""
        logits = self.predictor.predict_logits(volume, progress)
        return class_probabilities(logits, self.model.config.regions is not None).numpy()

    def segment_images(self, channels: Sequence[sitk.Image], probabilities: bool = False,
                       progress: ProgressCallback | None = None) -> SegmentationResult:
        if len(channels) != self.in_channels:
            raise InputError(f"{len(channels)} channel image(s) given; this set needs {self.in_channels}")
        seconds = {}
        t = time.perf_counter()
        notify(progress, {"event": "progress", "stage": "preprocessing", "fraction": 0.0})
        volume, geometry = preprocess(list(channels), self.description.preprocessing)
        seconds["preprocess"] = time.perf_counter() - t
        t = time.perf_counter()
        probs = self.predict_preprocessed(volume, progress)
        seconds["inference"] = time.perf_counter() - t
        t = time.perf_counter()
        notify(progress, {"event": "progress", "stage": "restoring", "fraction": 1.0})
        labels, prob_image = self._restore(probs, geometry, probabilities)
        labels = postprocess(labels, self.description.postprocessing)
        seconds["restore"] = time.perf_counter() - t
        notify(progress, {"event": "progress", "stage": "done", "fraction": 1.0})
        return SegmentationResult(labels, prob_image, seconds, str(self.device))

    def label_entries(self) -> list[dict[str, Any]]:
        """Every foreground label: value, name, colour (0-255) and, where the set has it,
        terminology. A model description has no colours: it gets the default ones."""
        if self.adapter_set is not None:
            return [label.to_json() for label in self.adapter_set.manifest.task.labels]
        names = self.description.labels
        values = self.description.label_values or range(1, self.model.config.num_classes)
        return [{"value": v, "name": names[i] if i < len(names) else f"label {v}",
                 "color": DEFAULT_COLORS[i % len(DEFAULT_COLORS)]} for i, v in enumerate(values)]

    def class_values(self) -> np.ndarray | None:
        """Label value written for each class index, when it is not the index itself."""
        values = self.description.label_values
        if not values or values == list(range(1, len(values) + 1)):
            return None
        return np.array([0, *values], dtype=np.uint16 if max(values) > 255 else np.uint8)

    def _restore(self, probs: np.ndarray, geometry: CaseGeometry, want_probabilities: bool):
        table = self.class_values()
        restored = restore_probabilities_last(probs, geometry)  # [D, H, W, K]
        classes = (nested_labels(np.moveaxis(restored, -1, 0)) if self.model.config.regions is not None
                   else restored.argmax(axis=-1).astype(np.uint8))
        labels = to_input_grid(table[classes] if table is not None else classes, geometry)
        if not want_probabilities:
            return labels, None
        return labels, to_input_grid(restored, geometry)

    def segment_files(self, paths: Sequence[str], resample_channels: bool = False, probabilities: bool = False,
                      progress: ProgressCallback | None = None) -> SegmentationResult:
        start = time.perf_counter()
        case = load_case(paths, self.in_channels, self.description.channels or None, resample_channels)
        read = time.perf_counter() - start
        result = self.segment_images(case.channels, probabilities, progress)
        result.seconds = {"read": read, **result.seconds}
        return result

    def segment_array(self, array: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                      probabilities: bool = False) -> SegmentationResult:
        """[C, D, H, W] (or [D, H, W] for one channel) array with (x, y, z) spacing."""
        if array.ndim == 3:
            array = array[None]
        images = []
        for channel in array:
            image = sitk.GetImageFromArray(np.asarray(channel, dtype=np.float32))
            image.SetSpacing([float(s) for s in spacing])
            images.append(image)
        return self.segment_images(images, probabilities)
