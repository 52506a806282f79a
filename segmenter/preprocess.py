"""Pre-processing constants and the image -> tensor step, shared by training and serving.

The model sees the photo letterboxed: scaled so its long side is ``image_size``, placed in
the top-left corner of a black canvas. Training augmentation produces the same kind
of input (random scale, random placement, black padding), so the two never disagree.
Training uses square canvases; inference cuts the black band right of a portrait photo (``canvas_size``).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
DEFAULT_IMAGE_SIZE = 256
THRESHOLD = 0.5


def normalize(batch: torch.Tensor) -> torch.Tensor:
    """uint8 or [0,1] float NCHW RGB -> the normalised float input the network was trained on."""
    if batch.dtype == torch.uint8:
        batch = batch.float().div_(255.0)
    mean = torch.tensor(MEAN, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
    return (batch - mean) / std


def letterbox_size(width: int, height: int, image_size: int) -> tuple[int, int]:
    """Size (w, h) of the photo inside the ``image_size`` square, aspect ratio kept."""
    scale = image_size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def letterbox(image: Image.Image, image_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Photo -> uint8 CHW square tensor and the (w, h) of the content in its top-left corner."""
    w, h = letterbox_size(*image.size, image_size)
    small = image.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=2.0)
    canvas = np.zeros((image_size, image_size, 3), dtype=np.uint8)
    canvas[:h, :w] = np.asarray(small)
    return torch.from_numpy(canvas).permute(2, 0, 1), (w, h)


def canvas_size(width: int, image_size: int, multiple: int) -> tuple[int, int]:
    """(height, width) of the inference canvas for a photo letterboxed to ``width`` pixels across:
    the full ``image_size`` height, and the photo's width plus under ``multiple`` pixels of black
    (``multiple``: the network's own size step).

    A portrait photo on the square spends a quarter of the network's work (3:4) on black padding to
    its right; cutting that padding changes no validation IoU (366 portraits, equal to 4 decimals,
    docs/BENCHMARKS.md). The black band *below* a landscape photo is kept: cut down, it cost 0.0003
    to 0.0025 IoU on landscape hard cases, where people cut by the bottom edge were read worse.
    """
    return image_size, min(image_size, -(-width // multiple) * multiple)
