"""Training losses: the paper's soft Dice over the foreground classes, plus optional CE."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """1 - mean soft Dice over classes 1..K-1 (no background), pooled over the batch.

    logits [B, K, D, H, W]; target [B, D, H, W] class indices.
    """
    probs = torch.softmax(logits.float(), dim=1)[:, 1:]
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 4, 1, 2, 3)[:, 1:].float()
    dims = (0, 2, 3, 4)
    intersection = (probs * onehot).sum(dims)
    denominator = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * intersection + smooth) / (denominator + smooth)
    return 1 - dice.mean()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, ce_weight: float = 1.0) -> torch.Tensor:
    loss = soft_dice_loss(logits, target)
    if ce_weight:
        loss = loss + ce_weight * F.cross_entropy(logits.float(), target)
    return loss
