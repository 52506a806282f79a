"""Losses and metrics on cases small enough to compute by hand."""

from __future__ import annotations

import pytest
import torch

from evaluation.metrics import boundary, boundary_f, dice, iou, mean_metrics
from training.losses import IGNORE, BCEDiceLoss, BCELovaszLoss, DiceLoss, LovaszHingeLoss, make_loss


def test_iou_and_dice_by_hand() -> None:
    pred = torch.tensor([[1, 1, 0, 0]], dtype=torch.bool)
    truth = torch.tensor([[0, 1, 1, 0]], dtype=torch.bool)
    assert iou(pred, truth) == pytest.approx(1 / 3)
    assert dice(pred, truth) == pytest.approx(2 * 1 / 4)


def test_empty_masks_are_perfect() -> None:
    empty = torch.zeros(5, 5, dtype=torch.bool)
    assert iou(empty, empty) == 1.0 and dice(empty, empty) == 1.0 and boundary_f(empty, empty) == 1.0
    assert boundary_f(empty, torch.ones(5, 5, dtype=torch.bool)) == 0.0


def test_dice_loss_by_hand() -> None:
    big = 50.0
    logits = torch.tensor([[[[big, big, -big, -big]]]])
    target = torch.tensor([[[[1.0, 0.0, 1.0, 0.0]]]])
    # prob = [1,1,0,0]: intersection 1, sums 2 + 2 -> dice (2*1+1)/(4+1) = 0.6
    assert DiceLoss()(logits, target).item() == pytest.approx(0.4, abs=1e-5)
    assert DiceLoss()(logits, (logits > 0).float()).item() == pytest.approx(0.0, abs=1e-5)


def test_bce_dice_adds_bce() -> None:
    logits = torch.zeros(1, 1, 2, 2)
    target = torch.ones(1, 1, 2, 2)
    expected = torch.log(torch.tensor(2.0)).item() + DiceLoss()(logits, target).item()
    assert BCEDiceLoss()(logits, target).item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="unknown loss"):
        make_loss("focal")


def test_lovasz_hinge_by_hand() -> None:
    truth = torch.tensor([[[[1.0, 1.0, 0.0, 0.0]]]])
    # margins of exactly 1: right pixels cost 0, wrong ones 2, so the loss is 2 * (1 - IoU) = 2 * 2/3
    logits = torch.tensor([[[[1.0, -1.0, 1.0, -1.0]]]])
    assert LovaszHingeLoss()(logits, truth).item() == pytest.approx(4 / 3, rel=1e-6)
    assert LovaszHingeLoss()(torch.tensor([[[[3.0, 2.0, -5.0, -1.0]]]]), truth).item() == 0.0


@pytest.mark.parametrize("seed", range(4))
def test_lovasz_hinge_is_one_minus_iou_per_image_on_unit_margins(seed: int) -> None:
    """The property that makes it the IoU loss: tight to 1 - IoU, each image weighted the same."""
    gen = torch.Generator().manual_seed(seed)
    truth = (torch.rand(3, 1, 9, 7, generator=gen) > 0.5).float()
    pred = torch.rand(3, 1, 9, 7, generator=gen) > 0.4
    logits = pred.float() * 2 - 1
    expected = sum(2 * (1 - iou(p[0], t[0].bool())) for p, t in zip(pred, truth, strict=True)) / 3
    assert LovaszHingeLoss()(logits, truth).item() == pytest.approx(expected, rel=1e-5)


def test_lovasz_gradient_pushes_wrong_pixels_the_right_way() -> None:
    truth = torch.tensor([[[[1.0, 1.0, 0.0, 0.0]]]])
    logits = torch.tensor([[[[0.5, -0.5, 0.5, -0.5]]]], requires_grad=True)
    BCELovaszLoss()(logits, truth).backward()
    grad = logits.grad.flatten()
    assert grad[0] < 0 and grad[1] < 0  # person pixels: raise their logits
    assert grad[2] > 0 and grad[3] > 0  # background pixels: lower them


def test_boundary_is_inner_contour() -> None:
    m = torch.zeros(6, 6, dtype=torch.bool)
    m[1:5, 1:5] = True
    b = boundary(m)
    assert b.sum().item() == 12  # 4x4 square: 16 pixels, 4 interior
    assert not b[2:4, 2:4].any()


def test_boundary_f_tolerates_small_shift_only() -> None:
    truth = torch.zeros(200, 200, dtype=torch.bool)
    truth[50:150, 50:150] = True
    near = torch.roll(truth, 1, dims=1)  # 1 px off, within 0.75% of the diagonal (~2 px)
    far = torch.roll(truth, 12, dims=1)
    assert boundary_f(near, truth) == 1.0
    assert boundary_f(far, truth) < 0.6


def test_mean_metrics() -> None:
    rows = [{"iou": 1.0, "dice": 1.0, "boundary_f": 0.5}, {"iou": 0.5, "dice": 0.0, "boundary_f": 0.5}]
    assert mean_metrics(rows) == {"iou": 0.75, "dice": 0.5, "boundary_f": 0.5, "count": 2}


@pytest.mark.parametrize("loss", [DiceLoss(), BCEDiceLoss(), LovaszHingeLoss(), BCELovaszLoss()],
                         ids=["dice", "bce_dice", "lovasz", "bce_lovasz"])
def test_left_out_pixels_change_neither_loss_nor_gradient(loss: torch.nn.Module) -> None:
    """A pixel marked IGNORE (an unlabelled passer-by) counts for nothing, whatever the network says there."""
    gen = torch.Generator().manual_seed(3)
    truth = (torch.rand(2, 1, 6, 6, generator=gen) > 0.5).float()
    logits = torch.randn(2, 1, 6, 6, generator=gen)
    marked = truth.clone()
    marked[:, :, :2] = IGNORE  # two rows left out
    values = []
    for top in (-4.0, 4.0):  # the network's call on the left-out rows does not matter
        x = logits.clone()
        x[:, :, :2] = top
        x.requires_grad_(True)
        value = loss(x, marked)
        value.backward()
        assert torch.all(x.grad[:, :, :2] == 0)
        values.append(value.item())
    assert values[0] == pytest.approx(values[1], rel=1e-6)
    # and the rest is scored as without the rows, up to BCE's mean over every pixel
    if isinstance(loss, DiceLoss | LovaszHingeLoss):
        assert values[0] == pytest.approx(loss(logits[:, :, 2:], truth[:, :, 2:]).item(), rel=1e-5)
