"""Pretrained backbone weights: a timm hub tag (needs a network) or a local file.

Both go through timm's own loading into the standard timm model (which adapts the patch
embedding to the input channels and resamples position embeddings and relative-position
tables), and are then transferred into the MedTuning backbone, dropping what that backbone
deliberately leaves out (class and register tokens; Swin blocks beyond a shallower depth).
Only `.safetensors` and `.npz` files are read: neither can run code when loaded.
"""

from __future__ import annotations

import re
from pathlib import Path

import timm
import torch
from torch import nn

from ..errors import MedTuningError
from .backbones import SliceBackbone, SwinBackbone, ViTBackbone

SAFE_SUFFIXES = (".safetensors", ".npz")


class BackboneWeightsError(MedTuningError):
    """Pretrained weights could not be found, read, or matched to the backbone."""


def is_local_file(pretrained: str) -> bool:
    return pretrained.endswith(SAFE_SUFFIXES) or "/" in pretrained or "\\" in pretrained or Path(pretrained).exists()


def _standard_model(name: str, pretrained: str, img_size: int, in_channels: int, backbone: SliceBackbone):
    kwargs = {"img_size": img_size, "in_chans": in_channels, "num_classes": 0}
    if isinstance(backbone, SwinBackbone):
        kwargs["window_size"] = backbone.window_size  # timm resizes relative-position tables
    if is_local_file(pretrained):
        path = Path(pretrained)
        if not path.is_file():
            raise BackboneWeightsError(f"{path}: no such weights file for backbone {name}")
        if not path.name.endswith(SAFE_SUFFIXES):
            raise BackboneWeightsError(
                f"{path}: only .safetensors or .npz weights are read (pickled .pth/.bin files can run "
                f"code when loaded); convert it once with safetensors.torch.save_file in a trusted environment"
            )
        # timm reads an .npz only as an original JAX/Flax ViT checkpoint (its ViT's own reader)
        npz = path.name.endswith(".npz")
        if npz and not isinstance(backbone, ViTBackbone):
            raise BackboneWeightsError(f"{path}: .npz weights are read for ViT backbones only (original JAX "
                                       f"checkpoints); for {name} use a .safetensors file of its timm state dict")
        try:
            # custom_load set explicitly: the registry's value describes the hub's file (True for the
            # original .npz of augreg ViTs), and timm before 1.0.31 kept it for a local file, so a
            # .safetensors went to the .npz reader (seen with timm 1.0.29 on a GPU node)
            overlay = {"file": str(path), "custom_load": npz}
            return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
        except Exception as error:  # timm raises RuntimeError, KeyError, ValueError...
            expected = f"an original JAX checkpoint of {name}" if npz else f"a timm state dict of {name}"
            raise BackboneWeightsError(
                f"{path}: cannot load as {name} weights ({type(error).__name__}: {str(error)[:400]}). "
                f"The file must hold {expected}."
            ) from error
    tag = name if pretrained in ("timm", "default") else pretrained
    try:
        return timm.create_model(tag, pretrained=True, **kwargs)
    except Exception as error:
        raise BackboneWeightsError(
            f"could not get timm weights {tag!r} ({type(error).__name__}: {str(error)[:300]}). Without a network, "
            f"download the weights elsewhere (e.g. model.safetensors of timm/{tag} on the Hugging Face hub) "
            f"and pass the local file instead."
        ) from error


def _droppable(key: str, backbone: SliceBackbone) -> bool:
    """Keys of the standard timm model that the MedTuning backbone leaves out on purpose."""
    if key in ("cls_token", "reg_token") or key.startswith("head."):
        return True
    match = re.match(r"layers\.(\d+)\.blocks\.(\d+)\.", key)
    if match and isinstance(backbone, SwinBackbone):
        return int(match.group(2)) >= backbone.depths[int(match.group(1))]
    return False


def transfer_standard_weights(source: nn.Module, backbone: SliceBackbone) -> None:
    """Copy a standard timm model's weights into the backbone's timm model, strictly."""
    target = backbone.timm_model
    src = source.state_dict()
    if isinstance(backbone, ViTBackbone) and getattr(source, "pos_embed", None) is not None:
        prefix = 0 if source.no_embed_class else source.num_prefix_tokens
        src["pos_embed"] = src["pos_embed"][:, prefix:]
    dst = target.state_dict()
    missing = [k for k in dst if k not in src]
    extra = [k for k in src if k not in dst and not _droppable(k, backbone)]
    shape = [
        f"{k} {tuple(src[k].shape)} vs {tuple(dst[k].shape)}" for k in dst if k in src and src[k].shape != dst[k].shape
    ]
    if missing or extra or shape:
        raise BackboneWeightsError(
            f"weights do not match the backbone: missing {missing[:5]}, unexpected {extra[:5]}, shapes {shape[:5]}"
        )
    with torch.no_grad():
        target.load_state_dict({k: src[k] for k in dst}, strict=True)


def load_pretrained_backbone(
    backbone: SliceBackbone, name: str, pretrained: str, img_size: int, in_channels: int
) -> None:
    """Load `pretrained` (a timm tag, "timm" for the default tag, or a local file) into `backbone`."""
    source = _standard_model(name, pretrained, img_size, in_channels, backbone)
    try:
        transfer_standard_weights(source, backbone)
    except BackboneWeightsError as error:
        raise BackboneWeightsError(f"{pretrained}: {error}") from None
