"""Decoys, the scenes' hard negatives: person-shaped pieces of background labelled background."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training import scenes
from training.data import SegmentationDataset, find_pairs


def _figure(h: int = 60, w: int = 24) -> np.ndarray:
    """A person's outline: a head on a body."""
    yy, xx = np.mgrid[:h, :w]
    head = (yy - h * 0.12) ** 2 + (xx - w / 2) ** 2 <= (w * 0.3) ** 2
    body = (yy >= h * 0.22) & (np.abs(xx - w / 2) <= w * 0.45)
    return head | body


def test_a_decoy_is_the_outline_filled_with_the_background_piece() -> None:
    outline = _figure()
    filling = np.zeros((10, 30, 3), np.uint8)
    filling[:, 15:] = 200  # left half dark, right half light, stretched to the outline's box
    image, mask = scenes.decoy(outline, filling)
    assert image.shape == (*outline.shape, 3) and mask is outline
    assert image[:, :10].max() < 50 and image[:, 14:].min() > 150


@pytest.mark.parametrize("seed", range(6))
def test_a_pasted_decoy_changes_the_photo_and_is_background(seed: int) -> None:
    canvas = np.full((200, 300, 3), 40, np.uint8)
    truth = np.zeros((200, 300), bool)
    truth[100:180, 20:280] = True  # a person the decoy may cover
    shape = _figure()
    image, merged = scenes.paste_people(canvas, truth, [(np.full((*shape.shape, 3), 255, np.uint8), shape)],
                                        np.random.default_rng(seed), person=False)
    covered = np.asarray(image)[..., 0] > 147
    assert covered.sum() > 0
    assert not (merged & covered).any()  # what the decoy covers is no longer anyone's
    assert np.array_equal(merged, truth & ~covered)


@pytest.mark.parametrize("seed", range(4))
def test_group_scene_with_decoys_labels_only_the_people(seed: int) -> None:
    rng = np.random.default_rng(seed)
    background = np.full((240, 320, 3), 40, np.uint8)
    person = (np.full((60, 24, 3), 250, np.uint8), _figure())
    fake = scenes.decoy(_figure(), np.full((8, 8, 3), 120, np.uint8))
    image, truth = scenes.group_scene(background, [person] * 3, rng, [fake] * 2)
    grey = np.abs(image[..., 0].astype(int) - 120) < 10
    assert grey.sum() > 20 and not (truth & grey).any()
    assert ((image[..., 0] > 185) == truth).mean() > 0.99


def test_people_behind_with_decoys_keeps_the_subject_whole() -> None:
    subject_mask = np.zeros((200, 200), bool)
    subject_mask[40:200, 60:140] = True
    photo = np.repeat(np.where(subject_mask[..., None], 250, 30).astype(np.uint8), 3, axis=2)
    fake = scenes.decoy(_figure(), np.full((8, 8, 3), 120, np.uint8))
    image, truth = scenes.people_behind((photo, subject_mask), [], np.random.default_rng(0), [fake] * 3)
    assert truth[subject_mask].all() and not truth[~subject_mask].any()
    inside = np.zeros_like(subject_mask)
    inside[44:200, 64:136] = True  # the subject's feathered edge may take a little of what is behind
    assert np.array_equal(image[inside], photo[inside])
    assert (np.abs(image[..., 0].astype(int) - 120) < 10).sum() > 20  # the decoys are there


def test_scenes_without_decoys_are_drawn_as_before(tiny_dataset: Path) -> None:
    """Decoys off draws nothing more, so the hard-case benchmark's scenes and seeded recipes stay as they were."""
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    background = np.full((120, 160, 3), 40, np.uint8)
    person = (np.full((60, 24, 3), 250, np.uint8), _figure())
    a = scenes.group_scene(background, [person] * 3, rng_a)
    b = scenes.paste_people(background, np.zeros((120, 160), bool), [person] * 3, rng_b)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


@pytest.mark.parametrize("seed", range(4))
def test_dataset_decoys_are_outlines_filled_with_background(tiny_dataset: Path, seed: int) -> None:
    ds = SegmentationDataset(find_pairs([tiny_dataset]), 64, group_prob=1.0, decoys=3)
    torch.manual_seed(seed)
    found = ds._decoys(5, np.random.default_rng(seed))
    assert 1 <= len(found) <= 3
    for image, outline in found:
        assert image.shape == (*outline.shape, 3) and outline.dtype == bool and outline.any()
        # The tiny set's people are bright ellipses on a dark background: the filling is the dark part.
        assert image.mean() < 120
    plain = SegmentationDataset(find_pairs([tiny_dataset]), 64, group_prob=1.0)
    assert plain._decoys(5, np.random.default_rng(0)) == []
    image, mask = ds.group(ds.load(5), 5)
    assert set(mask.unique().tolist()) <= {0, 1}
