"""Med-Tuning models: frozen timm backbones, inserted tuning modules, decoders."""

from .decoders import DECODERS
from .med_adapter import MedAdapter
from .network import MedTuningModel, ModelConfig, build_model
from .tuning import TUNING_METHODS, count_parameters
from .weights import BackboneWeightsError

__all__ = [
    "DECODERS",
    "TUNING_METHODS",
    "BackboneWeightsError",
    "MedAdapter",
    "MedTuningModel",
    "ModelConfig",
    "build_model",
    "count_parameters",
]
