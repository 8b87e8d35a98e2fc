"""What every backbone gives the rest of the model: a frozen timm network run on slices,
with room for inserted modules before and after each block."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


@dataclass
class BackboneFeatures:
    """Per-stage feature maps of a batch of slices, each [B*D, C_i, h_i, w_i].

    `stage_outputs` are the stage ends (what UPerNet and SETR tap); `stage_inputs` are the
    features entering each stage (the Swin-UNet skips).
    """

    stage_outputs: list[torch.Tensor]
    stage_inputs: list[torch.Tensor] = field(default_factory=list)


@dataclass(frozen=True)
class BlockInfo:
    """Where a block sits: its token width, its stage, and whether it ends the stage."""

    dim: int
    stage: int
    ends_stage: bool


class SliceBackbone(nn.Module):
    """A 2D transformer applied to [B*D, C, H, W] slices.

    Subclasses wrap one timm model family and fill `blocks` (flat, in order) and
    `block_info`. Tuning methods attach modules to `pre_block` (run on the block input,
    e.g. ST-Adapter), `post_block` (run on the block output, e.g. the paper's Med-Adapter) and `prompts`
    (VPT tokens). Both kinds of block module take (tokens, inter-stage state, depth) and
    return (tokens, state), so a Med-Adapter can sit on either side of its block.
    """

    #: channels and strides of `stage_outputs`
    feature_channels: list[int]
    feature_strides: list[int]
    patch_size: int
    #: in-plane sizes must be multiples of this
    size_multiple: int

    def __init__(self) -> None:
        super().__init__()
        self.pre_block: nn.ModuleList | None = None
        self.post_block: nn.ModuleList | None = None
        self.prompts: nn.ModuleList | None = None
        self.deep_prompts = False
        self.grad_checkpointing = False

    # -- what subclasses provide ------------------------------------------------------
    @property
    def timm_model(self) -> nn.Module:
        """The wrapped timm network (its state dict is the standard timm layout)."""
        raise NotImplementedError

    @property
    def blocks(self) -> list[nn.Module]:
        raise NotImplementedError

    @property
    def block_info(self) -> list[BlockInfo]:
        raise NotImplementedError

    def tuned_parameter_names(self) -> list[str]:
        """Backbone parameters the paper's recipe trains even when the blocks are frozen
        (the official code freezes only the patch embedding and the blocks)."""
        raise NotImplementedError

    def tuned_parameter_names_before_blocks(self) -> list[str]:
        """Those of `tuned_parameter_names` that act before the first block (a gradient for
        them runs back through every block)."""
        return []

    # -- shared machinery ------------------------------------------------------------------
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def run_block(
        self,
        index: int,
        x: torch.Tensor,
        state: torch.Tensor | None,
        depth: int,
        prompt: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """One block with what is inserted around it; optionally checkpointed.

        The inter-stage state and the prompt tokens are explicit arguments so that a
        recomputation under checkpointing sees exactly the values of the first pass.
        """
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(self._block_step, index, x, state, depth, prompt, use_reentrant=False)
        return self._block_step(index, x, state, depth, prompt)

    def _block_step(self, index, x, state, depth, prompt):
        if self.pre_block is not None:
            x, state = self.pre_block[index](x, state, depth)
        x, prompt = self._apply_block(index, x, prompt)
        if self.post_block is not None:
            x, state = self.post_block[index](x, state, depth)
        return x, state, prompt

    def _apply_block(self, index: int, x: torch.Tensor, prompt: torch.Tensor | None):
        """Run the frozen block on tokens [N, Hs, Ws, C]; returns (tokens, prompt out)."""
        raise NotImplementedError

    def prompt_for_block(self, index: int, batch: int, carried: torch.Tensor | None) -> torch.Tensor | None:
        """VPT: deep prompts are replaced before every block, shallow ones enter once."""
        if self.prompts is None:
            return None
        if self.deep_prompts:
            return self.prompts[index](batch)
        return self.prompts[0](batch) if index == 0 else carried
