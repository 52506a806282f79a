"""Test photos built in memory: a known 'subject' and the common input kinds the API accepts.

Bad and odd input files are a committed corpus: tests/corpus (make_corpus.py)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

# A bright rectangle (the "person" for the brightness stub model) on a dark, slightly noisy
# background; edges off any low-resolution grid.
SUBJECT_SIZE = (360, 240)
SUBJECT_BOX = (101, 47, 263, 201)  # x0, y0, x1, y1 (exclusive)


def subject_photo(size: tuple[int, int] = SUBJECT_SIZE, box: tuple[int, int, int, int] = SUBJECT_BOX,
                  seed: int = 0) -> Image.Image:
    w, h = size
    rng = np.random.default_rng(seed)
    arr = rng.integers(10, 40, (h, w, 3), dtype=np.uint8)
    x0, y0, x1, y1 = box
    arr[y0:y1, x0:x1] = rng.integers(215, 245, (y1 - y0, x1 - x0, 3), dtype=np.uint8)
    return Image.fromarray(arr)


def noise_photo(size: tuple[int, int], seed: int = 0) -> Image.Image:
    w, h = size
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def encode(img: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def input_variants() -> dict[str, bytes]:
    """The photo in every format and common pixel mode the API promises to read. The odd ones
    (CMYK, 16-bit, palette with transparency, animated GIF, EXIF-rotated) are files in tests/corpus,
    checked for alignment too by test_corpus.py."""
    rgb = noise_photo((64, 48), seed=3)
    rgba = rgb.convert("RGBA")
    return {
        "jpeg": encode(rgb, "JPEG"),
        "png_rgb": encode(rgb),
        "png_rgba": encode(rgba),
        "png_l": encode(rgb.convert("L")),
        "png_la": encode(rgb.convert("LA")),
        "webp": encode(rgb, "WEBP"),
        "bmp": encode(rgb, "BMP"),
        "tiff": encode(rgb, "TIFF"),
    }
