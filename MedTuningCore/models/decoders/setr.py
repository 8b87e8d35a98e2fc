"""SETR decoders (Zheng et al. 2021, Sec. 3.3): Naive, PUP and MLA, with 256 channels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import BackboneFeatures, SliceBackbone
from .upernet import conv_bn, resize_to


def upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class SETRNaiveDecoder(nn.Module):
    """Last tap -> 1x1 conv + BN + ReLU -> 1x1 classifier -> bilinear to full size."""

    def __init__(self, backbone: SliceBackbone, num_classes: int, channels: int = 256) -> None:
        super().__init__()
        self.project = conv_bn(backbone.feature_channels[-1], channels, 1, nn.ReLU(inplace=True))
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: BackboneFeatures, out_size: tuple[int, int]) -> torch.Tensor:
        return upsample(self.classifier(self.project(features.stage_outputs[-1])), out_size)


class SETRPUPDecoder(nn.Module):
    """Progressive upsampling: four (3x3 conv + BN + ReLU, x2 upsample) steps."""

    def __init__(self, backbone: SliceBackbone, num_classes: int, channels: int = 256, steps: int = 4) -> None:
        super().__init__()
        in_ch = backbone.feature_channels[-1]
        self.stages = nn.ModuleList(
            conv_bn(in_ch if i == 0 else channels, channels, 3, nn.ReLU(inplace=True)) for i in range(steps)
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: BackboneFeatures, out_size: tuple[int, int]) -> torch.Tensor:
        x = features.stage_outputs[-1]
        for stage in self.stages:
            x = F.interpolate(stage(x), scale_factor=2, mode="bilinear", align_corners=False)
        return upsample(self.classifier(x), out_size)


class SETRMLADecoder(nn.Module):
    """Multi-level aggregation: top-down sums of the four taps, each refined by two 3x3
    convs, upsampled x4, concatenated and classified."""

    def __init__(self, backbone: SliceBackbone, num_classes: int, channels: int = 256, head_channels: int = 128):
        super().__init__()
        relu = nn.ReLU
        self.laterals = nn.ModuleList(conv_bn(c, channels, 1, relu(inplace=True)) for c in backbone.feature_channels)
        self.heads = nn.ModuleList(
            nn.Sequential(conv_bn(channels, head_channels, 3, relu(inplace=True)),
                          conv_bn(head_channels, head_channels, 3, relu(inplace=True)))
            for _ in backbone.feature_channels
        )
        self.classifier = nn.Conv2d(head_channels * len(backbone.feature_channels), num_classes, 1)

    def forward(self, features: BackboneFeatures, out_size: tuple[int, int]) -> torch.Tensor:
        levels = [lat(t) for lat, t in zip(self.laterals, features.stage_outputs)]
        for i in range(len(levels) - 2, -1, -1):  # top-down aggregation
            levels[i] = levels[i] + resize_to(levels[i + 1], levels[i])
        size = tuple(4 * s for s in levels[0].shape[-2:])
        outs = [upsample(head(level), size) for head, level in zip(self.heads, levels)]
        return upsample(self.classifier(torch.cat(outs, dim=1)), out_size)
