"""Synthetic test photos for the speed benchmarks: any size, no data set needed.

A smooth gradient with noise and a few shapes behind a person-like figure, JPEG-encoded at
quality 90: its file size per megapixel is close to a phone photo's, so decode and encode
times are realistic, and nothing under a licence has to ship with the benchmarks.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# A public-domain photo of one person (tests/gimp/data/README.md), for the photos that need a real person
ASTRONAUT = Path(__file__).resolve().parent.parent / "tests" / "gimp" / "data" / "astronaut.jpg"


def size_for(megapixels: float, aspect: float = 4 / 3) -> tuple[int, int]:
    """(width, height) of a photo with about ``megapixels`` million pixels (``aspect`` = width / height)."""
    height = math.sqrt(megapixels * 1e6 / aspect)
    return round(height * aspect), round(height)


def synthetic_photo(megapixels: float, seed: int = 0, aspect: float = 4 / 3) -> Image.Image:
    """An RGB photo-like image of about ``megapixels`` million pixels; landscape 4:3 unless ``aspect`` says."""
    width, height = size_for(megapixels, aspect)
    rng = np.random.default_rng(seed)
    # Texture at a fixed, small size, then scaled up: cheap at 24 MP, still not flat
    sw, sh = max(16, width // 8), max(16, height // 8)
    y, x = np.mgrid[0:sh, 0:sw].astype(np.float32)
    base = np.stack([120 + 80 * x / sw, 90 + 60 * y / sh, 160 - 60 * x / sw], -1)
    base += rng.normal(0, 12, (sh, sw, 3))
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).resize((width, height), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        r = int(rng.integers(height // 20, height // 6))
        draw.ellipse((x0 - r, y0 - r, x0 + r, y0 + r), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    head, body = _figure(width, height)
    draw.ellipse(head, fill=(225, 180, 150))
    draw.rectangle(body, fill=(40, 60, 120))
    noise = rng.normal(0, 6, (height // 2, width // 2, 1)).astype(np.float32)
    grain = Image.fromarray(np.clip(128 + noise[..., 0] * 4, 0, 255).astype(np.uint8)).resize((width, height))
    img = Image.blend(img, Image.merge("RGB", (grain, grain, grain)), 0.12)
    return img


def _figure(width: int, height: int) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """Boxes of a standing figure's head and body, centred."""
    cx, cy = width // 2, height // 2
    return ((cx - height // 12, cy - height // 3, cx + height // 12, cy - height // 6),
            (cx - height // 7, cy - height // 6, cx + height // 7, height))


def figure_mask(size: tuple[int, int]) -> Image.Image:
    """The person mask (L, 255 = figure) of ``synthetic_photo`` at ``size``: for training-speed runs."""
    mask = Image.new("L", size, 0)
    head, body = _figure(*size)
    draw = ImageDraw.Draw(mask)
    draw.ellipse(head, fill=255)
    draw.rectangle(body, fill=255)
    return mask


def ground(width: int, height: int) -> Image.Image:
    """A green-grey textured ground with no figure on it: where the group photos put their people."""
    rng = np.random.default_rng(0)
    small = (rng.normal(0, 12, (max(16, height // 8), max(16, width // 8), 3)) + [96, 128, 96]).clip(0, 255)
    return Image.fromarray(small.astype(np.uint8)).resize((width, height), Image.Resampling.BILINEAR)


def group_photo(person: Image.Image, megapixels: float, aspect: float = 1.5, people: int = 4,
                share: float = 0.25) -> Image.Image:
    """``people`` copies of the photo ``person``, each ``share`` of the height, in a row on a textured ground.

    A photo the first look calls a group (several people, none tall), so the crowd network looks at it too
    (segmenter/crowd.py): what a group photo costs. ``person`` should be a real photo of someone (the
    synthetic figure above is not taken for a person).
    """
    width, height = size_for(megapixels, aspect)
    side = round(height * share)
    copy = person.convert("RGB").resize((side, side), Image.Resampling.LANCZOS)
    out = ground(width, height)
    step = width // people
    for i in range(people):
        out.paste(copy, (i * step + (step - side) // 2, height // 2 + (i % 2) * height // 30))
    return out


def jpeg_bytes(image: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
