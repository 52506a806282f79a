"""Test photos built in memory: a known 'subject', every input kind the API accepts, bad inputs."""

from __future__ import annotations

import io
import struct
import zlib

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


def exif_rotated_jpeg(upright: Image.Image, orientation: int = 6) -> bytes:
    """A phone-style JPEG: stored sideways, with EXIF orientation 6 ("rotate 90 degrees clockwise
    to display"), so that a correct decoder shows ``upright``."""
    stored = upright.transpose(Image.Transpose.ROTATE_90) if orientation == 6 else upright
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(stored, "JPEG", quality=98, exif=exif.tobytes())


def png_bomb_header(width: int = 50_000, height: int = 50_000) -> bytes:
    """A tiny PNG whose header claims a huge size (a decompression bomb's signature)."""
    png = encode(Image.new("L", (16, 16)))
    body = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + body) & 0xFFFFFFFF)
    return png[:16] + body + crc + png[33:]


def input_variants() -> dict[str, bytes]:
    """The photo in every format and pixel mode the API promises to read."""
    rgb = noise_photo((64, 48), seed=3)
    rgba = rgb.convert("RGBA")
    arr16 = (np.asarray(rgb.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    return {
        "jpeg": encode(rgb, "JPEG"),
        "png_rgb": encode(rgb),
        "png_rgba": encode(rgba),
        "png_l": encode(rgb.convert("L")),
        "png_la": encode(rgb.convert("LA")),
        "png_p": encode(rgb.convert("P")),
        "png_16bit": encode(Image.fromarray(arr16)),
        "jpeg_cmyk": encode(rgb.convert("CMYK"), "JPEG"),
        "webp": encode(rgb, "WEBP"),
        "bmp": encode(rgb, "BMP"),
        "tiff": encode(rgb, "TIFF"),
        "gif": encode(rgb.convert("P"), "GIF"),
    }
