"""MedTuningCore: parameter-efficient tuning of frozen 2D transformers for 3D segmentation
(Med-Tuning, Shen et al., MIDL 2024), usable headless and from the MedTuningSegment Slicer module.

The Python API (imported on first use, so that `import MedTuningCore` stays light):

    from MedTuningCore import segment, finetune, FinetuneConfig, evaluate, compare, Segmenter, Library, MedTuningError
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it
API = {
    "segment": "MedTuningCore.inference.segment",
    "finetune": "MedTuningCore.training.finetune",
    "FinetuneConfig": "MedTuningCore.training.finetune",
    "evaluate": "MedTuningCore.evaluation.evaluate",
    "compare": "MedTuningCore.evaluation.compare",
    "Segmenter": "MedTuningCore.inference.segmenter",
    "Library": "MedTuningCore.sets.library",
    "MedTuningError": "MedTuningCore.errors",
    "build_model": "MedTuningCore.models",
}
__all__ = ["__version__", *API]


def __getattr__(name: str) -> Any:
    if name in API:
        return getattr(importlib.import_module(API[name]), name)
    raise AttributeError(f"module 'MedTuningCore' has no attribute {name!r}")
