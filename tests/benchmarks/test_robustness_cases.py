"""The hard cases of benchmarks/robustness.py: each built photo and its truth must still agree."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from benchmarks.robustness import CASES, cut_by_frame, group_of_two, small_far


def _painted(w: int, h: int, box: tuple[int, int, int, int]) -> tuple[Image.Image, np.ndarray]:
    """A photo that is its truth painted white on dark grey."""
    truth = np.zeros((h, w), bool)
    x0, y0, x1, y1 = box
    truth[y0:y1, x0:x1] = True
    return Image.fromarray(np.where(truth[..., None], 255, 40).astype(np.uint8).repeat(3, 2)), truth


A = _painted(120, 180, (30, 20, 90, 170))
B = _painted(100, 100, (20, 10, 80, 100))


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_case_keeps_photo_and_truth_aligned(case: str) -> None:
    image, truth = CASES[case](A, B)
    assert truth.dtype == bool and truth.shape == (image.height, image.width)
    bright = np.asarray(image.convert("L")) > 147
    assert (bright == truth).mean() > 0.99, case


def test_cut_by_frame_keeps_the_left_55_percent() -> None:
    image, truth = cut_by_frame(A, B)
    assert image.size == (66, 180) and np.array_equal(truth, A[1][:, :66])


def test_group_of_two_has_both_people() -> None:
    image, truth = group_of_two(A, B)
    assert image.size == (120 + 180, 180)
    assert truth[:, :120].sum() == A[1].sum() and truth[:, 120:].sum() > 0.9 * B[1].sum() * 1.8**2


def test_small_far_adds_the_second_person_bottom_right() -> None:
    image, truth = small_far(A, B)
    assert image.size == A[0].size
    added = truth & ~A[1]
    rows, cols = np.nonzero(added)
    assert rows.min() >= 180 - 72 and cols.min() >= 120 - 72 and added.sum() > 0
