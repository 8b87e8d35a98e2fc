"""The Med-Tuning segmentation model and its factory.

A volume [B, C, D, H, W] is folded into B*D slices for the frozen 2D backbone; the inserted
adapters see the slab again and mix along D; the decoder maps each slice to logits, which
are unfolded to [B, K, D, H, W].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import ModelConfigError
from .backbones import PAPER_SWIN_UNET_CONFIG, SliceBackbone, backbone_family, create_backbone
from .decoders import create_decoder
from .med_adapter import DEFAULT_REFERENCE_DEPTH
from .tuning import DEFAULT_TUNING, apply_tuning, count_parameters, set_trainable
from .weights import load_pretrained_backbone

DEFAULT_SLICE_SIZE = 128


@dataclass
class ModelConfig:
    """Everything needed to rebuild the network (stored in adapter-set manifests)."""

    backbone: str = "vit_base_patch16_224"
    decoder: str = "upernet"
    tuning: str = DEFAULT_TUNING
    in_channels: int = 4
    num_classes: int = 4
    alpha: int = 6
    img_size: int = DEFAULT_SLICE_SIZE
    reference_depth: int = DEFAULT_REFERENCE_DEPTH
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    # Region outputs (data/regions.py): one sigmoid output per nested region, each a list of
    # training class indices; None for the usual softmax over num_classes classes. A region
    # model still writes num_classes classes (background and one per region).
    regions: list[list[int]] | None = None

    @property
    def num_outputs(self) -> int:
        """Channels the network outputs: one per region, else one per class."""
        return len(self.regions) if self.regions else self.num_classes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class MedTuningModel(nn.Module):
    """Backbone + decoder on volumes: [B, C, D, H, W] -> logits [B, K, D, H, W]."""

    def __init__(self, config: ModelConfig, backbone: SliceBackbone, decoder: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.decoder = decoder

    @property
    def size_multiple(self) -> int:
        return self.backbone.size_multiple

    def check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 5:
            raise ValueError(f"expected a volume batch [B, C, D, H, W], got shape {tuple(x.shape)}")
        if x.shape[1] != self.config.in_channels:
            raise ValueError(f"the model takes {self.config.in_channels} channels, the input has {x.shape[1]}")
        h, w = x.shape[-2:]
        m = self.size_multiple
        if h % m or w % m:
            raise ValueError(
                f"in-plane size {h}x{w} is not a multiple of {m} (the patch size"
                f"{' times the Swin downsampling' if m != self.backbone.patch_size else ''}): "
                f"pad or crop the slices to a multiple of {m}, e.g. {((h + m - 1) // m) * m}x{((w + m - 1) // m) * m}"
            )
        if backbone_family(self.config.backbone) == "swin" and (h, w) != (self.config.img_size,) * 2:
            raise ValueError(
                f"this Swin model was built for {self.config.img_size}x{self.config.img_size} slices, got {h}x{w}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        b, c, d, h, w = x.shape
        slices = x.permute(0, 2, 1, 3, 4).reshape(b * d, c, h, w)
        features = self.backbone(slices, d)
        if getattr(self.decoder, "uses_image", False):
            logits = self.decoder(features, (h, w), image=slices)
        else:
            logits = self.decoder(features, (h, w))
        return logits.view(b, d, -1, h, w).permute(0, 2, 1, 3, 4)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each (block + inserted modules) pair in the backward pass."""
        self.backbone.set_grad_checkpointing(enable)

    def parameter_counts(self) -> dict[str, int]:
        return count_parameters(self)


def channels_last(decoder: nn.Module) -> nn.Module:
    """The decoders are 2D convolutions over B*D slices: oneDNN and cuDNN run them about 1.8x
    faster with channels-last weights, whose outputs are channels-last too (measured on
    unet_stem, docs/INFERENCE.md). Saved tensors are made contiguous, so files do not change;
    tensors loaded with assign=True must be converted again (sets/loader.py), or a reloaded
    model would compute in the other layout, slower and, in bf16, not bit-identical."""
    return decoder.to(memory_format=torch.channels_last)


def backbone_state(net: SliceBackbone) -> dict[str, torch.Tensor]:
    """A prepared backbone's timm weights, to share through `build_model(backbone_state=...)`."""
    return {k: v.detach() for k, v in net.timm_model.state_dict().items()}


def default_slice_size(patch_size: int, wanted: int = DEFAULT_SLICE_SIZE) -> int:
    """The paper's 128 px, rounded to a multiple of the patch size (126 for patch 14)."""
    return max(patch_size, round(wanted / patch_size) * patch_size)


def build_model(
    backbone: str = "vit_base_patch16_224",
    decoder: str = "upernet",
    tuning: str = DEFAULT_TUNING,
    in_channels: int = 4,
    num_classes: int = 4,
    alpha: int = 6,
    img_size: int | None = None,
    reference_depth: int = DEFAULT_REFERENCE_DEPTH,
    pretrained: str | None = None,
    grad_checkpointing: bool = False,
    backbone_kwargs: dict[str, Any] | None = None,
    backbone_state: dict[str, torch.Tensor] | None = None,
    regions: list[list[int]] | None = None,
) -> MedTuningModel:
    """Create a Med-Tuning model.

    Args:
        backbone: a timm `vit_*` or `swin_*` model name.
        decoder: upernet, setr_naive, setr_pup, setr_mla, unet, unet_stem (unet plus a
            convolutional stem on the slices at full resolution) or swin_unet.
        tuning: full, head, vpt_shallow, vpt_deep, adapter, adaptformer, st_adapter, lora, med_adapter
            (and its variants med_adapter_paper, med_adapter_no_fft, med_adapter_no_fusion,
            med_adapter_pre_block, med_adapter_no_conv5, med_adapter_late).
        in_channels, num_classes: input channels (modalities) and output classes (incl. background).
        alpha: Med-Adapter bottleneck reduction ratio.
        img_size: in-plane slice size; default 128 px rounded to a patch multiple.
        reference_depth: slab depth D0 for which the FFT filters are learnt.
        pretrained: None (random), a timm tag (or "timm" for the default tag; needs a
            network), or a local .safetensors / .npz file of the standard timm model.
        grad_checkpointing: recompute (block + adapter) activations in the backward pass.
        backbone_kwargs: extra timm arguments, e.g. {"depths": (2, 2, 6, 2), "window_size": 7}.
        backbone_state: weights of the backbone's timm module taken from another model
            (`backbone_state`); they are shared, not copied, so several adapter sets
            in one process hold the backbone in memory once.
        regions: nested regions as lists of class indices, one sigmoid output each
            (data/regions.py); num_classes is then len(regions) + 1.
    """
    config = model_config(backbone, decoder, tuning, in_channels, num_classes, alpha, img_size, reference_depth,
                          backbone_kwargs, regions)
    net = prepare_backbone(config, pretrained, backbone_state)
    return assemble_model(config, net, pretrained_encoder=bool(pretrained) or backbone_state is not None,
                          grad_checkpointing=grad_checkpointing)


def model_config(backbone: str, decoder: str, tuning: str, in_channels: int, num_classes: int, alpha: int,
                 img_size: int | None, reference_depth: int, backbone_kwargs: dict[str, Any] | None,
                 regions: list[list[int]] | None = None) -> ModelConfig:
    """Fill in defaults: the paper's Swin-UNet configuration and the 128 px slice size."""
    kwargs = dict(backbone_kwargs or {})
    family = backbone_family(backbone)
    if family == "swin" and decoder == "swin_unet" and backbone.startswith("swin_tiny_patch4"):
        kwargs = {**PAPER_SWIN_UNET_CONFIG, **kwargs}
    if img_size is None:
        probe_patch = int(backbone.split("patch")[1].split("_")[0]) if "patch" in backbone else 16
        img_size = default_slice_size(probe_patch)
    return ModelConfig(backbone, decoder, tuning, in_channels, num_classes, alpha, img_size, reference_depth, kwargs,
                       regions)


def prepare_backbone(config: ModelConfig, pretrained: str | None = None,
                     backbone_state: dict[str, torch.Tensor] | None = None) -> SliceBackbone:
    """The plain backbone (no tuning inserted yet) with its weights."""
    net = create_backbone(config.backbone, config.img_size, config.in_channels, **config.backbone_kwargs)
    if config.img_size % net.size_multiple:
        raise ModelConfigError(
            f"slice size {config.img_size} is not a multiple of {net.size_multiple} for {config.backbone}; "
            f"use e.g. {default_slice_size(net.size_multiple, config.img_size)}"
        )
    if pretrained:
        load_pretrained_backbone(net, config.backbone, pretrained, config.img_size, config.in_channels)
    if backbone_state is not None:
        net.timm_model.load_state_dict(backbone_state, strict=True, assign=True)
    return net


def assemble_model(config: ModelConfig, net: SliceBackbone, pretrained_encoder: bool = False,
                   grad_checkpointing: bool = False) -> MedTuningModel:
    """Decoder + tuning method around a prepared backbone."""
    head = channels_last(create_decoder(config.decoder, net, config.num_outputs, config.in_channels))
    if pretrained_encoder and hasattr(head, "init_from_encoder"):
        head.init_from_encoder(net)
    apply_tuning(net, config.tuning, config.alpha, config.reference_depth)
    model = MedTuningModel(config, net, head)
    set_trainable(model, net, config.tuning)
    model.set_grad_checkpointing(grad_checkpointing)
    return model
