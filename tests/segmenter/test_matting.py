"""The edge stage (segmenter/matting.py): trimap, closed-form matte, person colours, and the composite they make."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from segmenter import imaging, matting

PERSON = np.float32([230, 190, 150])  # skin-like
OLD_BACKGROUND = np.float32([0, 177, 64])  # green screen
NEW_BACKGROUND = (255, 255, 255)


def _scene(size: tuple[int, int], sigma: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """(soft true matte float HxW, photo uint8 HxWx3): an ellipse 'person' with a textured inside, blended onto
    green through a blurred edge, as a camera sees hair over a wall."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    inside = ((xx - w / 2) / (w * 0.3)) ** 2 + ((yy - h / 2) / (h * 0.35)) ** 2 <= 1
    matte = np.asarray(Image.fromarray(inside.astype(np.uint8) * 255).filter(ImageFilter.GaussianBlur(sigma)),
                       np.float32) / 255
    texture = np.random.default_rng(0).normal(0, 6, (h, w, 3)).astype(np.float32)
    person = np.clip(PERSON + texture, 0, 255)
    photo = person * matte[..., None] + OLD_BACKGROUND * (1 - matte[..., None])
    return matte, np.clip(photo + 0.5, 0, 255).astype(np.uint8), person


def _hard_mask(matte: np.ndarray) -> np.ndarray:
    """What a segmenter gives: the right outline, but hard (0 or 255)."""
    return np.where(matte >= 0.5, 255, 0).astype(np.uint8)


def _band(matte: np.ndarray) -> np.ndarray:
    """Where the true matte is soft: where a fringe can show."""
    return (matte > 0.02) & (matte < 0.98)


def _edge_error(size: tuple[int, int], on: bool) -> float:
    """Mean RGB error in the soft band of the scene composited onto white, with the stage or the plain blend."""
    matte, photo, person = _scene(size, sigma=max(1.5, size[0] / 200))
    image = Image.fromarray(photo)
    mask = _hard_mask(matte)
    if on:
        m = matting.matte(image, mask)
        image, mask = m.foreground, m.alpha
    result = imaging.composite(image, mask, NEW_BACKGROUND).astype(np.float32)
    ideal = person * matte[..., None] + np.float32(NEW_BACKGROUND) * (1 - matte[..., None])
    band = _band(matte)
    return float(np.abs(result[band] - ideal[band]).mean())


@pytest.mark.parametrize("size", [(240, 180), (640, 480)])  # matted at full size / at a working size
def test_edge_stage_removes_most_of_the_old_background(size: tuple[int, int]) -> None:
    """The point of the stage: a green fringe on a white background. The 640x480 photo is above
    WORK_PIXELS, so the matte is solved on a reduced copy and brought back by the guided filter."""
    assert (size[0] * size[1] > matting.WORK_PIXELS) == (size == (640, 480))
    off, on = _edge_error(size, False), _edge_error(size, True)
    assert on < 0.6 * off, (off, on)


def test_nothing_changes_away_from_the_outline() -> None:
    """Outside the band the mask and the photo are used exactly as they are; inside, the matte is soft."""
    matte, photo, _ = _scene((240, 180))  # below WORK_PIXELS: matted at full size, the band is the trimap's
    mask = _hard_mask(matte)
    m = matting.matte(Image.fromarray(photo), mask)
    assert m.alpha.shape == mask.shape and m.alpha.dtype == np.uint8 and m.foreground.size == (240, 180)
    person, unknown = matting.trimap(mask, matting.band_radius(240, 180))
    far = ~unknown
    np.testing.assert_array_equal(m.alpha[far], mask[far])
    np.testing.assert_array_equal(np.asarray(m.foreground)[far], photo[far])
    assert m.alpha[unknown].min() < 64 and m.alpha[unknown].max() > 192  # the band is really soft
    assert 0 < np.count_nonzero((m.alpha > 0) & (m.alpha < 255)) <= np.count_nonzero(unknown)


def test_trimap_band_is_centred_on_the_outline() -> None:
    """``radius`` pixels each side of the 0.5 outline, no more: a shifted band would miss the real edge."""
    mask = np.zeros((60, 80), np.uint8)
    mask[:, 40:] = 255
    person, unknown = matting.trimap(mask, 3)
    cols = np.nonzero(unknown[30])[0]
    assert cols.min() == 37 and cols.max() == 42  # 3 each side of the edge between columns 39 and 40
    assert person[:, 43:].all() and not person[:, :43].any()
    assert not (person & unknown).any()


def test_band_width_follows_the_photo() -> None:
    """Edges are as many pixels wide as the photo is large: the band scales with the diagonal, floored."""
    assert matting.band_radius(40, 30) == matting.MIN_BAND
    assert matting.band_radius(8000, 6000) == round(matting.BAND_FRACTION * 10_000)
    assert abs(matting.band_radius(8000, 6000) - 10 * matting.band_radius(800, 600)) < 10


def test_closed_form_recovers_a_linear_ramp() -> None:
    """Between two flat colours the closed-form matte is exact: alpha is the ramp the photo was made with,
    not the hard mask it starts from, up to the photo's top and bottom rows."""
    h, w = 20, 60
    ramp = np.clip((np.arange(w, dtype=np.float32) - 26.5) / 7, 0, 1)
    alpha_true = np.broadcast_to(ramp, (h, w))
    image = alpha_true[..., None] * np.float32([0.9, 0.7, 0.5]) + (1 - alpha_true[..., None]) * np.float32(
        [0.1, 0.6, 0.2])
    unknown = np.zeros((h, w), bool)
    unknown[:, 24:37] = True
    hard = (alpha_true >= 0.5).astype(np.float32)
    got = matting.solve_alpha(image, (hard > 0) & ~unknown, unknown, hard)
    assert np.abs(got - alpha_true).max() < 0.05
    assert np.abs(hard - alpha_true).max() > 0.4


def test_estimated_colour_is_the_persons_not_the_mix() -> None:
    """Where a pixel is half person, half green, the cut-out's colour is the person's, not the mix."""
    matte, photo, person = _scene((240, 180), sigma=2.5)
    m = matting.matte(Image.fromarray(photo), _hard_mask(matte))
    half = (matte > 0.3) & (matte < 0.7)
    fg = np.asarray(m.foreground, np.float32)[half]
    mixed = photo[half].astype(np.float32)
    assert np.abs(fg - person[half]).mean() < 0.4 * np.abs(mixed - person[half]).mean()


def test_photo_without_a_person_or_without_background() -> None:
    """No outline, no band: the stage must hand back the mask and the photo unchanged (and not fail)."""
    photo = Image.fromarray(np.random.default_rng(1).integers(0, 255, (50, 70, 3), dtype=np.uint8))
    for value in (0, 255):
        mask = np.full((50, 70), value, np.uint8)
        m = matting.matte(photo, mask)
        np.testing.assert_array_equal(m.alpha, mask)
        np.testing.assert_array_equal(np.asarray(m.foreground), np.asarray(photo))


def test_trimap_band_covers_a_soft_mask_edge() -> None:
    """A soft mask is unsure across its whole ramp: the band holds all of it plus ``radius`` on each side,
    so the solve can move the edge anywhere the mask was unsure of."""
    mask = np.zeros((20, 60), np.uint8)
    mask[:, 30:] = 255
    mask[:, 24:30] = np.linspace(20, 230, 6).astype(np.uint8)  # soft from column 24 to 29
    person, unknown = matting.trimap(mask, 2)
    cols = np.nonzero(unknown[10])[0]
    assert cols.min() == 22 and cols.max() == 31
    assert person[:, 32:].all() and not person[:, :32].any()


def _strand_scene(size: tuple[int, int] = (320, 240)) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(true matte, photo, person colours, the model-like mask): a disc with one-pixel strands around it,
    half transparent, as long as the band is wide, on green; the mask has the disc only, as a segmenter
    sees hair."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.hypot(xx - w / 2, yy - h / 2)
    disc = r <= h * 0.3
    angle = np.degrees(np.arctan2(yy - h / 2, xx - w / 2)) % 12
    reach = matting.band_radius(w, h)
    strands = (r > h * 0.3) & (r < h * 0.3 + reach) & (angle < 1.5)
    matte = np.where(disc, 1.0, np.where(strands, 0.6, 0.0)).astype(np.float32)
    person = np.broadcast_to(np.float32([120, 70, 40]), (h, w, 3))  # dark brown hair
    photo = person * matte[..., None] + OLD_BACKGROUND * (1 - matte[..., None])
    return matte, np.clip(photo + 0.5, 0, 255).astype(np.uint8), person, np.where(disc, 255, 0).astype(np.uint8)


def test_strands_the_mask_misses_are_found() -> None:
    """Hair-like detail thinner than the mask's outline: the matte follows the photo's colours into the
    strands, so the composite shows them with little green, where the plain blend drops them or keeps green."""
    matte, photo, person, mask = _strand_scene()
    ideal = person * matte[..., None] + np.float32(NEW_BACKGROUND) * (1 - matte[..., None])
    strands = (matte > 0) & (matte < 1)
    plain = imaging.composite(Image.fromarray(photo), mask, NEW_BACKGROUND).astype(np.float32)
    m = matting.matte(Image.fromarray(photo), mask)
    edge = imaging.composite(m.foreground, m.alpha, NEW_BACKGROUND).astype(np.float32)
    off, on = (float(np.abs(x[strands] - ideal[strands]).mean()) for x in (plain, edge))
    assert on < 0.5 * off, (off, on)
    assert m.alpha[strands].mean() > 0.4 * 255  # the strands are in the matte, not only recoloured
