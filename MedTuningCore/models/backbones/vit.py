"""Plain ViTs from timm (`vit_*`), run slice by slice with 4 stages of equal length."""

from __future__ import annotations

import timm
import torch
from torch import nn

from ...errors import ModelConfigError
from .base import BackboneFeatures, BlockInfo, SliceBackbone


class ViTBackbone(SliceBackbone):
    """A timm VisionTransformer without prefix tokens.

    The official Med-Tuning code builds its ViT without a class token and taps the
    blocks 2, 5, 8 and 11. A timm checkpoint's class token (and registers) would be
    dropped right after the position embedding, before any block could read it, so they
    are left out of the model altogether; `weights.py` strips them when loading.
    """

    def __init__(self, name: str, img_size: int, in_channels: int, **kwargs) -> None:
        super().__init__()
        self.vit = timm.create_model(
            name,
            pretrained=False,
            img_size=img_size,
            in_chans=in_channels,
            num_classes=0,
            class_token=False,
            reg_tokens=0,
            global_pool="",
            fc_norm=False,
            dynamic_img_size=True,
            **kwargs,
        )
        depth = len(self.vit.blocks)
        if depth % 4:
            raise ModelConfigError(f"{name} has {depth} blocks; Med-Tuning splits a ViT into 4 equal stages")
        per_stage = depth // 4
        dim = self.vit.embed_dim
        self._info = [BlockInfo(dim, i // per_stage, (i + 1) % per_stage == 0) for i in range(depth)]
        self.patch_size = self.vit.patch_embed.patch_size[0]
        self.size_multiple = self.patch_size
        self.feature_channels = [dim] * 4
        self.feature_strides = [self.patch_size] * 4

    @property
    def timm_model(self) -> nn.Module:
        return self.vit

    @property
    def blocks(self) -> list[nn.Module]:
        return list(self.vit.blocks)

    @property
    def block_info(self) -> list[BlockInfo]:
        return self._info

    def tuned_parameter_names(self) -> list[str]:
        names = [n for n, _ in self.named_parameters() if n.startswith("vit.norm.")]
        if self.vit.pos_embed is not None:
            names.append("vit.pos_embed")
        return names

    def tuned_parameter_names_before_blocks(self) -> list[str]:
        return ["vit.pos_embed"] if self.vit.pos_embed is not None else []

    def _apply_block(self, index, x, prompt):
        n, hs, ws, c = x.shape
        tokens = x.reshape(n, hs * ws, c)
        if prompt is not None:
            tokens = torch.cat([prompt, tokens], dim=1)
        tokens = self.vit.blocks[index](tokens)
        if prompt is not None:
            prompt, tokens = tokens[:, : prompt.shape[1]], tokens[:, prompt.shape[1]:]
        return tokens.reshape(n, hs, ws, c), prompt

    def forward(self, x: torch.Tensor, depth: int) -> BackboneFeatures:
        n = x.shape[0]
        tokens = self.vit.patch_embed(x)  # [N, Hs, Ws, C] (dynamic_img_size keeps the grid)
        _, hs, ws, c = tokens.shape
        tokens = self.vit.norm_pre(self.vit.patch_drop(self.vit._pos_embed(tokens)))
        x = tokens.reshape(n, hs, ws, c)
        state = prompt = None
        taps = []
        last = len(self._info) - 1
        for i, info in enumerate(self._info):
            prompt = self.prompt_for_block(i, n, prompt)
            x, state, prompt = self.run_block(i, x, state, depth, prompt)
            if i == last:
                x = self.vit.norm(x)  # the final norm follows the last block and its adapters
            if info.ends_stage:
                taps.append(x.permute(0, 3, 1, 2))
        return BackboneFeatures(stage_outputs=taps, stage_inputs=taps)
