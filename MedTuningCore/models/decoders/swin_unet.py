"""The Swin-UNet expanding path (Cao et al. 2021) as configured in the Med-Tuning code.

From the normed bottleneck, a patch-expanding layer doubles the grid and halves the
channels; at each level the stage input of the encoder (the skip) is concatenated, a
Linear brings the channels back, and Swin blocks with the encoder's heads, window and depth
refine it. A final x4 patch expansion and a 1x1 conv give per-pixel logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.swin_transformer import SwinTransformerBlock
from torch import nn

from ...errors import ModelConfigError
from ..backbones import BackboneFeatures, SliceBackbone, SwinBackbone


def pixel_unshuffle_tokens(x: torch.Tensor, scale: int) -> torch.Tensor:
    """[B, H, W, s*s*C] -> [B, s*H, s*W, C] (Swin-UNet's rearrange 'b h w (p1 p2 c)')."""
    b, h, w, c = x.shape
    c_out = c // (scale * scale)
    x = x.view(b, h, w, scale, scale, c_out).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h * scale, w * scale, c_out)


class PatchExpand(nn.Module):
    """Linear to scale*scale*out_dim channels, rearranged so the grid grows by `scale`, then LayerNorm."""

    def __init__(self, dim: int, scale: int = 2, out_dim: int | None = None) -> None:
        super().__init__()
        out_dim = out_dim or dim // scale
        self.scale = scale
        self.expand = nn.Linear(dim, scale * scale * out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(pixel_unshuffle_tokens(self.expand(x), self.scale))


class SwinUNetDecoder(nn.Module):
    def __init__(self, backbone: SliceBackbone, num_classes: int) -> None:
        super().__init__()
        if not isinstance(backbone, SwinBackbone):
            raise ModelConfigError("the swin_unet decoder needs a Swin backbone (e.g. swin_tiny_patch4_window7_224)")
        dims = backbone.feature_channels
        grid = backbone.img_size // backbone.patch_size
        self.bottleneck_expand = PatchExpand(dims[-1])
        self.concat_back = nn.ModuleList()
        self.levels = nn.ModuleList()
        self.expands = nn.ModuleList()
        for s in range(len(dims) - 2, -1, -1):  # the encoder's stages, coarse to fine
            res = max(grid // 2**s, 1)
            window = backbone.window_size
            self.concat_back.append(nn.Linear(2 * dims[s], dims[s]))
            self.levels.append(nn.Sequential(*[
                SwinTransformerBlock(
                    dim=dims[s], input_resolution=(res, res), num_heads=backbone.num_heads[s],
                    window_size=window, shift_size=0 if k % 2 == 0 else window // 2,
                )
                for k in range(backbone.depths[s])
            ]))
            self.expands.append(PatchExpand(dims[s]) if s > 0 else nn.Identity())
        self.norm_up = nn.LayerNorm(dims[0])
        self.final_expand = PatchExpand(dims[0], scale=backbone.patch_size, out_dim=dims[0])
        self.classifier = nn.Conv2d(dims[0], num_classes, 1, bias=False)

    def init_from_encoder(self, backbone: SwinBackbone) -> None:
        """Start each level's blocks from the encoder stage of the same width, as the
        official code does when it loads pretrained Swin weights into the decoder."""
        stages = list(backbone.swin.layers)
        for level, s in zip(self.levels, range(len(stages) - 2, -1, -1)):
            for dec_block, enc_block in zip(level, stages[s].blocks):
                dec_block.load_state_dict(enc_block.state_dict(), strict=False)

    def forward(self, features: BackboneFeatures, out_size: tuple[int, int]) -> torch.Tensor:
        x = self.bottleneck_expand(features.stage_outputs[-1].permute(0, 2, 3, 1))
        skips = features.stage_inputs[-2::-1]  # finest last
        for concat, level, expand, skip in zip(self.concat_back, self.levels, self.expands, skips):
            x = concat(torch.cat([x, skip.permute(0, 2, 3, 1)], dim=-1))
            x = expand(level(x))
        x = self.final_expand(self.norm_up(x)).permute(0, 3, 1, 2)
        logits = self.classifier(x)
        if logits.shape[-2:] != tuple(out_size):
            logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
        return logits
