"""Training losses: the paper's soft Dice over the foreground classes, plus optional CE."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def soft_dice_per_class(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """Soft Dice of each foreground class 1..K-1, pooled over the batch: [K-1].

    logits [B, K, D, H, W]; target [B, D, H, W] class indices.
    """
    probs = torch.softmax(logits.float(), dim=1)[:, 1:]
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 4, 1, 2, 3)[:, 1:].float()
    return soft_dice(probs, onehot, smooth)


def soft_dice(probs: torch.Tensor, targets: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """Soft Dice of each channel of [B, C, D, H, W] probabilities and targets, pooled over the batch."""
    dims = (0, 2, 3, 4)
    return (2 * (probs * targets).sum(dims) + smooth) / (probs.sum(dims) + targets.sum(dims) + smooth)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """1 - mean soft Dice over classes 1..K-1 (no background)."""
    return 1 - soft_dice_per_class(logits, target, smooth).mean()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, ce_weight: float = 1.0,
                      class_weights: torch.Tensor | None = None) -> torch.Tensor:
    return segmentation_loss_terms(logits, target, ce_weight, class_weights)[0]


def segmentation_loss_terms(logits: torch.Tensor, target: torch.Tensor, ce_weight: float = 1.0,
                            class_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(the loss, each foreground class's Dice loss 1 - Dice_c, detached): the second is what
    the trainer logs per class, to see which classes the model is failing on.

    `class_weights` [K] weigh each voxel's cross-entropy by its true class; the mean is taken
    over the weights (PyTorch's weighted mean), so only their ratios matter."""
    dice = soft_dice_per_class(logits, target)
    loss = 1 - dice.mean()
    if ce_weight:
        weight = class_weights.to(logits.device, torch.float32) if class_weights is not None else None
        loss = loss + ce_weight * F.cross_entropy(logits.float(), target, weight=weight)
    return loss, (1 - dice).detach()


def frequency_class_weights(voxel_counts: Sequence[int]) -> list[float]:
    """Cross-entropy weights from each class's voxel count in the training labels:
    sqrt(largest count / count). The most frequent class (background) weighs 1 and a class
    100 times rarer weighs 10: the square root tempers plain inverse frequency, whose
    weights (hundreds for a thin rim) would flood every slice with the rare class. A class
    with no voxels is never a target, so its weight never acts; it gets 1."""
    largest = max(voxel_counts)
    if largest <= 0:
        raise ValueError("the training labels hold no voxels")
    return [round((largest / count) ** 0.5, 4) if count > 0 else 1.0 for count in voxel_counts]


def region_loss_terms(logits: torch.Tensor, target: torch.Tensor, classes: list[list[int]],
                      ce_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """For sigmoid region outputs (data/regions.py): soft Dice of each region plus binary
    cross-entropy (weighted by `ce_weight`), as nnU-Net trains BraTS regions. Returns the loss
    and each region's Dice loss, detached."""
    from ..data.regions import region_targets

    regions = region_targets(target, classes)
    dice = soft_dice(torch.sigmoid(logits.float()), regions)
    loss = 1 - dice.mean()
    if ce_weight:
        loss = loss + ce_weight * F.binary_cross_entropy_with_logits(logits.float(), regions)
    return loss, (1 - dice).detach()
