"""U-Net person/background segmenter.

Blocks are built by functions returning ``nn.Sequential`` so this module defines a single
class: TorchServe's loader insists on one class per model file, and the handler can then
load this same file that training uses.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

# Levels of a model whose checkpoint does not say (everything trained before depth was an option).
DEFAULT_DEPTH = 4


def _double_conv(in_ch: int, out_ch: int) -> nn.Sequential:
    """Two 3x3 conv + BN + ReLU, the basic U-Net stage (bias off: BN supplies it)."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """Classic U-Net (Ronneberger et al.) returning one logit map per pixel.

    Any input size works: the input is padded to a multiple of ``2**depth`` (reflection,
    so borders carry no artificial edge) and the output is cropped back to the input size.
    """

    def __init__(self, base_filters: int = 32, in_channels: int = 3, out_channels: int = 1,
                 depth: int = DEFAULT_DEPTH) -> None:
        super().__init__()
        if base_filters < 1 or depth < 1:
            raise ValueError("base_filters and depth must be positive")
        self.base_filters = base_filters
        self.depth = depth
        widths = [base_filters * 2**i for i in range(depth + 1)]
        self.inc = _double_conv(in_channels, widths[0])
        self.downs = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), _double_conv(widths[i], widths[i + 1])) for i in range(depth)
        )
        self.ups = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(depth))
        )
        self.up_convs = nn.ModuleList(_double_conv(widths[i] * 2, widths[i]) for i in reversed(range(depth)))
        self.outc = nn.Conv2d(widths[0], out_channels, 1)

    @property
    def multiple(self) -> int:
        """Spatial sizes that need no padding are multiples of this."""
        return 2**self.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = self.multiple
        pad_h, pad_w = (-h) % m, (-w) % m
        if pad_h or pad_w:
            mode = "reflect" if h > pad_h and w > pad_w else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        y = skips.pop()
        for up, conv in zip(self.ups, self.up_convs, strict=True):
            y = conv(torch.cat([skips.pop(), up(y)], dim=1))
        return self.outc(y)[..., :h, :w]


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with each BatchNorm folded into the convolution before it.

    In inference a BatchNorm is a fixed per-channel scale and shift, which the preceding
    convolution can absorb: the same function (within float rounding) without the separate pass
    over every activation map (4 of 87 ms of a 1-megapixel mask under cProfile). A copy, so the
    caller's model (a training run's, between epochs) keeps its BatchNorm layers and mode.
    """
    folded = copy.deepcopy(model).eval()
    for seq in folded.modules():
        if isinstance(seq, nn.Sequential):
            for i in range(len(seq) - 1):
                if isinstance(seq[i], nn.Conv2d) and isinstance(seq[i + 1], nn.BatchNorm2d):
                    seq[i] = fuse_conv_bn_eval(seq[i], seq[i + 1])
                    seq[i + 1] = nn.Identity()
    return folded
