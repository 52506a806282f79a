"""The weight average of ``--ema`` forgets the starting weights (a run from ImageNet has a random decoder)."""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from training.train import ema_with_warmup


def _average_after(steps: int, decay: float) -> nn.Module:
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))  # a BatchNorm: integer buffers too
    with torch.no_grad():
        model[0].weight.fill_(0.0)
    ema = AveragedModel(model, multi_avg_fn=ema_with_warmup(decay), use_buffers=True)
    ema.update_parameters(model)  # the first update copies: the random start
    with torch.no_grad():
        model[0].weight.fill_(1.0)  # training has moved on
    for _ in range(steps):
        ema.update_parameters(model)
    return ema.module


def test_average_forgets_the_start_within_a_few_hundred_steps() -> None:
    start_share = 1.0 - _average_after(300, 0.999)[0].weight.mean().item()
    assert start_share < 0.01  # a fixed 0.999 keeps 0.999**300 = 74% of the start


def test_average_settles_at_the_given_decay() -> None:
    """Late in a run one step moves the average by 1 - decay, not by the ramp's larger share."""
    model = nn.Linear(3, 2)
    ema = AveragedModel(model, multi_avg_fn=ema_with_warmup(0.99), use_buffers=True)
    ema.n_averaged.fill_(10_000)
    before = ema.module.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update_parameters(model)
    torch.testing.assert_close(ema.module.weight - before, torch.full_like(before, 0.01), rtol=0, atol=1e-6)
