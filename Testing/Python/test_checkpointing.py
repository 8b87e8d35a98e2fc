"""Activation checkpointing of each (block + inserted modules) pair changes memory, not
results: outputs and gradients equal those of the plain forward/backward."""

from __future__ import annotations

import pytest
import torch

from MedTuningCore.models import build_model

CASES = [
    ("vit_small_patch14_dinov2", "setr_mla", "med_adapter", 28),
    ("vit_small_patch14_dinov2", "setr_naive", "vpt_shallow", 28),
    ("swin_tiny_patch4_window7_224", "swin_unet", "med_adapter", 64),
    ("swin_tiny_patch4_window7_224", "swin_unet", "st_adapter", 64),
]


def run(model, x, target):
    torch.manual_seed(123)  # same stochastic depth draws in both runs
    model.zero_grad(set_to_none=True)
    out = model(x)
    torch.nn.functional.cross_entropy(out, target).backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("backbone,decoder,tuning,size", CASES, ids=[f"{c[0].split('_')[0]}-{c[2]}" for c in CASES])
def test_checkpointed_equals_plain(backbone, decoder, tuning, size):
    model = build_model(backbone=backbone, decoder=decoder, tuning=tuning, in_channels=2, num_classes=3,
                        img_size=size, reference_depth=8)
    x = torch.randn(2, 2, 3, size, size)
    target = torch.randint(0, 3, (2, 3, size, size))
    plain_out, plain_grads = run(model, x, target)
    model.set_grad_checkpointing(True)
    ckpt_out, ckpt_grads = run(model, x, target)
    torch.testing.assert_close(ckpt_out, plain_out, rtol=1e-5, atol=1e-6)
    assert ckpt_grads.keys() == plain_grads.keys()
    for name in plain_grads:
        torch.testing.assert_close(ckpt_grads[name], plain_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_checkpointing_is_off_without_grad():
    model = build_model(backbone="vit_small_patch14_dinov2", decoder="setr_naive", in_channels=1, num_classes=2,
                        img_size=28, reference_depth=8, grad_checkpointing=True).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 2, 28, 28)).shape == (1, 2, 2, 28, 28)
