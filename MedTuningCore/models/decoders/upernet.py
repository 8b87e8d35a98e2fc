"""UPerNet (Xiao et al. 2018) in the Med-Tuning paper's layout (official code, head.py).

Tap 0 gets a 1x1 conv + BN + GELU to 256 channels; a pyramid pooling module (bins 1, 2, 4,
6) sits on the last tap; 1x1 laterals bring the other taps to 256; each top-down sum is
smoothed by one shared 3x3 conv; the four levels are concatenated, fused by a 3x3 conv and
classified by a 3x3 conv at the finest tap's resolution, then bilinearly upsampled.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import BackboneFeatures, SliceBackbone


def conv_bn(in_ch: int, out_ch: int, kernel: int, act: nn.Module) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(out_ch), act
    )


def resize_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if x.shape[-2:] == like.shape[-2:]:
        return x
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=True)


class PyramidPooling(nn.Module):
    """PSP module: pooled context at several bin sizes, concatenated and fused."""

    def __init__(self, channels: int, bins: tuple[int, ...] = (1, 2, 4, 6)) -> None:
        super().__init__()
        branch = channels // len(bins)
        self.branches = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), conv_bn(channels, branch, 1, nn.ReLU(inplace=True)))
            for b in bins
        )
        self.bottleneck = nn.Sequential(
            conv_bn(channels + branch * len(bins), channels, 3, nn.ReLU(inplace=True)), nn.Dropout2d(0.1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = [resize_to(branch(x), x) for branch in self.branches]
        return self.bottleneck(torch.cat([x, *pooled], dim=1))


class UPerNetDecoder(nn.Module):
    def __init__(self, backbone: SliceBackbone, num_classes: int, channels: int = 256) -> None:
        super().__init__()
        c = backbone.feature_channels
        self.stem = nn.Sequential(nn.Conv2d(c[0], channels, 1), nn.BatchNorm2d(channels), nn.GELU())
        self.ppm = PyramidPooling(c[-1])
        self.laterals = nn.ModuleList(nn.Conv2d(ch, channels, 1) for ch in c[1:])
        self.smooth = nn.Conv2d(channels, channels, 3, padding=1)  # shared by all levels
        self.fuse = conv_bn(len(c) * channels, channels, 3, nn.ReLU(inplace=True))
        self.classifier = nn.Conv2d(channels, num_classes, 3, padding=1)

    def forward(self, features: BackboneFeatures, out_size: tuple[int, int]) -> torch.Tensor:
        taps = list(features.stage_outputs)
        taps[-1] = self.ppm(taps[-1])
        levels = [self.stem(taps[0])] + [lat(t) for lat, t in zip(self.laterals, taps[1:])]
        # each level gets the next coarser one added (the official code's single top-down step)
        smoothed = [self.smooth(resize_to(levels[i + 1], levels[i]) + levels[i]) for i in range(len(levels) - 1)]
        pyramid = [smoothed[0]] + [resize_to(p, smoothed[0]) for p in smoothed[1:] + [levels[-1]]]
        logits = self.classifier(self.fuse(torch.cat(pyramid, dim=1)))
        return F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
