"""The light U-Net decoder plus a convolutional stem on the slice itself (UNETR's idea,
Hatamizadeh et al. 2022: a ViT's tokens are coarse, so the decoder also gets features
computed from the image at full, 1/2 and 1/4 resolution).

With ViT-S/14 a token is 14 px; at 2 mm that is 28 mm, wider than an enhancing rim or a
spinal cord. The token decoder places structures roughly; the stem's skips let the last
convolutions draw their edges at the voxel level. It adds about 0.15 M parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from ..backbones import BackboneFeatures, SliceBackbone
from .unet import LightUNetDecoder
from .upernet import resize_to


def conv_bn_relu(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class ImageStem(nn.Module):
    """Features of the input slice at full, 1/2 and 1/4 resolution (finest first)."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int] = (16, 32, 64)) -> None:
        super().__init__()
        levels, previous = [], in_channels
        for i, width in enumerate(widths):
            levels.append(nn.Sequential(conv_bn_relu(previous, width, stride=1 if i == 0 else 2),
                                        conv_bn_relu(width, width)))
            previous = width
        self.levels = nn.ModuleList(levels)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        outputs, x = [], image
        for level in self.levels:
            x = level(x)
            outputs.append(x)
        return outputs


class StemUNetDecoder(nn.Module):
    """Token features through the light U-Net trunk, then refined coarse to fine with the
    stem's image features; logits at the full slice resolution."""

    uses_image = True  # MedTuningModel passes the input slices

    def __init__(self, backbone: SliceBackbone, num_classes: int, in_channels: int,
                 stem_widths: tuple[int, int, int] = (16, 32, 64),
                 refine_widths: tuple[int, int, int] = (16, 32, 48)) -> None:
        super().__init__()
        self.trunk = LightUNetDecoder(backbone, num_classes)
        trunk_width = self.trunk.classifier.in_channels
        del self.trunk.classifier  # the trunk's last map feeds the refinement instead
        self.stem = ImageStem(in_channels, stem_widths)
        refine, previous = [], trunk_width
        for stem_width, width in zip(stem_widths[::-1], refine_widths[::-1]):  # coarse to fine
            refine.append(conv_bn_relu(previous + stem_width, width))
            previous = width
        self.refine = nn.ModuleList(refine)
        self.classifier = nn.Conv2d(previous, num_classes, 1)

    def forward(self, features: BackboneFeatures, out_size: tuple[int, int],
                image: torch.Tensor | None = None) -> torch.Tensor:
        if image is None:
            raise ValueError("the unet_stem decoder needs the input slices (image=...)")
        x = self.trunk.features(features)
        for skip, refine in zip(self.stem(image.to(x.dtype))[::-1], self.refine):
            x = refine(torch.cat([resize_to(x, skip), skip], dim=1))
        return self.classifier(x)
