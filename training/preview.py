"""Visual preview per epoch: image | truth | prediction | composite on a new background.

Numbers hide the failures users notice (a missing hand, a halo), so every epoch saves a
picture of a few fixed validation photos.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from segmenter.imaging import composite
from segmenter.inference import Segmenter

THUMB_HEIGHT = 192
BACKGROUND = (46, 139, 87)  # a green no photo in the data sets has behind a person


def _thumb(arr: np.ndarray) -> Image.Image:
    img = Image.fromarray(arr)
    w = max(1, round(img.width * THUMB_HEIGHT / img.height))
    return img.convert("RGB").resize((w, THUMB_HEIGHT), Image.Resampling.BILINEAR)


def save_preview(segmenter: Segmenter, samples: Sequence[tuple[object, Image.Image, torch.Tensor]],
                 path: Path) -> None:
    rows = []
    masks = segmenter.predict([img for _, img, _ in samples]) if samples else []
    for (_, image, truth), soft in zip(samples, masks, strict=True):
        tiles = [np.asarray(image), truth.numpy().astype(np.uint8) * 255, soft, composite(image, soft, BACKGROUND)]
        rows.append([_thumb(t) for t in tiles])
    if not rows:
        return
    width = max(sum(t.width for t in r) for r in rows)
    sheet = Image.new("RGB", (width, THUMB_HEIGHT * len(rows)), (255, 255, 255))
    for y, r in enumerate(rows):
        x = 0
        for t in r:
            sheet.paste(t, (x, y * THUMB_HEIGHT))
            x += t.width
    tmp = path.with_suffix(".tmp.png")
    sheet.save(tmp)
    tmp.replace(path)
