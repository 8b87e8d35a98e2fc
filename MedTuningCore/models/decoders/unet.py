"""A light U-Net-style conv decoder: from the deepest tap upwards, each step doubles the
resolution, adds the next shallower tap (1x1-projected, resized) and refines with one 3x3
conv. Few parameters, so the decoder does not dominate the tuned count."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import BackboneFeatures, SliceBackbone
from .upernet import conv_bn, resize_to


class LightUNetDecoder(nn.Module):
    def __init__(self, backbone: SliceBackbone, num_classes: int, widths: tuple[int, ...] = (256, 128, 64, 32)):
        super().__init__()
        c = backbone.feature_channels[::-1]  # deepest first
        self.project = nn.ModuleList(conv_bn(ch, w, 1, nn.ReLU(inplace=True)) for ch, w in zip(c, widths))
        self.refine = nn.ModuleList(
            conv_bn(2 * w, w, 3, nn.ReLU(inplace=True)) for w in widths[1:]
        )
        self.reduce = nn.ModuleList(nn.Conv2d(wi, wo, 1) for wi, wo in zip(widths[:-1], widths[1:]))
        self.classifier = nn.Conv2d(widths[-1], num_classes, 1)

    def features(self, features: BackboneFeatures) -> torch.Tensor:
        """The last refined map (widths[-1] channels), before the classifier."""
        taps = features.stage_outputs[::-1]
        x = self.project[0](taps[0])
        for i, refine in enumerate(self.refine):
            x = self.reduce[i](F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
            skip = resize_to(self.project[i + 1](taps[i + 1]), x)
            x = refine(torch.cat([x, skip], dim=1))
        return x

    def forward(self, features: BackboneFeatures, out_size: tuple[int, int]) -> torch.Tensor:
        logits = self.classifier(self.features(features))
        return F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
