"""Segmentation decoders, created by name."""

from __future__ import annotations

from torch import nn

from ...errors import ModelConfigError
from ..backbones import SliceBackbone
from .setr import SETRMLADecoder, SETRNaiveDecoder, SETRPUPDecoder
from .swin_unet import SwinUNetDecoder
from .unet import LightUNetDecoder
from .upernet import UPerNetDecoder

DECODERS: dict[str, type[nn.Module]] = {
    "upernet": UPerNetDecoder,
    "setr_naive": SETRNaiveDecoder,
    "setr_pup": SETRPUPDecoder,
    "setr_mla": SETRMLADecoder,
    "unet": LightUNetDecoder,
    "swin_unet": SwinUNetDecoder,
}


def create_decoder(name: str, backbone: SliceBackbone, num_classes: int) -> nn.Module:
    if name not in DECODERS:
        raise ModelConfigError(f"unknown decoder {name!r}; choose one of: {', '.join(DECODERS)}")
    return DECODERS[name](backbone, num_classes)


__all__ = ["DECODERS", "create_decoder"]
