"""Swin Transformers from timm (`swin_*`), run slice by slice, stage by stage."""

from __future__ import annotations

import timm
import torch
from torch import nn

from .base import BackboneFeatures, BlockInfo, SliceBackbone

#: The paper's Swin-UNet configuration at 128 px (Appendix Table 8; official config.py).
PAPER_SWIN_UNET_CONFIG = {"depths": (2, 2, 2, 2), "window_size": 4}


class SwinBackbone(SliceBackbone):
    """A timm SwinTransformer. Stage inputs (after patch merging) are the Swin-UNet skips;
    stage outputs, the last one after the final norm, are the pyramid for other decoders."""

    def __init__(self, name: str, img_size: int, in_channels: int, **kwargs) -> None:
        super().__init__()
        self.swin = timm.create_model(
            name, pretrained=False, img_size=img_size, in_chans=in_channels, num_classes=0, **kwargs
        )
        self.patch_size = self.swin.patch_embed.patch_size[0]
        stages = list(self.swin.layers)
        self.size_multiple = self.patch_size * 2 ** (len(stages) - 1)
        self._blocks: list[nn.Module] = []
        self._info: list[BlockInfo] = []
        self._stage_first_block: list[int] = []
        for s, stage in enumerate(stages):
            self._stage_first_block.append(len(self._blocks))
            for b, block in enumerate(stage.blocks):
                self._blocks.append(block)
                self._info.append(BlockInfo(block.dim, s, b == len(stage.blocks) - 1))
        self.feature_channels = [stage.blocks[0].dim for stage in stages]
        self.feature_strides = [self.patch_size * 2**s for s in range(len(stages))]
        self.num_heads = [stage.blocks[0].attn.num_heads for stage in stages]
        # stage 0 has the largest grid, so its window is the configured one (not clamped)
        self.window_size = self.swin.layers[0].blocks[0].window_size[0]
        self.depths = [len(stage.blocks) for stage in stages]
        self.img_size = img_size

    @property
    def timm_model(self) -> nn.Module:
        return self.swin

    @property
    def blocks(self) -> list[nn.Module]:
        return self._blocks

    @property
    def block_info(self) -> list[BlockInfo]:
        return self._info

    def tuned_parameter_names(self) -> list[str]:
        return [n for n, _ in self.named_parameters() if n.startswith("swin.norm.")]

    def _apply_block(self, index, x, prompt):
        # Swin prompts live inside the wrapped window attention (see baselines.py).
        return self._blocks[index](x), prompt

    def forward(self, x: torch.Tensor, depth: int) -> BackboneFeatures:
        x = self.swin.patch_embed(x)  # [N, Hs, Ws, C]
        state = prompt = None
        inputs, outputs = [], []
        for s, stage in enumerate(self.swin.layers):
            x = stage.downsample(x)
            inputs.append(x.permute(0, 3, 1, 2))
            first = self._stage_first_block[s]
            for i in range(first, first + len(stage.blocks)):
                x, state, prompt = self.run_block(i, x, state, depth, prompt)
            outputs.append(x)
        outputs[-1] = self.swin.norm(outputs[-1])
        return BackboneFeatures(
            stage_outputs=[o.permute(0, 3, 1, 2) for o in outputs], stage_inputs=inputs
        )
