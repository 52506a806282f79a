"""Property test: whatever bytes arrive, decoding gives an RGB photo or an ImageError — nothing else.

Anything else (an uncaught Pillow exception, a crash, a hang) would be a 503 or a dead worker
on the server. Bounded: a few hundred examples, each image small.
"""

from __future__ import annotations

import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from segmenter.imaging import ImageError, decode_image


def _seed_images() -> list[bytes]:
    img = Image.new("RGB", (40, 32), (120, 30, 200))
    out = []
    for fmt, mode in (("PNG", "RGB"), ("JPEG", "RGB"), ("GIF", "P"), ("BMP", "RGB"), ("TIFF", "RGB"),
                      ("WEBP", "RGB"), ("PNG", "LA")):
        buf = io.BytesIO()
        img.convert(mode).save(buf, format=fmt)
        out.append(buf.getvalue())
    return out


SEEDS = _seed_images()
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow notes odd TIFF tags


def _check(data: bytes) -> None:
    try:
        result = decode_image(data)
    except ImageError as exc:
        assert str(exc) and 400 <= exc.status < 500
    else:
        assert result.mode == "RGB" and min(result.size) >= 16


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_random_bytes(data: bytes) -> None:
    _check(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
       st.integers(0, 10_000))
def test_mutated_images(seed: bytes, flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(seed)
    for pos, value in flips:
        data[pos % len(data)] = value
    _check(bytes(data[: max(1, len(data) - cut % len(data))]))


@pytest.mark.parametrize("seed", SEEDS, ids=["png", "jpeg", "gif", "bmp", "tiff", "webp", "png-la"])
def test_seeds_decode(seed: bytes) -> None:
    assert decode_image(seed).size == (40, 32)
