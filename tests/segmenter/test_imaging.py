"""Decoding every photo users send, and refusing bad ones with a clear message."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFilter

from segmenter.imaging import (
    ImageError,
    blurred,
    composite,
    cover,
    decode_image,
    encode_png,
    parse_color,
)


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    # A real bomb's header is followed by a little highly compressible data.
    idat = chunk(b"IDAT", zlib.compress(b"\0" * 4096))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGB", "RGBA", "CMYK", "1"])
def test_modes_decode_to_rgb(mode: str) -> None:
    src = Image.new("RGB", (40, 30), (200, 100, 50)).convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    out = decode_image(_encode(src, fmt))
    assert out.mode == "RGB" and out.size == (40, 30)


def test_cmyk_jpeg_keeps_colour() -> None:
    src = Image.new("RGB", (32, 32), (220, 30, 30)).convert("CMYK")
    r, g, b = decode_image(_encode(src, "JPEG", quality=95)).getpixel((16, 16))
    assert r > 180 and g < 80 and b < 80


def test_16bit_greyscale_is_scaled_not_clipped() -> None:
    arr = np.full((20, 20), 32768, dtype=np.uint16)
    src = Image.fromarray(arr)
    assert src.mode == "I;16"
    out = np.asarray(decode_image(_encode(src, "PNG")))
    assert 120 <= out[0, 0, 0] <= 135  # half of full scale, not clipped to 255


def test_exif_orientation_is_applied() -> None:
    src = Image.new("RGB", (60, 20), (10, 200, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    out = decode_image(_encode(src, "JPEG", exif=exif))
    assert out.size == (20, 60)


def test_gif_first_frame() -> None:
    frames = [Image.new("P", (24, 24), i) for i in (1, 2)]
    data = io.BytesIO()
    frames[0].save(data, format="GIF", save_all=True, append_images=frames[1:])
    assert decode_image(data.getvalue()).size == (24, 24)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"hello, this is text", "not an image"),
        (_png_header_only(50_000, 50_000), "megapixels"),
    ],
)
def test_bad_inputs_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        decode_image(data)


def test_bomb_gets_413() -> None:
    with pytest.raises(ImageError) as info:
        decode_image(_png_header_only(50_000, 50_000))
    assert info.value.status == 413


def test_truncated_and_tiny_are_400() -> None:
    good = _encode(Image.new("RGB", (64, 64), (1, 2, 3)), "PNG")
    with pytest.raises(ImageError, match="truncated|corrupt") as info:
        decode_image(good[: len(good) // 2])
    assert info.value.status == 400
    with pytest.raises(ImageError, match="at least"):
        decode_image(_encode(Image.new("RGB", (1, 1)), "PNG"))


def test_parse_color() -> None:
    assert parse_color("#00b140") == (0, 0xB1, 0x40)
    assert parse_color("fff") == (255, 255, 255)
    with pytest.raises(ImageError, match="#RRGGBB"):
        parse_color("green")


def test_composite_blends_by_alpha() -> None:
    image = Image.new("RGB", (4, 1), (200, 200, 200))
    alpha = np.array([[0, 255, 128, 0]], dtype=np.uint8)
    out = composite(image, alpha, (0, 0, 100))
    assert out[0, 0].tolist() == [0, 0, 100]
    assert out[0, 1].tolist() == [200, 200, 200]
    assert out[0, 2].tolist() == [100, 100, 150]


def test_cover_fills_target() -> None:
    assert cover(Image.new("RGB", (100, 10)), (30, 40)).size == (30, 40)


def test_encode_png_round_trip() -> None:
    mask = (np.arange(64 * 48) % 256).astype(np.uint8).reshape(48, 64)
    back = np.asarray(Image.open(io.BytesIO(encode_png(mask))))
    assert np.array_equal(back, mask)


def test_composite_is_the_rounded_float_blend() -> None:
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8))
    background = Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8))
    alpha = rng.integers(0, 256, (37, 53), dtype=np.uint8)
    fg, bg = np.asarray(image, np.float64), np.asarray(background, np.float64)
    expected = np.floor(bg + (fg - bg) * alpha[..., None] / 255 + 0.5)
    assert np.abs(composite(image, alpha, background).astype(int) - expected.astype(int)).max() <= 1


@pytest.mark.parametrize("radius", [3.0, 20.0, 40.0, 100.0])
def test_blur_on_a_reduced_copy_matches_a_full_size_blur(radius: float) -> None:
    """The shortcut for wide blurs may not show: a few levels at most, a fraction of one on average."""
    rng = np.random.default_rng(4)
    small = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((640, 480), Image.Resampling.BICUBIC)
    out = np.asarray(blurred(image, radius)).astype(int)
    full = np.asarray(image.filter(ImageFilter.GaussianBlur(radius))).astype(int)
    assert out.shape == full.shape
    assert np.abs(out - full).max() <= 6 and np.abs(out - full).mean() < 0.75


@pytest.mark.parametrize("shape", [(48, 64), (1, 1), (1, 300), (300, 1), (17, 23, 3), (9, 5, 4)])
def test_encode_png_round_trips_every_kind(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(5)
    array = rng.integers(0, 256, shape, dtype=np.uint8)
    with Image.open(io.BytesIO(encode_png(array))) as img:
        img.load()
        assert img.mode == {2: "L", 3: "RGB", 4: "RGBA"}[len(shape) if len(shape) == 2 else shape[2]]
        assert np.array_equal(np.asarray(img), array)


def test_encode_png_refuses_what_png_cannot_hold() -> None:
    with pytest.raises(ValueError, match="shape"):
        encode_png(np.zeros((4, 4, 2), np.uint8))
