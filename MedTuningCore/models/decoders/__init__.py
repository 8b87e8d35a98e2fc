"""Segmentation decoders, created by name."""

from __future__ import annotations

from torch import nn

from ...errors import ModelConfigError
from ..backbones import SliceBackbone
from .setr import SETRMLADecoder, SETRNaiveDecoder, SETRPUPDecoder
from .swin_unet import SwinUNetDecoder
from .unet import LightUNetDecoder
from .unet_stem import StemUNetDecoder
from .upernet import UPerNetDecoder

DECODERS: dict[str, type[nn.Module]] = {
    "upernet": UPerNetDecoder,
    "setr_naive": SETRNaiveDecoder,
    "setr_pup": SETRPUPDecoder,
    "setr_mla": SETRMLADecoder,
    "unet": LightUNetDecoder,
    "unet_stem": StemUNetDecoder,
    "swin_unet": SwinUNetDecoder,
}


def create_decoder(name: str, backbone: SliceBackbone, num_classes: int, in_channels: int) -> nn.Module:
    if name not in DECODERS:
        raise ModelConfigError(f"unknown decoder {name!r}; choose one of: {', '.join(DECODERS)}")
    if getattr(DECODERS[name], "uses_image", False):  # it also reads the slices themselves
        return DECODERS[name](backbone, num_classes, in_channels)
    return DECODERS[name](backbone, num_classes)


__all__ = ["DECODERS", "create_decoder"]
