"""Pretrained backbone weights from a local file (the offline path; timm's hub download
is the same code with a tag instead of a file, and cannot run here)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from MedTuningCore.models import BackboneWeightsError, build_model


def save_standard(tmp_path, name: str, **kwargs):
    """A randomly initialised standard timm model, saved as a user's weights file."""
    model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model.state_dict(), path


def test_vit_weights_file_is_loaded_into_the_backbone(tmp_path):
    source, path = save_standard(tmp_path, "vit_small_patch14_dinov2", img_size=28)
    model = build_model(backbone="vit_small_patch14_dinov2", decoder="setr_naive", in_channels=3, num_classes=2,
                        img_size=28, pretrained=str(path))
    loaded = model.backbone.vit.state_dict()
    for key, value in loaded.items():
        if key == "pos_embed":  # the class token's slot is dropped with the class token
            torch.testing.assert_close(value, source["pos_embed"][:, 1:], rtol=0, atol=0)
        else:
            torch.testing.assert_close(value, source[key], rtol=0, atol=0, msg=key)
    assert "cls_token" in source and model.backbone.vit.cls_token is None


def test_patch_embedding_is_adapted_to_the_channel_count(tmp_path):
    source, path = save_standard(tmp_path, "vit_small_patch14_dinov2", img_size=28)
    model = build_model(backbone="vit_small_patch14_dinov2", decoder="setr_naive", in_channels=1, num_classes=2,
                        img_size=28, pretrained=str(path))
    weight = model.backbone.vit.patch_embed.proj.weight
    torch.testing.assert_close(weight, source["patch_embed.proj.weight"].sum(dim=1, keepdim=True))


def test_position_embedding_is_resampled_to_the_slice_size(tmp_path):
    source, path = save_standard(tmp_path, "vit_small_patch14_dinov2", img_size=56)
    model = build_model(backbone="vit_small_patch14_dinov2", decoder="setr_naive", in_channels=3, num_classes=2,
                        img_size=28, pretrained=str(path))
    assert model.backbone.vit.pos_embed.shape == (1, 4, 384)
    torch.testing.assert_close(model.backbone.vit.blocks[3].mlp.fc1.weight, source["blocks.3.mlp.fc1.weight"])


def test_swin_weights_fill_a_shallower_smaller_window_model_and_its_decoder(tmp_path):
    source, path = save_standard(tmp_path, "swin_tiny_patch4_window7_224", img_size=128)
    model = build_model(backbone="swin_tiny_patch4_window7_224", decoder="swin_unet", in_channels=3,
                        num_classes=2, pretrained=str(path))
    swin = model.backbone.swin
    torch.testing.assert_close(swin.layers[2].blocks[1].mlp.fc2.weight, source["layers.2.blocks.1.mlp.fc2.weight"])
    assert swin.layers[0].blocks[0].attn.relative_position_bias_table.shape == (49, 3)  # resized from 13x13
    # the expanding path starts from the encoder stage of the same width (as the official code)
    torch.testing.assert_close(model.decoder.levels[0][1].mlp.fc1.weight, swin.layers[2].blocks[1].mlp.fc1.weight)


def test_missing_file_names_the_file(tmp_path):
    missing = tmp_path / "nothing.safetensors"
    with pytest.raises(BackboneWeightsError, match="nothing.safetensors: no such weights file"):
        build_model(backbone="vit_small_patch14_dinov2", decoder="setr_naive", img_size=28, pretrained=str(missing))


def test_mismatched_file_is_refused_with_the_reason(tmp_path):
    _, path = save_standard(tmp_path, "vit_tiny_patch16_224", img_size=32)
    with pytest.raises(BackboneWeightsError, match="vit_tiny_patch16_224.safetensors: cannot load as vit_small"):
        build_model(backbone="vit_small_patch14_dinov2", decoder="setr_naive", img_size=28, pretrained=str(path))


def test_pickle_files_are_never_loaded(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(BackboneWeightsError, match="only .safetensors or .npz"):
        build_model(backbone="vit_small_patch14_dinov2", decoder="setr_naive", img_size=28, pretrained=str(path))


def test_truncated_file_is_a_clear_error(tmp_path):
    _, path = save_standard(tmp_path, "vit_small_patch14_dinov2", img_size=28)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(BackboneWeightsError, match="cannot load as vit_small_patch14_dinov2"):
        build_model(backbone="vit_small_patch14_dinov2", decoder="setr_naive", img_size=28, pretrained=str(path))


def test_a_safetensors_file_loads_where_timm_keeps_the_registry_custom_load(tmp_path, monkeypatch):
    """timm before 1.0.31 kept the registry's custom_load (True for augreg ViTs, whose hub file
    is the original .npz) when a local file was overlaid, and read a .safetensors file with
    the .npz reader (failed on a GPU node with timm 1.0.29). Simulated here on a newer timm."""
    real_create = timm.create_model

    def create_as_older_timm(name, pretrained=False, pretrained_cfg_overlay=None, **kwargs):
        if pretrained_cfg_overlay is not None and "custom_load" not in pretrained_cfg_overlay:
            pretrained_cfg_overlay = {**pretrained_cfg_overlay, "custom_load": True}
        return real_create(name, pretrained=pretrained, pretrained_cfg_overlay=pretrained_cfg_overlay, **kwargs)

    monkeypatch.setattr(timm, "create_model", create_as_older_timm)
    source, path = save_standard(tmp_path, "vit_tiny_patch16_224", img_size=32)
    model = build_model(backbone="vit_tiny_patch16_224", decoder="setr_naive", in_channels=3, num_classes=2,
                        img_size=32, pretrained=str(path))
    torch.testing.assert_close(model.backbone.vit.state_dict()["blocks.0.attn.qkv.weight"],
                               source["blocks.0.attn.qkv.weight"], rtol=0, atol=0)


def test_npz_weights_are_refused_for_swin_with_what_to_use(tmp_path):
    path = tmp_path / "swin.npz"
    np.savez(path, weight=np.zeros(3, dtype=np.float32))
    refused = r"swin\.npz: \.npz weights are read for ViT backbones only.*safetensors"
    with pytest.raises(BackboneWeightsError, match=refused):
        build_model(backbone="swin_tiny_patch4_window7_224", decoder="swin_unet", in_channels=1, num_classes=2,
                    img_size=64, pretrained=str(path))


def test_an_npz_that_is_not_a_jax_checkpoint_names_what_it_must_be(tmp_path):
    source, _ = save_standard(tmp_path, "vit_tiny_patch16_224", img_size=32)
    path = tmp_path / "state_dict.npz"
    np.savez(path, **{k: v.numpy() for k, v in source.items()})
    with pytest.raises(BackboneWeightsError, match=r"state_dict\.npz: cannot load.*original JAX checkpoint"):
        build_model(backbone="vit_tiny_patch16_224", decoder="setr_naive", in_channels=3, num_classes=2,
                    img_size=32, pretrained=str(path))
