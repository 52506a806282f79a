"""Photo -> soft person mask at the photo's own resolution: the one path that is served.

``evaluate.py``, ``predict.py`` and the TorchServe handler all call ``Segmenter`` so the
figures we report are the masks users get.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from segmenter import checkpoint, crowd
from segmenter.crowd import DEFAULT_CROWD, wants_crowd
from segmenter.crowd import check_mode as crowd_mode
from segmenter.model import fold_batchnorm
from segmenter.preprocess import DEFAULT_IMAGE_SIZE, canvas_size, letterbox, letterbox_size, normalize
from segmenter.refine import WORK_SIZE, upsample
from segmenter.zoom import DEFAULT_ZOOM, GRID, wants_zoom, zoomed

# Test-time augmentation: "flip" also runs the photo mirrored left-right and averages the two
# probability maps. One forward pass of twice the batch at the model's input size, so a fixed cost
# per photo whatever its size, for a small IoU gain (both measured in docs/MODEL_CARD.md and
# docs/BENCHMARKS.md). Off by default in the server (the 1-MP latency target), on by default in the
# GIMP plug-in, where a few tens of milliseconds do not show.
TTA_MODES = ("none", "flip")


def mirror_content(batch: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Each letterboxed photo mirrored inside its own (w, h) corner; the padding stays where it was.

    Mirroring the whole square would move the photo to the top-right corner, a layout the
    network never sees at full size in training.
    """
    out = batch.clone()
    for i, (w, h) in enumerate(sizes):
        out[i, :, :h, :w] = batch[i, :, :h, :w].flip(-1)
    return out


def cpu_has_bf16() -> bool:
    """True where the CPU runs bf16 matmuls natively (AVX512-BF16/AMX); elsewhere bf16 is slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked for, but no CUDA device is available")
    return torch.device(name)


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 on CPU (several times faster training on a CPU with AVX512-BF16), fp16 on CUDA; a no-op when off."""
    if not enabled:
        return contextlib.nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


class Segmenter:
    """A trained segmenter network plus the pre/post-processing it was trained with.

    ``crowd_model``, where given, is the network for photos of groups and small people (``segmenter/crowd.py``):
    it replaces the first look on the photos that the ``crowd`` option sends to it. It must be the same
    architecture at the same input size, so that one pre-processing serves both.
    """

    def __init__(self, model: nn.Module, image_size: int = DEFAULT_IMAGE_SIZE, device: str | torch.device = "cpu",
                 amp: bool | None = None, crowd_model: nn.Module | None = None) -> None:
        self.device = torch.device(device) if not isinstance(device, torch.device) else device
        self.model = self._prepared(model)
        self.crowd_model = None if crowd_model is None else self._prepared(crowd_model)
        self.image_size = int(image_size)
        self.amp = (cpu_has_bf16() if self.device.type == "cpu" else True) if amp is None else amp

    def _prepared(self, model: nn.Module) -> nn.Module:
        model = fold_batchnorm(model).to(self.device)
        return model.to(memory_format=torch.channels_last) if self.device.type == "cpu" else model

    @classmethod
    def from_checkpoint(cls, path: str | Path | None = None, device: str = "auto", amp: bool | None = None,
                        crowd_path: str | Path | None = None) -> Segmenter:
        """The network in ``path`` (default: the shipped one) and, where there is one, its crowd network:
        ``crowd_path``, else the shipped crowd network when ``path`` is the shipped model (``crowd.default_for``)."""
        path = Path(path or checkpoint.default_weights())
        model, config = checkpoint.load_model(path)
        crowd_file = crowd.present(crowd_path) or crowd.default_for(path)
        crowd_model = None if crowd_file is None else crowd.load(crowd_file, config)
        return cls(model, config.get("image_size", DEFAULT_IMAGE_SIZE), resolve_device(device), amp, crowd_model)

    def model_input(self, images: Sequence[Image.Image]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """The network's input for photos of one canvas size, and each photo's (w, h) in its corner."""
        tensors, sizes = zip(*(letterbox(img, self.image_size) for img in images), strict=True)
        height, width = self._canvas(sizes[0])
        if any(self._canvas(size) != (height, width) for size in sizes):
            raise ValueError("model_input: the photos need canvases of different sizes; group them first")
        batch = normalize(torch.stack(tensors)[:, :, :height, :width].to(self.device))
        if self.device.type == "cpu":
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch, list(sizes)

    def _canvas(self, size: tuple[int, int]) -> tuple[int, int]:
        """The square for networks that have not been measured on a cut-down canvas (see ``canvas_size``)."""
        if not getattr(self.model, "cut_canvas", False):
            return self.image_size, self.image_size
        return canvas_size(size[0], self.image_size, getattr(self.model, "multiple", 32))

    def predict_lowres(self, images: Sequence[Image.Image], tta: str = "none",
                       crowd: str = DEFAULT_CROWD) -> list[torch.Tensor]:
        """Person probability of each photo at model resolution, letterbox padding removed.

        Photos whose canvases differ go through separate forward passes, so a photo's mask never
        depends on what it was batched with (a served mask is the same alone or in a batch).
        """
        return self.looks(images, tta, crowd)[0]

    @torch.inference_mode()
    def looks(self, images: Sequence[Image.Image], tta: str = "none",
              crowd: str = DEFAULT_CROWD) -> tuple[list[torch.Tensor], list[bool]]:
        """``predict_lowres``' maps, and for each photo whether the crowd network made it.

        The main network looks first; the photos ``crowd`` sends on (``segmenter.crowd.wants_crowd``) are
        looked at again by the crowd network, whose map replaces the first. Without a crowd network every map
        is the first look. ``crowd="on"`` skips the first look.
        """
        if tta not in TTA_MODES:
            raise ValueError(f"unknown tta {tta!r}; expected one of: {', '.join(TTA_MODES)}")
        if crowd_mode(crowd) == "on" and self.crowd_model is not None:
            return self._lowres(self.crowd_model, images, tta), [True] * len(images)
        probs = self._lowres(self.model, images, tta)
        # the rule labels each map: only where there is a crowd network to hand a photo to
        sent = [self.crowd_model is not None and wants_crowd(prob, crowd) for prob in probs]
        if any(sent):
            picked = [i for i, s in enumerate(sent) if s]
            for i, prob in zip(picked, self._lowres(self.crowd_model, [images[i] for i in picked], tta), strict=True):
                probs[i] = prob
        return probs, sent

    def _lowres(self, model: nn.Module, images: Sequence[Image.Image], tta: str) -> list[torch.Tensor]:
        groups: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            size = letterbox_size(*image.size, self.image_size)
            groups.setdefault(self._canvas(size), []).append(i)
        out: list[torch.Tensor] = [torch.empty(0)] * len(images)
        for idx in groups.values():
            for i, prob in zip(idx, self._forward(model, [images[i] for i in idx], tta), strict=True):
                out[i] = prob
        return out

    def _forward(self, model: nn.Module, images: Sequence[Image.Image], tta: str) -> list[torch.Tensor]:
        batch, sizes = self.model_input(images)
        if tta == "flip":
            batch = torch.cat([batch, mirror_content(batch, sizes)])
        with autocast(self.device, self.amp):
            logits = model(batch)
        probs = torch.sigmoid(logits.float())[:, 0].cpu()
        n = len(sizes)
        out = []
        for i, (w, h) in enumerate(sizes):
            p = probs[i, :h, :w]
            if tta == "flip":
                p = (p + probs[n + i, :h, :w].flip(-1)) / 2
            out.append(p)
        return out

    def predict(self, images: Sequence[Image.Image], refine: str = "guided", tta: str = "none",
                zoom: str = DEFAULT_ZOOM, crowd: str = DEFAULT_CROWD) -> list[np.ndarray]:
        """Full-resolution soft masks (uint8, 255 = person), one per photo.

        ``zoom`` ("off", "auto", "on") takes a second, closer look at photos of small people
        (``segmenter/zoom.py``); ``crowd`` ("off", "auto", "on") lets the crowd network look at photos of
        groups (``segmenter/crowd.py``).
        """
        probs = self.predict_lowres(images, tta, crowd)
        return [self.full_mask(prob, img, refine, tta, zoom) for prob, img in zip(probs, images, strict=True)]

    def full_mask(self, prob: torch.Tensor, image: Image.Image, refine: str = "guided", tta: str = "none",
                  zoom: str = DEFAULT_ZOOM) -> np.ndarray:
        """``image``'s full-resolution mask from its first-pass map ``prob``, with the zoom pass if it is wanted."""
        if not wants_zoom(prob, zoom):
            return upsample(prob, image, refine)
        # the tiles are the main network's: it is the one the zoom pass was measured with
        finer = zoomed(image, prob, lambda tiles: self.predict_lowres(tiles, tta, crowd="off"))
        return upsample(finer, image, refine, WORK_SIZE * GRID)

    def predict_one(self, image: Image.Image, refine: str = "guided", tta: str = "none",
                    zoom: str = DEFAULT_ZOOM, crowd: str = DEFAULT_CROWD) -> np.ndarray:
        return self.predict([image], refine, tta, zoom, crowd)[0]

