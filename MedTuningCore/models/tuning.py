"""Tuning methods: what each inserts into the frozen backbone and what it trains.

Sizes reproduce the inserted-parameter counts of the Med-Tuning paper (Tables 1, 9):
- adapter (Houlsby): two bottleneck adapters per block (after attention and after the MLP),
  bottleneck C/8 -> ViT-B/16 3.560M, Swin-T 0.790M.
- adaptformer: one AdaptMLP per block beside the MLP, bottleneck 64, fixed scale 0.1
  -> 1.190M, 0.372M.
- st_adapter: one ST-Adapter before each block, bottleneck C/2, depth kernel 3
  -> 7.110M, 1.577M.
- vpt_shallow / vpt_deep: 10 prompt tokens at the input / before every block
  -> ViT 0.008M / 0.092M; Swin 0.001M / 0.029M (Swin prompts are extra keys and values of
  each window's attention; see baselines.PromptedWindowAttention).
- lora: rank 4, alpha 4, on the query and value projections (not in the paper's tables).
- med_adapter: one Med-Adapter after every block -> 2.846M, 0.738M at alpha 6, its
  up-projection zero-initialised (identity at step 0); med_adapter_paper: the same modules
  with the official code's initialisation; med_adapter_no_fft / med_adapter_no_fusion: the
  ablation's variants, med_adapter_paper without the FFT branch / the inter-stage fusion;
  med_adapter_pre_block: med_adapter_paper placed before each block (where ST-Adapter sits)
  instead of after it; med_adapter_no_conv5: med_adapter_paper without its kernel-5 branch;
  med_adapter_late: med_adapter_paper in the second half of the blocks only, with the
  position embedding frozen, so that nothing before the first adapter needs a gradient and
  the first half of the backbone runs forward only (a cheaper step on a CPU).
`full` trains everything; every other method follows the official code's split: the patch
embedding and the blocks are frozen, the position embedding, the final norm and the decoder
are trained (that is the paper's `head`).
"""

from __future__ import annotations

from typing import TypedDict

from torch import nn

from ..errors import ModelConfigError
from .backbones import SliceBackbone, SwinBackbone
from .baselines import (
    AdaptMLP,
    AfterModule,
    BottleneckAdapter,
    LoRAQKV,
    ParallelMLP,
    PromptedWindowAttention,
    Prompts,
    STAdapter,
)
from .inserted import inserted_parameter_ids
from .med_adapter import DEFAULT_REFERENCE_DEPTH, MedAdapter


class MedAdapterOptions(TypedDict, total=False):
    """Keyword arguments of insert_med_adapters that a variant sets."""

    zero_init_up: bool
    fourier: bool
    fusion: bool
    multi_scale: bool
    placement: str
    first_stage: int


#: Med-Adapter variants by name: the keyword arguments each gives insert_med_adapters.
#: Variants that differ only in initialisation share one architecture, so their sets load alike.
MED_ADAPTER_VARIANTS: dict[str, MedAdapterOptions] = {
    "med_adapter": {"zero_init_up": True},
    "med_adapter_paper": {"zero_init_up": False},
    # the ablation's variants: the default (the paper's start) less one part
    "med_adapter_no_fft": {"zero_init_up": False, "fourier": False},
    "med_adapter_no_fusion": {"zero_init_up": False, "fusion": False},
    # the place ST-Adapter uses: the frozen block then sees (and can undo) what the adapter adds
    "med_adapter_pre_block": {"zero_init_up": False, "placement": "before"},
    # one scale of depth-wise convolution (ST-Adapter has one); the rest of the default stays
    "med_adapter_no_conv5": {"zero_init_up": False, "multi_scale": False},
    # adapters in the last two of four stages only: the backward pass stops at the first of them
    "med_adapter_late": {"zero_init_up": False, "first_stage": 2},
}
#: What new sets are trained with when no --tuning is given (the choice and its evidence:
#: docs/results/recipe_cv.md, the Med-Adapter ablation).
DEFAULT_TUNING = "med_adapter_paper"
TUNING_METHODS = (
    "full", "head", "vpt_shallow", "vpt_deep", "adapter", "adaptformer", "st_adapter", "lora",
    *MED_ADAPTER_VARIANTS,
)
#: Methods that insert no module into the backbone (nothing for --head-first-epochs to hold back)
TUNING_WITHOUT_INSERTED = ("full", "head")
VPT_TOKENS = 10


#: Where a Med-Adapter sits relative to its block: "after" is the paper's place (Fig. 2).
MED_ADAPTER_PLACEMENTS = ("after", "before")


class PassThrough(nn.Module):
    """A block's place without an adapter: hands tokens and inter-stage state on unchanged."""

    def forward(self, x, state, depth: int):
        return x, state


def insert_med_adapters(backbone: SliceBackbone, alpha: int, reference_depth: int, fourier: bool = True,
                        fusion: bool = True, zero_init_up: bool = False, placement: str = "after",
                        multi_scale: bool = True, first_stage: int = 0) -> None:
    """One Med-Adapter per block, after it (the paper) or before it, from stage `first_stage`
    on; the last adapter of each stage carries the inter-stage fusion either way (the first
    adapted stage fuses zeros, as the paper's first stage does)."""
    if placement not in MED_ADAPTER_PLACEMENTS:
        raise ModelConfigError(f"unknown Med-Adapter placement {placement!r}; choose one of: "
                               f"{', '.join(MED_ADAPTER_PLACEMENTS)}")
    stages = 1 + max(info.stage for info in backbone.block_info)
    if first_stage >= stages:
        # e.g. med_adapter_late on a Swin built with fewer stages: it would train no adapter at all
        raise ModelConfigError(f"this backbone has {stages} stages, so Med-Adapters from stage {first_stage} on "
                               f"would insert nothing; use med_adapter_paper (adapters after every block) instead")
    adapters = []
    stage_hidden: dict[int, int] = {}
    for info in backbone.block_info:
        stage_hidden[info.stage] = info.dim // alpha
    for info in backbone.block_info:
        if info.stage < first_stage:
            adapters.append(PassThrough())
            continue
        hidden = info.dim // alpha
        hierarchical = isinstance(backbone, SwinBackbone)
        # The first stage has no predecessor; the official code feeds it zeros shaped like
        # a stage before it (half the channels, twice the grid for Swin).
        prev = stage_hidden.get(info.stage - 1, hidden // 2 if hierarchical else hidden)
        adapters.append(MedAdapter(
            info.dim, alpha, reference_depth, inter_stage=fusion and info.ends_stage,
            prev_hidden=prev, downsample=hierarchical, fourier=fourier, zero_init_up=zero_init_up,
            multi_scale=multi_scale,
        ))
    if placement == "after":
        backbone.post_block = nn.ModuleList(adapters)
    else:
        backbone.pre_block = nn.ModuleList(adapters)


def med_adapters(backbone: SliceBackbone) -> list[MedAdapter]:
    """The backbone's Med-Adapters in block order, on whichever side of the blocks they sit."""
    inserted = list(backbone.post_block or []) + list(backbone.pre_block or [])
    return [m for m in inserted if isinstance(m, MedAdapter)]


def insert_prompts(backbone: SliceBackbone, deep: bool) -> None:
    area = backbone.patch_size**2
    if isinstance(backbone, SwinBackbone):
        blocks = backbone.blocks if deep else backbone.blocks[:1]
        for block in blocks:
            block.attn = PromptedWindowAttention(block.attn, Prompts(VPT_TOKENS, block.dim, area))
        return
    count = len(backbone.blocks) if deep else 1
    dim = backbone.block_info[0].dim
    backbone.prompts = nn.ModuleList(Prompts(VPT_TOKENS, dim, area) for _ in range(count))
    backbone.deep_prompts = deep


def apply_tuning(backbone: SliceBackbone, method: str, alpha: int = 6,
                 reference_depth: int = DEFAULT_REFERENCE_DEPTH) -> None:
    """Insert the modules of `method` into `backbone` (in place)."""
    if method not in TUNING_METHODS:
        raise ModelConfigError(f"unknown tuning method {method!r}; choose one of: {', '.join(TUNING_METHODS)}")
    if method in MED_ADAPTER_VARIANTS:
        insert_med_adapters(backbone, alpha, reference_depth, **MED_ADAPTER_VARIANTS[method])
    elif method == "st_adapter":
        backbone.pre_block = nn.ModuleList(STAdapter(i.dim, i.dim // 2) for i in backbone.block_info)
    elif method in ("vpt_shallow", "vpt_deep"):
        insert_prompts(backbone, deep=method == "vpt_deep")
    for block, info in zip(backbone.blocks, backbone.block_info):
        if method == "adapter":
            block.attn = AfterModule(block.attn, BottleneckAdapter(info.dim, info.dim // 8))
            block.mlp = AfterModule(block.mlp, BottleneckAdapter(info.dim, info.dim // 8))
        elif method == "adaptformer":
            block.mlp = ParallelMLP(block.mlp, AdaptMLP(info.dim, 64))
        elif method == "lora":
            block.attn.qkv = LoRAQKV(block.attn.qkv)


def set_trainable(model: nn.Module, backbone: SliceBackbone, method: str) -> None:
    """Set requires_grad for `method`: everything for `full`; otherwise the backbone is
    frozen except its inserted modules and the few tensors the paper's recipe trains."""
    for p in model.parameters():
        p.requires_grad_(True)
    if method == "full":
        return
    inserted = inserted_parameter_ids(backbone)
    keep = set(backbone.tuned_parameter_names())
    if MED_ADAPTER_VARIANTS.get(method, {}).get("first_stage", 0) > 0:
        # a trained position embedding would need gradients through every block before the first adapter
        keep -= set(backbone.tuned_parameter_names_before_blocks())
    for name, p in backbone.named_parameters():
        p.requires_grad_(id(p) in inserted or name in keep)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """The paper's counts: total, tuned (receives gradients) and inserted (absent from the
    plain backbone + decoder)."""
    params = list(model.parameters())  # nn.Module.parameters() yields each tensor once
    inserted = inserted_parameter_ids(model)
    return {
        "total": sum(p.numel() for p in params),
        "tuned": sum(p.numel() for p in params if p.requires_grad),
        "inserted": sum(p.numel() for p in params if id(p) in inserted),
    }
