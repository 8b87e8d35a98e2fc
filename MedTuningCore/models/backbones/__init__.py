"""Backbone families, created by timm model name."""

from __future__ import annotations

from ...errors import ModelConfigError
from .base import BackboneFeatures, BlockInfo, SliceBackbone
from .swin import PAPER_SWIN_UNET_CONFIG, SwinBackbone
from .vit import ViTBackbone

__all__ = [
    "BackboneFeatures",
    "BlockInfo",
    "PAPER_SWIN_UNET_CONFIG",
    "SliceBackbone",
    "SwinBackbone",
    "ViTBackbone",
    "backbone_family",
    "create_backbone",
]

_FAMILIES = {"vit": ViTBackbone, "swin": SwinBackbone}


def backbone_family(name: str) -> str:
    """'vit' or 'swin' for a timm model name (the part before the first underscore)."""
    family = name.split("_", 1)[0]
    if family not in _FAMILIES:
        raise ModelConfigError(
            f"unsupported backbone {name!r}: use a timm 'vit_*' model (e.g. vit_base_patch16_224, "
            f"vit_small_patch14_dinov2) or a 'swin_*' model (e.g. swin_tiny_patch4_window7_224)"
        )
    return family


def create_backbone(name: str, img_size: int, in_channels: int, **kwargs) -> SliceBackbone:
    import timm

    if not timm.is_model(name):
        raise ModelConfigError(f"timm has no model named {name!r} (see timm.list_models('{name.split('_')[0]}_*'))")
    return _FAMILIES[backbone_family(name)](name, img_size=img_size, in_channels=in_channels, **kwargs)
