"""The edge benchmark's own parts (benchmarks/tuning/matting_quality.py): the fine-structure matte it scores
against, and its re-run of rembg's alpha matting, the method the served edge stage is compared with."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.tuning import matting_quality as mq

GREEN, WHITE = (0, 177, 64), (255, 255, 255)


def _photo_and_truth(size: tuple[int, int] = (160, 120)) -> tuple[np.ndarray, np.ndarray]:
    """A textured 'person' disc (hair-like noise) on a textured background, and its binary truth."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    truth = np.hypot(xx - w / 2, yy - h / 2) <= h * 0.35
    rng = np.random.default_rng(3)
    person = np.clip(np.float32([110, 80, 60]) + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
    return person, truth


def test_fine_matte_has_strands_only_near_the_outline() -> None:
    """The fine set's matte differs from the soft one in a ring around the outline, and only there, and it
    has pixel-scale structure (which a blur cannot have)."""
    person, truth = _photo_and_truth()
    soft, fine = mq.soft_matte(truth), mq.fine_matte(person, truth)
    assert fine.shape == truth.shape and 0 <= fine.min() and fine.max() <= 1
    band = mq.edge_band(truth)
    moved = np.abs(fine - soft) > 0.02
    assert moved[band].mean() > 0.3  # most of the ring has strands
    assert moved[~band].mean() < 0.1 * moved[band].mean()  # and little of the rest

    def detail(a: np.ndarray) -> float:
        """Mean |second difference| across x in the band: near zero for a blur, large for strands."""
        return float(np.abs(a[:, 2:] - 2 * a[:, 1:-1] + a[:, :-2])[band[:, 1:-1]].mean())

    assert detail(fine) > 3 * detail(soft)


def test_rembg_method_removes_the_old_background() -> None:
    """rembg's alpha matting as the benchmark re-runs it, given a hard mask of a soft-edged person on green:
    the composite on white is closer to the ideal than the plain blend."""
    missing = mq.rembg_available()
    if missing:
        pytest.skip(f"rembg's method needs pymatting: {missing}")
    person, truth = _photo_and_truth()
    alpha = mq.soft_matte(truth)
    given, ideal = mq.blend(person, alpha, GREEN), mq.blend(person, alpha, WHITE)
    mask = np.where(alpha >= 0.5, 255, 0).astype(np.uint8)
    band = mq.edge_band(truth)
    plain = mq.blend(given, mask.astype(np.float32) / 255, WHITE)
    result = mq.rembg_composite(given, mask, WHITE)
    assert result.shape == ideal.shape and result.dtype == np.uint8
    assert mq.band_error(result, ideal, band) < 0.7 * mq.band_error(plain, ideal, band)
