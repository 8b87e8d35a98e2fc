"""Models for adapter sets, with each backbone's frozen weights loaded once per process.

The first set on a backbone reads and verifies its weights; every further set on the same
backbone (and slice geometry) shares those tensors instead of reading them again, so
switching sets costs only the set's own few MB.
"""

from __future__ import annotations

import json

import torch

from ..models import MedTuningModel
from ..models.network import (
    ModelConfig,
    assemble_model,
    backbone_state,
    channels_last,
    model_config,
    prepare_backbone,
)
from .adapter_set import AdapterSet, AdapterSetError
from .backbones import BackboneError, how_to_get
from .library import Library
from .manifest import Manifest


def config_from_manifest(manifest: Manifest) -> ModelConfig:
    m = manifest.model
    return model_config(m.backbone, m.decoder, m.tuning, m.in_channels, m.num_classes, m.alpha, m.img_size,
                        m.reference_depth, m.backbone_kwargs or {}, m.regions)


class SetLoader:
    def __init__(self, library: Library | None = None) -> None:
        self.library = library or Library()
        self._shared: dict[tuple, dict[str, torch.Tensor]] = {}
        self.backbone_loads = 0  # how often weights were read from disk (tests check sharing)

    def model_for(self, adapter_set: AdapterSet) -> MedTuningModel:
        config = config_from_manifest(adapter_set.manifest)
        name, wanted = adapter_set.backbone_name, adapter_set.backbone_sha256
        try:
            record = self.library.backbones.verify(name)
        except BackboneError as error:
            raise AdapterSetError(f"set {adapter_set.name!r} needs backbone {name}: {error}") from None
        if record.sha256 != wanted:
            raise AdapterSetError(
                f"set {adapter_set.name!r} was trained on {name} weights with SHA-256 {wanted}, but the library's "
                f"{name} has SHA-256 {record.sha256}. Get the weights the set names and {how_to_get(name)}"
            )
        key = (name, record.sha256, config.img_size, config.in_channels, json.dumps(config.backbone_kwargs,
                                                                                     sort_keys=True))
        if key in self._shared:
            net = prepare_backbone(config, backbone_state=self._shared[key])
        else:
            net = prepare_backbone(config, pretrained=str(record.path))
            self._shared[key] = backbone_state(net)
            self.backbone_loads += 1
        model = assemble_model(config, net, pretrained_encoder=True)
        load_set_tensors(model, adapter_set)
        return model.eval()


def load_set_tensors(model: MedTuningModel, adapter_set: AdapterSet) -> None:
    """Put the set's tensors into the model: every tuned tensor must come from the set."""
    state = model.state_dict()
    unknown = [k for k in adapter_set.tensors if k not in state]
    shapes = [k for k, v in adapter_set.tensors.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    missing = [n for n, p in model.named_parameters() if p.requires_grad and n not in adapter_set.tensors]
    if unknown or shapes or missing:
        raise AdapterSetError(f"set {adapter_set.name!r} does not fit its model description "
                              f"(unknown {unknown[:3]}, wrong shapes {shapes[:3]}, missing {missing[:3]})")
    # assign=True: the set's tensors replace the model's, never writing into shared storage
    model.load_state_dict(adapter_set.tensors, strict=False, assign=True)
    channels_last(model.decoder)
