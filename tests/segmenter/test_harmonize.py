"""Match the light: identity at strength 0 and on the person's own scene, statistics moved at strength 1."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from segmenter import harmonize


def _scene(h: int = 240, w: int = 320, seed: int = 0) -> tuple[Image.Image, np.ndarray]:
    """A textured photo and the soft matte of a person in its middle."""
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 200, (h // 8, w // 8, 3), dtype=np.uint8)
    photo = Image.fromarray(base).resize((w, h), Image.Resampling.BILINEAR)
    yy, xx = np.mgrid[:h, :w]
    inside = ((xx - w / 2) / (w * 0.2)) ** 2 + ((yy - h * 0.6) / (h * 0.4)) ** 2
    alpha = (np.clip((1.1 - inside) * 5, 0, 1) * 255).astype(np.uint8)
    return photo, alpha


def _cast(image: Image.Image, gain: tuple[float, float, float]) -> Image.Image:
    return Image.fromarray(np.clip(np.asarray(image, np.float64) * gain, 0, 255).astype(np.uint8))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)


def test_lab_round_trip() -> None:
    colours = np.random.default_rng(1).integers(0, 256, (500, 3)).astype(np.float64)
    assert np.abs(harmonize.lab_to_rgb(harmonize.rgb_to_lab(colours)) - colours).max() < 1e-6
    assert harmonize.rgb_to_lab(np.array([255.0, 255, 255])) == pytest.approx([100, 0, 0], abs=1e-3)


def test_strength_zero_is_the_identity() -> None:
    photo, alpha = _scene()
    other = _cast(photo, (0.6, 0.7, 1.2))
    assert harmonize.harmonize(photo, alpha, photo, other, 0.0) is photo


def test_the_persons_own_scene_leaves_them_as_they_are() -> None:
    photo, alpha = _scene()
    out = harmonize.harmonize(photo, alpha, photo, photo, 1.0)
    assert _psnr(np.asarray(out), np.asarray(photo)) >= 45


def test_strength_one_moves_the_person_toward_the_new_light() -> None:
    photo, alpha = _scene()
    warm = _cast(photo, (1.08, 1.0, 0.92))  # the person was taken in warm light ...
    out = np.asarray(harmonize.harmonize(warm, alpha, warm, photo, 1.0), np.float64)  # ... put on a neutral scene
    person = alpha == 255
    before = np.abs(np.asarray(warm, np.float64)[person] - np.asarray(photo, np.float64)[person]).mean()
    after = np.abs(out[person] - np.asarray(photo, np.float64)[person]).mean()
    assert after < 0.5 * before
    half = np.asarray(harmonize.harmonize(warm, alpha, warm, photo, 0.5), np.float64)
    middle = np.abs(half[person] - np.asarray(photo, np.float64)[person]).mean()
    assert after < middle < before


def test_every_pixel_goes_through_one_map() -> None:
    """A cut-out's colour layer stays continuous: the same colour inside and outside the matte moves alike."""
    photo, alpha = _scene()
    arr = np.array(photo)
    arr[0, 0] = arr[alpha == 255][0]  # a person's colour in the corner, outside the matte
    photo = Image.fromarray(arr)
    out = np.asarray(harmonize.harmonize(photo, alpha, photo, _cast(photo, (0.5, 0.5, 0.5)), 1.0))
    inside = np.argwhere(alpha == 255)[0]
    assert np.array_equal(out[0, 0], out[inside[0], inside[1]])
    assert not np.array_equal(out[0, 0], arr[0, 0])


def test_the_change_is_held_to_plausible_limits() -> None:
    photo, alpha = _scene()
    black = Image.new("RGB", photo.size, (0, 0, 0))
    change = harmonize.light_change(photo, alpha, black)
    assert change is not None
    assert abs(change.shift[0]) <= harmonize.MAX_LIGHTNESS_SHIFT
    assert np.abs(change.shift[1:]).max() <= harmonize.MAX_CHROMA_SHIFT
    assert change.ratio.min() >= 1 / harmonize.MAX_SPREAD_RATIO - 1e-9
    assert change.ratio[1] == change.ratio[2]  # a* and b* share one ratio: hues are not turned


def test_a_person_filling_the_frame_has_no_scene_to_read() -> None:
    photo, _ = _scene()
    full = np.full((photo.height, photo.width), 255, np.uint8)
    assert harmonize.harmonize(photo, full, photo, _cast(photo, (0.5, 0.5, 0.5)), 1.0) is photo


def test_a_strength_out_of_range_is_an_error() -> None:
    photo, alpha = _scene()
    with pytest.raises(ValueError, match="outside 0..1"):
        harmonize.harmonize(photo, alpha, photo, photo, 1.5)
