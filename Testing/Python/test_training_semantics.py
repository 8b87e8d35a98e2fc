"""What each tuning method trains: after optimiser steps every frozen tensor is
bit-identical and every tuned one changed; gradients reach only tuned parameters."""

from __future__ import annotations

import pytest
import torch

from MedTuningCore.models import TUNING_METHODS, build_model
from MedTuningCore.models.med_adapter import MedAdapter

# Swin at 64 px so the last stage has 2x2 tokens: with a single token per window the
# attention weights are constant and the relative-position bias cannot learn.
CASES = [("vit_small_patch14_dinov2", "upernet", 28), ("swin_tiny_patch4_window7_224", "swin_unet", 64)]


def never_sees_a_signal(model) -> set[str]:
    """The first stage's inter-stage alignment conv receives zeros (official design), so
    its weight gets no gradient; its bias does."""
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, MedAdapter) and module.inter_stage:
            names.add(f"{name}.align.conv.weight")
            break
    return names


@pytest.mark.parametrize("backbone,decoder,size", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("tuning", TUNING_METHODS)
def test_only_tuned_parameters_learn(backbone, decoder, size, tuning):
    model = build_model(backbone=backbone, decoder=decoder, tuning=tuning, in_channels=2, num_classes=3,
                        img_size=size, reference_depth=8)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    tuned = {n for n, p in model.named_parameters() if p.requires_grad}
    if tuning == "full":
        assert tuned == set(before)
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x = torch.randn(1, 2, 3, size, size)
    target = torch.randint(0, 3, (1, 3, size, size))
    for _ in range(2):  # zero-initialised up-projections (LoRA, AdaptFormer, ST-Adapter) need a second step
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), target)
        loss.backward()
        for name, p in model.named_parameters():
            if name not in tuned:
                assert p.grad is None, f"gradient reached frozen {name}"
        optimiser.step()
    exempt = never_sees_a_signal(model)
    for name, p in model.named_parameters():
        if name in tuned and name not in exempt:
            assert not torch.equal(p, before[name]), f"tuned {name} did not change"
        elif name not in tuned:
            assert torch.equal(p, before[name]), f"frozen {name} changed"


@pytest.mark.parametrize("tuning", [t for t in TUNING_METHODS if t != "full"])
def test_frozen_set_is_the_patch_embedding_and_the_blocks(tuning):
    model = build_model(backbone="vit_small_patch14_dinov2", decoder="setr_naive", tuning=tuning, in_channels=1,
                        num_classes=2, img_size=28, reference_depth=8)
    from MedTuningCore.models.inserted import inserted_parameter_ids

    inserted = inserted_parameter_ids(model)
    for name, p in model.backbone.named_parameters():
        plain = id(p) not in inserted
        if plain and (name.startswith("vit.patch_embed") or name.startswith("vit.blocks")):
            assert not p.requires_grad, name
        elif plain:
            assert name in ("vit.pos_embed", "vit.norm.weight", "vit.norm.bias"), name
            # med_adapter_late freezes the position embedding: the first half then runs forward only
            assert p.requires_grad == (tuning != "med_adapter_late" or name != "vit.pos_embed"), name
        else:
            assert p.requires_grad, name
    assert all(p.requires_grad for p in model.decoder.parameters())
