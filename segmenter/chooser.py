"""Choose who stays: a network told where the user clicked gives the one person under the click.

``keep`` receives points. The segmenter's mask cannot tell two people apart where one stands in front of the
other: both are "person" and their region is one. Interactive segmentation solves this by giving the network
the click as an input and training it to answer with the one object under it. ``ClickNet`` does that to the
segmenter's own network: two click maps (a small disc and a broad Gaussian around the point,
``click_maps``) pass through their own first convolution, which joins the encoder's first convolution
before its BatchNorm. It starts from the shipped segmenter's weights with that convolution at zero, and is
trained whole on photos of two people pasted side by side, in front of or behind each other, the target
being the clicked person's own mask (``benchmarks/studies/click_net.py``; figures in docs/BENCHMARKS.md).

Where two people overlap, the answer for the one behind bleeds into the one in front. ``Chooser.choose``,
given the segmenter's map, also asks about each point's rival (``rival_point``, the largest person its answer
leaves out) and gives every contested pixel to the stronger claim. ``people.keep_chosen`` then keeps the
mask's person pixels that this gives to a point, through the same region rules as ``people.keep_people``; a
point it gives nothing falls back to those rules alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from segmenter import checkpoint, people
from segmenter.efficientnet_lite import STEM_CHANNELS
from segmenter.inference import TTA_MODES, mirror_content
from segmenter.model import build_model, fold_batchnorm, pad_to_multiple
from segmenter.refine import resize_map

DISC = 6.0  # the click's disc radius, in network pixels
SPREAD = 48.0  # the click's Gaussian, in network pixels: about a person's width in a group photo
# A region of the mask that a point's answer leaves out is a rival person when it is this share of the photo.
RIVAL_SHARE = 0.02
SHIPPED_CHOOSER = Path(__file__).resolve().parent / "weights" / "person_click.pt"


def click_maps(points: Sequence[tuple[float, float]], size: tuple[int, int], step: int = 1) -> torch.Tensor:
    """Nx2xHxW: a disc and a Gaussian around each point (x, y in network pixels) on a map ``step`` times
    coarser than the network's ``size`` (height, width); the radii scale with ``step``."""
    yy, xx = torch.meshgrid(torch.arange(size[0] // step, dtype=torch.float32),
                            torch.arange(size[1] // step, dtype=torch.float32), indexing="ij")
    offset = (step - 1) / (2 * step)  # a coarse pixel's centre is the mean of the fine ones it covers
    maps = []
    for x, y in points:
        d2 = (xx - (x / step - offset)) ** 2 + (yy - (y / step - offset)) ** 2
        maps.append(torch.stack([(d2 <= (DISC / step) ** 2).float(), torch.exp(-d2 / (2 * (SPREAD / step) ** 2))]))
    return torch.stack(maps)


class ClickNet(nn.Module):
    """The segmenter's encoder U-Net with a second input, the click maps, joined at its first convolution."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        if not hasattr(net, "encoder"):
            raise ValueError("a click network needs an encoder U-Net (the from-scratch U-Net has no stem to join)")
        self.net = net
        self.click = nn.Conv2d(2, STEM_CHANNELS, 3, 2, bias=False)
        nn.init.zeros_(self.click.weight)  # the start is the segmenter itself
        self.multiple = net.multiple

    def forward(self, x: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        maps = self.net.encoder._stem_pad(pad_to_multiple(maps.to(x.dtype), self.multiple))
        return self.net(x, stem_extra=self.click(maps))

    def folded(self) -> ClickNet:
        """An eval-mode copy with every BatchNorm folded (``model.fold_batchnorm``). The first BatchNorm
        also scales what the clicks add before it, so their convolution takes its scale first."""
        bn = self.net.encoder._bn0
        out = fold_batchnorm(self)
        if isinstance(bn, nn.BatchNorm2d):
            scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
            out.click.weight.data.mul_(scale.view(-1, 1, 1, 1))
        return out


def present(path: str | Path | None) -> Path | None:
    """``path``, or None where it is None or the shipped click network in a checkout without it
    (``checkpoint.optional_file``)."""
    return checkpoint.optional_file(path, SHIPPED_CHOOSER)


def load(path: str | Path = SHIPPED_CHOOSER) -> tuple[ClickNet, dict[str, Any]]:
    """A click network in eval mode and its config, from a file ``benchmarks/studies/click_net.py`` or
    ``training/export.py`` wrote (``{"model": state dict, "config": the segmenter's config}``)."""
    ckpt = checkpoint.load(path)
    try:
        net = ClickNet(build_model(ckpt["config"]))
        net.load_state_dict(ckpt["model"])
    except (KeyError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{path}: not a click network's weights ({str(exc).splitlines()[0]})") from None
    return net.eval(), dict(ckpt["config"])


class Chooser:
    """A folded click network ready to serve: the probability of the person clicked, per point."""

    def __init__(self, net: ClickNet, device: torch.device | str = "cpu", amp: bool = False) -> None:
        self.device = torch.device(device)
        self.net = net.folded().to(self.device)
        if self.device.type == "cpu":
            self.net = self.net.to(memory_format=torch.channels_last)
        self.amp = amp

    @torch.inference_mode()
    def choose(self, segmenter: Any, image: Image.Image, points: Sequence[tuple[float, float]],
               tta: str = "none", everyone: torch.Tensor | np.ndarray | None = None) -> list[np.ndarray]:
        """For each point (x, y in the photo's pixels), the probability that a pixel belongs to the person
        clicked there, at the photo's size. ``segmenter`` (a ``Segmenter``) makes the network's input, as for
        its own mask; one forward pass for all the points. ``tta="flip"`` also asks about the mirrored photo
        and averages, as the segmenter's own option does.

        With ``everyone``, the segmenter's own probability at the network's resolution (``predict_lowres``),
        each point's answer is also weighed against its rival's (``rival_point``): one more pass.
        """
        if tta not in TTA_MODES:
            raise ValueError(f"unknown tta {tta!r}; expected one of: {', '.join(TTA_MODES)}")
        batch, sizes = segmenter.model_input([image])
        s = sizes[0][0] / image.width
        answers = self._answers(batch, sizes[0], [(x * s, y * s) for x, y in points], tta)
        if everyone is not None:
            answers = self._apart(batch, sizes[0], answers, torch.as_tensor(everyone, dtype=torch.float32), tta)
        return [resize_map(a, (image.height, image.width)).numpy() for a in answers]

    def _answers(self, batch: torch.Tensor, size: tuple[int, int], at: Sequence[tuple[float, float]],
                 tta: str) -> torch.Tensor:
        """Nxhxw: the probability of each clicked person (points in network pixels) over the photo's part of
        the canvas."""
        w, h = size
        inputs = batch.expand(len(at), -1, -1, -1)
        maps = click_maps(at, tuple(batch.shape[-2:]))
        if tta == "flip":
            inputs = torch.cat([inputs, mirror_content(batch, [size]).expand(len(at), -1, -1, -1)])
            maps = torch.cat([maps, click_maps([(w - 1 - x, y) for x, y in at], tuple(batch.shape[-2:]))])
        dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        with torch.autocast(self.device.type, dtype, enabled=self.amp):
            logits = self.net(inputs, maps.to(batch.device))
        out = torch.sigmoid(logits.float())[:, 0, :h, :w].cpu()
        if tta == "flip":
            out = (out[:len(at)] + out[len(at):].flip(-1)) / 2
        return out

    def _apart(self, batch: torch.Tensor, size: tuple[int, int], answers: torch.Tensor, everyone: torch.Tensor,
               tta: str) -> torch.Tensor:
        """Each answer without the pixels its rival claims more strongly than it does."""
        if everyone.shape != answers.shape[1:]:
            raise ValueError(f"the segmenter's map is {tuple(everyone.shape)}, the answers "
                             f"{tuple(answers.shape[1:])}: pass predict_lowres' map for the same photo")
        rivals = [(i, r) for i, a in enumerate(answers) if (r := rival_point(everyone, a)) is not None]
        if not rivals:
            return answers
        theirs = self._answers(batch, size, [r for _, r in rivals], tta)
        out = answers.clone()
        for (i, _), their in zip(rivals, theirs, strict=True):
            out[i] = torch.where(their > out[i], 0.0, out[i])
        return out


def rival_point(everyone: torch.Tensor, answer: torch.Tensor) -> tuple[float, float] | None:
    """Where a user would click on the largest person the network says a point is not on: the pixel nearest
    the centroid of the largest region of the segmenter's mask outside the point's answer, or None when
    that region is under ``RIVAL_SHARE`` of the photo.

    Where two people overlap, the answer for the one behind bleeds into the one in front (the network was
    never sure where one ends). Asking the same network about the one in front and giving each contested
    pixel to the stronger claim cuts the bleed: on the two-person benchmark's hardest case, a person over
    most of a portrait, it is the largest single gain (docs/BENCHMARKS.md).
    """
    labels, n = people.label(((everyone >= 0.5) & (answer < 0.5)).numpy())
    if n == 0:
        return None
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    biggest = int(sizes.argmax()) + 1
    if sizes[biggest - 1] < RIVAL_SHARE * labels.size:
        return None
    x, y = people.inside_point(labels == biggest)
    return float(x), float(y)
