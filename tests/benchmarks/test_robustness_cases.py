"""The hard cases of benchmarks/robustness.py: each built photo and its truth must still agree."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from benchmarks.robustness import CASES, cut_by_frame, group_of_two, people_behind, small_far, small_group
from segmenter import people
from training import scenes


def _painted(w: int, h: int, box: tuple[int, int, int, int]) -> tuple[Image.Image, np.ndarray]:
    """A photo that is its truth painted white on dark grey."""
    truth = np.zeros((h, w), bool)
    x0, y0, x1, y1 = box
    truth[y0:y1, x0:x1] = True
    return Image.fromarray(np.where(truth[..., None], 255, 40).astype(np.uint8).repeat(3, 2)), truth


A = _painted(120, 180, (30, 20, 90, 170))
B = _painted(100, 100, (20, 10, 80, 100))
SAMPLES = [A, B, _painted(90, 160, (20, 10, 70, 160)), _painted(200, 150, (120, 30, 180, 150)),
           _painted(60, 120, (10, 5, 50, 115))]


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_case_keeps_photo_and_truth_aligned(case: str) -> None:
    image, truth = CASES[case](SAMPLES, 0)
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


def test_small_group_has_small_people_on_a_person_free_background() -> None:
    image, truth = small_group(SAMPLES, 3)
    # The background is cut from a person-free part of photo 3, so every person pixel was pasted.
    assert image.height < SAMPLES[3][0].height or image.width < SAMPLES[3][0].width
    assert 1 <= people.label(truth)[1] <= 6 and 0 < truth.mean() < 0.5


@pytest.mark.parametrize("seed", range(10))
def test_a_pasted_person_is_8_to_30_percent_of_the_frame_high(seed: int) -> None:
    canvas = np.full((200, 300, 3), 40, np.uint8)
    person = (np.full((50, 20, 3), 255, np.uint8), np.ones((50, 20), bool))
    image, truth = scenes.paste_people(canvas, np.zeros((200, 300), bool), [person],
                                       np.random.default_rng(seed))
    rows = np.flatnonzero(truth.any(axis=1))
    assert rows.size and rows[0] < 200 - 0.5 * 0.08 * 200  # its top is inside the frame
    assert rows[-1] - rows[0] + 1 <= 0.30 * 200 + 1
    assert ((np.asarray(image)[..., 0] > 147) == truth).mean() > 0.99


def test_people_behind_keeps_the_subject_whole_and_adds_people() -> None:
    image, truth = people_behind(SAMPLES, 3)
    subject = SAMPLES[3][1]
    assert image.size == SAMPLES[3][0].size
    assert truth[subject].all() and (truth & ~subject).sum() > 0
    # The subject stays in front: its own pixels are unchanged.
    assert np.array_equal(np.asarray(image)[subject], np.asarray(SAMPLES[3][0])[subject])


def test_scene_cases_are_the_same_every_run() -> None:
    for build in (small_group, people_behind):
        (i1, t1), (i2, t2) = build(SAMPLES, 1), build(SAMPLES, 1)
        assert np.array_equal(np.asarray(i1), np.asarray(i2)) and np.array_equal(t1, t2)
