"""Losses on logits. Dice is the default (as in the original notebook); BCE+Dice trains
faster at the start and sharpens edges, so it is offered as ``--loss bce_dice``. BCE+Lovász
(``--loss bce_lovasz``) optimises a convex surrogate of each image's IoU, the figure the model is
judged on, and is meant for fine-tuning a model that is already good (Berman et al., CVPR 2018)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# A truth value above 1 marks a pixel the loss leaves out: a person the masks do not label (a passer-by in
# a data set that labels only the main subject), so that finding them is neither rewarded nor punished.
IGNORE = 2


def counted(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The truth with left-out pixels set to 0, and a 0/1 map of the pixels that count."""
    target = target.float()
    keep = (target <= 1).float()
    return target * keep, keep


class DiceLoss(nn.Module):
    """1 - soft Dice, computed per image and averaged, so small people count as much as big ones."""

    def __init__(self, smooth: float = 1.0) -> None:
        super().__init__()
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target, keep = counted(target.flatten(1))
        prob = torch.sigmoid(logits.float()).flatten(1) * keep
        inter = (prob * target).sum(1)
        denom = prob.sum(1) + target.sum(1)
        return (1 - (2 * inter + self.smooth) / (denom + self.smooth)).mean()


class BCEPlusLoss(nn.Module):
    """Pixel-wise BCE (steady gradients everywhere) plus a per-image region loss (the figure judged)."""

    def __init__(self, region: nn.Module, bce_weight: float = 1.0) -> None:
        super().__init__()
        self.region = region
        self.bce_weight = bce_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        truth, keep = counted(target)
        bce = F.binary_cross_entropy_with_logits(logits.float(), truth, weight=keep)
        return self.bce_weight * bce + self.region(logits, target)


class BCEDiceLoss(BCEPlusLoss):
    def __init__(self, bce_weight: float = 1.0) -> None:
        super().__init__(DiceLoss(), bce_weight)


def lovasz_grad(sorted_truth: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovász extension of the Jaccard loss for errors sorted in decreasing order.

    Each entry is how much the IoU loss grows when that pixel joins the error set, given the
    larger errors already in it: the weights that make the hinge surrogate tight to 1 - IoU.
    Works along the last dimension, so a batch of images (one row each) is one call.
    """
    gts = sorted_truth.sum(-1, keepdim=True)
    intersection = gts - sorted_truth.cumsum(-1)
    union = gts + (1 - sorted_truth).cumsum(-1)
    jaccard = 1 - intersection / union
    return torch.cat([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], dim=-1)


class LovaszHingeLoss(nn.Module):
    """Lovász hinge per image, averaged: a tight convex surrogate of 1 - IoU of the person.

    Per image because the reported figure is IoU per image averaged over images; a batch-wide
    IoU would let big people drown small ones.
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float().flatten(1)
        target, keep = counted(target.flatten(1))
        # A left-out pixel sorts last with no error, so it adds nothing to the surrogate or its gradient.
        errors = torch.where(keep > 0, 1 - logits * (2 * target - 1), -1.0)
        errors_sorted, perm = torch.sort(errors, dim=1, descending=True)
        return (torch.relu(errors_sorted) * lovasz_grad(target.gather(1, perm))).sum(1).mean()


class BCELovaszLoss(BCEPlusLoss):
    def __init__(self, bce_weight: float = 1.0) -> None:
        super().__init__(LovaszHingeLoss(), bce_weight)


LOSSES = {"dice": DiceLoss, "bce_dice": BCEDiceLoss, "bce_lovasz": BCELovaszLoss}


def make_loss(name: str) -> nn.Module:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")
    return LOSSES[name]()
