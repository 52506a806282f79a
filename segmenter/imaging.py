"""Decode any photo the way users hand it to us, and encode answers.

Training, evaluation, the CLI and the server all decode through ``decode_image`` so that a
CMYK JPEG, a 16-bit PNG or an EXIF-rotated phone photo means the same pixels everywhere.
Errors are ``ImageError`` with a message a user can act on; the server turns them into 4xx.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageFilter, ImageOps, UnidentifiedImageError

# A 24-megapixel photo must pass; a forged 50,000 x 50,000 header must not.
MAX_PIXELS = 64_000_000
MIN_SIDE = 16
# Blur radius (pixels) at which a blurred background is computed; wider blurs run on a reduced copy.
BLUR_SIGMA_AT_WORK = 8.0


class ImageError(ValueError):
    """An input image that cannot be used; ``status`` is the HTTP code the server should send."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width < MIN_SIDE or height < MIN_SIDE:
        raise ImageError(f"image is {width}x{height}; both sides must be at least {MIN_SIDE} pixels")
    if width * height > max_pixels:
        raise ImageError(
            f"image is {width}x{height} ({width * height / 1e6:.0f} megapixels); "
            f"the limit is {max_pixels / 1e6:.0f} megapixels",
            status=413,
        )


def _to_rgb(img: Image.Image) -> Image.Image:
    """Bring any Pillow mode to 8-bit RGB; alpha is flattened onto black like the training data."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr8 = np.clip(arr * (255.0 / peak) + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, "L").convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        scale = 255.0 if arr.max() <= 1.0 else 1.0
        return Image.fromarray(np.clip(arr * scale + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        canvas = Image.new("RGB", img.size, (0, 0, 0))
        canvas.paste(img, mask=img.getchannel("A"))
        return canvas
    if img.mode != "RGB":
        img = img.convert("RGB")  # L, 1, CMYK (Pillow inverts Adobe CMYK JPEGs correctly), YCbCr, LAB
    return img


def decode_image(data: bytes | bytearray, max_pixels: int = MAX_PIXELS, what: str = "image") -> Image.Image:
    """Decode bytes into an upright 8-bit RGB image (first frame, EXIF orientation applied).

    The size is checked from the header before any pixel is decoded, so a decompression
    bomb is refused without spending memory on it.
    """
    if not data:
        raise ImageError(f"{what} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(bytes(data)))
            _check_size(*img.size, max_pixels)
            img.seek(0)
            img.load()
            img = ImageOps.exif_transpose(img)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{what} is not an image format we can read "
                         "(JPEG, PNG, WebP, BMP, TIFF, GIF)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{what} has more than {max_pixels / 1e6:.0f} megapixels, the limit "
                         "(refused before decoding, as a decompression-bomb guard)", status=413) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"{what} could not be decoded (truncated or corrupt file?): {exc}") from None
    _check_size(*img.size, max_pixels)
    return _to_rgb(img)


def load_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Read a photo from disk through the same decoder the server uses; errors name the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read file: {exc.strerror}") from None
    try:
        return decode_image(data, max_pixels)
    except ImageError as exc:
        raise ImageError(f"{path}: {exc}", exc.status) from None


def load_mask(path: str | Path) -> np.ndarray:
    """Read a person mask as a boolean array (True = person).

    Masks must be binary (0 and one 'on' value, usually 255): a soft or colour-coded mask
    almost always means the wrong folder, so it is an error rather than a silent threshold.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            arr = np.asarray(img if img.mode in ("L", "I;16", "I") else img.convert("L"))
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: cannot read mask: {exc}") from None
    values = np.unique(arr)
    if len(values) > 2 or (len(values) == 2 and values[0] != 0):
        raise ImageError(f"{path}: mask is not binary (values {values[:6].tolist()}...); "
                         "expected 0 = background and one value (e.g. 255) = person")
    return arr > 0


def encode_png(array: np.ndarray, compress_level: int = 1) -> bytes:
    """PNG-encode an HxW (L), HxWx3 (RGB) or HxWx4 (RGBA) uint8 array.

    Written here rather than by Pillow because the answer's encoding was the largest cost of a
    served mask: every row gets the PNG 'Up' filter (one vectorised subtraction; masks and
    photos change little from row to row) and zlib level 1 compresses the lot: several times faster
    than Pillow's per-row adaptive filtering at the same level, for a file of the same size
    (docs/BENCHMARKS.md, "Design choices in the code"). Any PNG reader decodes it (standard 8-bit
    greyscale/RGB/RGBA, one IDAT).
    """
    arr = np.ascontiguousarray(array, dtype=np.uint8)
    if arr.ndim == 2:
        channels = 1
    elif arr.ndim == 3 and arr.shape[2] in PNG_COLOUR_TYPES:
        channels = arr.shape[2]
    else:
        raise ValueError(f"cannot PNG-encode an array of shape {arr.shape}")
    height, width = arr.shape[:2]
    rows = arr.reshape(height, width * channels)
    filtered = np.empty((height, width * channels + 1), np.uint8)
    filtered[:, 0] = 2  # filter type 'Up': each byte minus the byte above it, modulo 256
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    header = struct.pack(">IIBBBBB", width, height, 8, PNG_COLOUR_TYPES[channels], 0, 0, 0)
    return b"".join((b"\x89PNG\r\n\x1a\n", _png_chunk(b"IHDR", header),
                     _png_chunk(b"IDAT", zlib.compress(filtered.data, compress_level)), _png_chunk(b"IEND", b"")))


PNG_COLOUR_TYPES = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type (grey, RGB, RGBA)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_jpeg(array: np.ndarray, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def parse_color(text: str) -> tuple[int, int, int]:
    """Parse ``#RRGGBB`` (or ``RRGGBB``, ``#RGB``) into an RGB tuple."""
    s = text.strip().lstrip("#")
    if len(s) == 3:
        s = "".join(c * 2 for c in s)
    if len(s) != 6 or any(c not in "0123456789abcdefABCDEF" for c in s):
        raise ImageError(f"colour {text!r} is not of the form #RRGGBB")
    return int(s[0:2], 16), int(s[2:4], 16), int(s[4:6], 16)


def cover(background: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Scale a background to cover ``size`` and centre-crop it, as a photo editor would."""
    return ImageOps.fit(background, size, method=Image.Resampling.LANCZOS)


def blurred(image: Image.Image, radius: float | None = None) -> Image.Image:
    """The photo itself, blurred, as a background (portrait-mode look).

    A wide blur is computed on a copy reduced by ``radius / BLUR_SIGMA_AT_WORK`` and scaled back:
    what survives a blur of radius ``r`` has no detail finer than ``r`` pixels, so the result
    differs from a full-size blur by at most a few levels (under 1 on average), at about a tenth of
    the cost at camera sizes (docs/BENCHMARKS.md, "Design choices in the code").
    """
    if radius is None:
        radius = max(2.0, 0.02 * float(np.hypot(*image.size)))
    factor = int(radius // BLUR_SIGMA_AT_WORK)
    if factor < 2 or min(image.size) // factor < MIN_SIDE:
        return image.filter(ImageFilter.GaussianBlur(radius))
    small = image.reduce(factor).filter(ImageFilter.GaussianBlur(radius / factor))
    return small.resize(image.size, Image.Resampling.BILINEAR)


def composite(image: Image.Image, alpha: np.ndarray, background: Image.Image | tuple[int, int, int]) -> np.ndarray:
    """Alpha-blend the photo over a background; ``alpha`` is HxW uint8 (255 = person).

    Pillow's composite is exactly ``round(photo * a + background * (1 - a))`` in 8-bit integer
    arithmetic, faster than the same blend in float32 numpy (docs/BENCHMARKS.md).
    """
    if isinstance(background, tuple):
        bg = Image.new("RGB", image.size, background)
    else:
        bg = background.convert("RGB")
    return np.asarray(Image.composite(image.convert("RGB"), bg, Image.fromarray(np.ascontiguousarray(alpha), "L")))


def cutout(image: Image.Image, alpha: np.ndarray) -> np.ndarray:
    """RGBA array: the photo with the mask as its alpha channel."""
    return np.dstack([np.asarray(image, dtype=np.uint8), alpha])


ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated upload is an error, not a grey half-photo
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
