"""The unet_stem decoder: the light U-Net decoder plus a convolutional stem that reads the
slices at full, 1/2 and 1/4 resolution (UNETR's idea), so that structures smaller than a
token can be drawn."""

from __future__ import annotations

import pytest
import torch

from MedTuningCore.models import DECODERS, build_model


def model(decoder: str, backbone: str = "vit_tiny_patch16_224", size: int = 32):
    torch.manual_seed(0)
    return build_model(backbone=backbone, decoder=decoder, tuning="med_adapter_paper", in_channels=2,
                       num_classes=3, img_size=size, reference_depth=8)


def test_unet_stem_is_registered_and_small():
    assert "unet_stem" in DECODERS
    stem, plain = model("unet_stem").parameter_counts(), model("unet").parameter_counts()
    extra = stem["total"] - plain["total"]
    assert 50_000 < extra < 200_000, extra  # the stem and the refinement convolutions only
    assert stem["tuned"] - plain["tuned"] == extra  # all of it is trained


@pytest.mark.parametrize("backbone,size", [("vit_tiny_patch16_224", 32), ("swin_tiny_patch4_window7_224", 64)])
def test_logits_at_full_resolution_from_both_paths(backbone, size):
    net = model("unet_stem", backbone, size)
    x = torch.randn(1, 2, 3, size, size, requires_grad=True)
    out = net(x)
    assert out.shape == (1, 3, 3, size, size)
    out[0, 1, 1, size // 2, size // 2].backward()
    # the stem's first convolution learns from the image itself
    first_conv = net.decoder.stem.levels[0][0][0]
    assert first_conv.in_channels == 2 and first_conv.weight.grad.abs().sum() > 0
    grad = x.grad[0, :, 1].abs().sum(0)
    assert grad[size // 2, size // 2] > 0


def test_one_pixel_reaches_its_own_logit_sharply_only_through_the_stem():
    """Tokens are 16 px: without the stem, a one-pixel change moves the logits of its whole
    token alike; with it, the pixel's own logit moves far more than one 8 px away."""
    x = torch.randn(1, 2, 1, 32, 32)
    bumped = x.clone()
    bumped[0, :, 0, 12, 12] += 5.0
    ratios = {}
    for decoder in ("unet", "unet_stem"):
        net = model(decoder).eval()
        with torch.no_grad():
            change = (net(bumped) - net(x)).abs().sum(1)[0, 0]
        ratios[decoder] = float(change[12, 12] / change[12, 4].clamp_min(1e-12))
    assert ratios["unet_stem"] > 5 * ratios["unet"], ratios


def test_the_decoder_refuses_to_run_without_the_image():
    net = model("unet_stem")
    features = net.backbone(torch.randn(2, 2, 32, 32), 2)
    with pytest.raises(ValueError, match="needs the input slices"):
        net.decoder(features, (32, 32))
