"""The person/background segmenters: a U-Net on a pretrained encoder, and the classic U-Net.

``build_model`` turns a checkpoint's recorded config into the network, so training, evaluation
and the TorchServe handler build the same model from this one file.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from segmenter.efficientnet_lite import EfficientNetLite
from segmenter.preprocess import MEAN, STD

# Levels of a model whose checkpoint does not say (everything trained before depth was an option).
DEFAULT_DEPTH = 4
# "none": the classic U-Net trained from scratch (every checkpoint from before encoders were an option).
NO_ENCODER = "none"
ENCODERS = (NO_ENCODER, "efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
# What a new training run starts from when neither --encoder nor --init says (README "Training").
DEFAULT_ENCODER = "efficientnet-lite1"
# Decoder widths from the stride-32 features up to full resolution (the shipped model's; docs/MODEL_CARD.md).
DEFAULT_DECODER_CHANNELS = (96, 64, 48, 32, 16)


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
        x = pad_to_multiple(x, self.multiple)
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        y = skips.pop()
        for up, conv in zip(self.ups, self.up_convs, strict=True):
            y = conv(torch.cat([skips.pop(), up(y)], dim=1))
        return self.outc(y)[..., :h, :w]


def pad_to_multiple(x: torch.Tensor, m: int) -> torch.Tensor:
    """Pad bottom/right to a multiple of ``m``: reflection, so borders carry no artificial edge."""
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % m, (-w) % m
    if not (pad_h or pad_w):
        return x
    mode = "reflect" if h > pad_h and w > pad_w else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


class EncoderUNet(nn.Module):
    """A U-Net decoder on an ImageNet-pretrained EfficientNet-Lite encoder; one logit map per pixel.

    Takes the same input as ``UNet`` (ImageNet mean/std normalisation, ``segmenter.preprocess``) and
    maps it to the [-1, 1] range the Lite weights were trained on, so pre-processing stays one
    definition for every model. Each decoder level doubles the size (nearest), joins the encoder's
    feature of that stride and runs two conv-BN-ReLU; the last level has no skip (stride 1).
    """

    def __init__(self, encoder: str = "efficientnet-lite0",
                 decoder_channels: Sequence[int] = DEFAULT_DECODER_CHANNELS, out_channels: int = 1) -> None:
        super().__init__()
        self.encoder = EfficientNetLite(encoder)
        self.encoder_name = encoder
        self.decoder_channels = tuple(int(c) for c in decoder_channels)
        feats = self.encoder.feature_channels
        if len(self.decoder_channels) != len(feats):
            raise ValueError(f"decoder_channels needs {len(feats)} widths, got {len(self.decoder_channels)}")
        skips = list(reversed(feats[:-1])) + [0]
        ins = [feats[-1], *self.decoder_channels[:-1]]
        self.decoder = nn.ModuleList(
            _double_conv(i + s, o) for i, s, o in zip(ins, skips, self.decoder_channels, strict=True))
        self.outc = nn.Conv2d(self.decoder_channels[-1], out_channels, 1)
        # ImageNet-normalised x -> 2 * (x * std + mean) - 1
        self.register_buffer("in_scale", 2 * torch.tensor(STD).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("in_shift", (2 * torch.tensor(MEAN) - 1).view(1, 3, 1, 1), persistent=False)

    # Inference may cut the black band right of a portrait photo (``preprocess.canvas_size``): the same
    # validation IoU for this network. The from-scratch UNet loses IoU that way, so it keeps the square
    # (figures: docs/BENCHMARKS.md, "Design choices in the code").
    cut_canvas = True

    @property
    def multiple(self) -> int:
        return 32

    def forward(self, x: torch.Tensor, stem_extra: torch.Tensor | None = None) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, self.multiple) * self.in_scale.to(x.dtype) + self.in_shift.to(x.dtype)
        feats = self.encoder(x, stem_extra)
        y = feats.pop()
        for block in self.decoder:
            y = F.interpolate(y, scale_factor=2.0, mode="nearest")
            if feats:
                y = torch.cat([y, feats.pop()], dim=1)
            y = block(y)
        return self.outc(y)[..., :h, :w]


def encoder_of(config: dict[str, Any]) -> str:
    """The encoder a checkpoint's config names; checkpoints from before encoders existed name none."""
    encoder = str(config.get("encoder", NO_ENCODER))
    if encoder not in ENCODERS:
        raise ValueError(f"unknown encoder {encoder!r} (this version knows {', '.join(ENCODERS)})")
    return encoder


def build_model(config: dict[str, Any]) -> nn.Module:
    """The network a checkpoint's config describes (random weights; the caller loads them)."""
    encoder = encoder_of(config)
    if encoder == NO_ENCODER:
        return UNet(base_filters=int(config.get("base_filters", 32)), depth=int(config.get("depth", DEFAULT_DEPTH)))
    return EncoderUNet(encoder, config.get("decoder_channels", DEFAULT_DECODER_CHANNELS))


def describe(config: dict[str, Any]) -> str:
    """One line naming the architecture, for logs."""
    encoder = encoder_of(config)
    if encoder == NO_ENCODER:
        return (f"U-Net {config.get('base_filters', 32)} base filters, depth {config.get('depth', DEFAULT_DEPTH)}, "
                "from scratch")
    channels = "/".join(map(str, config.get("decoder_channels", DEFAULT_DECODER_CHANNELS)))
    return f"U-Net decoder {channels} on {encoder} (ImageNet-pretrained)"


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with each BatchNorm folded into the convolution before it.

    In inference a BatchNorm is a fixed per-channel scale and shift, which the preceding
    convolution can absorb: the same function (within float rounding) without a separate pass
    over every activation map. A copy, so the
    caller's model (a training run's, between epochs) keeps its BatchNorm layers and mode.
    """
    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                if isinstance(module[i], nn.Conv2d) and isinstance(module[i + 1], nn.BatchNorm2d):
                    module[i] = fuse_conv_bn_eval(module[i], module[i + 1])
                    module[i + 1] = nn.Identity()
        # modules that name their conv/BN pairs (the EfficientNet-Lite blocks keep the pretrained key names)
        for conv_name, bn_name in getattr(module, "CONV_BN", ()):
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(module, bn_name, nn.Identity())
    return folded
