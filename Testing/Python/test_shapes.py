"""Every backbone family and decoder maps [B, C, D, H, W] to [B, K, D, H, W] at the
smallest sizes they allow, with odd slab depths and 1 or 4 channels, 2 or 5 classes."""

from __future__ import annotations

import pytest
import torch

from MedTuningCore.models import DECODERS, TUNING_METHODS, build_model

# (backbone, smallest in-plane size): 2 patches for ViTs; Swin needs a 32 px grid to
# downsample 3 times (patch 4 x 2^3).
BACKBONES = [("vit_base_patch16_224", 32), ("vit_small_patch14_dinov2", 28), ("swin_tiny_patch4_window7_224", 32)]


def decoders_for(backbone: str) -> list[str]:
    return [d for d in DECODERS if d != "swin_unet" or backbone.startswith("swin")]


@pytest.mark.parametrize("backbone,size", BACKBONES, ids=[b for b, _ in BACKBONES])
@pytest.mark.parametrize("channels,classes,depth", [(1, 2, 3), (4, 5, 5)])
def test_every_decoder_gives_volume_logits(backbone, size, channels, classes, depth):
    for decoder in decoders_for(backbone):
        model = build_model(backbone=backbone, decoder=decoder, tuning="med_adapter", in_channels=channels,
                            num_classes=classes, img_size=size, reference_depth=8)
        x = torch.randn(2, channels, depth, size, size)
        with torch.no_grad():
            out = model.eval()(x)
        assert out.shape == (2, classes, depth, size, size), decoder
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("backbone,size", BACKBONES[1:], ids=[b for b, _ in BACKBONES[1:]])
@pytest.mark.parametrize("tuning", TUNING_METHODS)
def test_every_tuning_method_runs_forward_and_backward(backbone, size, tuning):
    model = build_model(backbone=backbone, decoder="upernet", tuning=tuning, in_channels=2, num_classes=3,
                        img_size=size, reference_depth=8)
    out = model(torch.randn(1, 2, 5, size, size))
    assert out.shape == (1, 3, 5, size, size)
    out.square().mean().backward()


def test_vit_accepts_other_multiples_of_the_patch_size():
    model = build_model(backbone="vit_small_patch14_dinov2", decoder="unet", in_channels=1, num_classes=2,
                        img_size=28, reference_depth=8).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 3, 42, 56)).shape == (1, 2, 3, 42, 56)


def test_slab_mixing_along_depth():
    """Slices are not processed independently: changing one slice changes its neighbours
    (with the official initialisation; the default variant starts as the identity, below)."""
    model = build_model(backbone="vit_small_patch14_dinov2", decoder="setr_naive", tuning="med_adapter_paper",
                        in_channels=1, num_classes=2, img_size=28, reference_depth=8).eval()
    x = torch.randn(1, 1, 5, 28, 28)
    y = x.clone()
    y[:, :, 4] += 1.0
    with torch.no_grad():
        a, b = model(x), model(y)
    assert not torch.allclose(a[:, :, 3], b[:, :, 3])


@pytest.mark.parametrize("backbone", ["vit_tiny_patch16_224", "swin_tiny_patch4_window7_224"])
def test_default_med_adapter_leaves_the_frozen_features_untouched_at_step_0(backbone):
    """The zero-initialised up-projection makes every adapter the identity before training,
    so the decoder first sees exactly the pretrained features; the paper's does not."""
    size = 32 if backbone.startswith("vit") else 64
    x = torch.randn(1, 3, 4, size, size)
    for tuning, identity in (("med_adapter", True), ("med_adapter_paper", False)):
        model = build_model(backbone=backbone, decoder="unet", tuning=tuning, in_channels=3, num_classes=2,
                            img_size=size, reference_depth=8).eval()
        slices = x.permute(0, 2, 1, 3, 4).reshape(4, 3, size, size)
        with torch.no_grad():
            adapted = model.backbone(slices, 4).stage_outputs
            model.backbone.post_block = None  # the same frozen network without the adapters
            plain = model.backbone(slices, 4).stage_outputs
        same = all(torch.equal(a, p) for a, p in zip(adapted, plain))
        assert same == identity, tuning


@pytest.mark.parametrize(
    "backbone,size,message",
    [
        ("vit_base_patch16_224", 40, "not a multiple of 16"),
        ("swin_tiny_patch4_window7_224", 48, "not a multiple of 32"),
    ],
)
def test_in_plane_size_not_multiple_is_a_clear_error(backbone, size, message):
    model = build_model(backbone=backbone, decoder="setr_naive", in_channels=1, num_classes=2, img_size=32,
                        reference_depth=8)
    with pytest.raises(ValueError, match=message):
        model(torch.randn(1, 1, 2, size, size))


def test_wrong_channel_count_is_a_clear_error():
    model = build_model(backbone="vit_small_patch14_dinov2", decoder="setr_naive", in_channels=2, num_classes=2,
                        img_size=28)
    with pytest.raises(ValueError, match="takes 2 channels, the input has 1"):
        model(torch.randn(1, 1, 2, 28, 28))


def test_swin_unet_needs_a_swin_backbone():
    with pytest.raises(ValueError, match="needs a Swin backbone"):
        build_model(backbone="vit_small_patch14_dinov2", decoder="swin_unet", img_size=28)


def test_swin_unet_defaults_to_the_paper_configuration_and_accepts_others():
    paper = build_model(backbone="swin_tiny_patch4_window7_224", decoder="swin_unet")
    assert paper.backbone.depths == [2, 2, 2, 2] and paper.backbone.window_size == 4
    other = build_model(backbone="swin_tiny_patch4_window7_224", decoder="swin_unet", img_size=224,
                        backbone_kwargs={"depths": (2, 2, 6, 2), "window_size": 7})
    assert other.backbone.depths == [2, 2, 6, 2] and other.backbone.window_size == 7
