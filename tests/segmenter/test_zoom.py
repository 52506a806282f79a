"""The zoom pass: tiles that cover the photo, the trigger, and the merge that adds what the tiles find."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch
from PIL import Image

from segmenter import zoom
from segmenter.inference import Segmenter
from segmenter.model import UNet


@pytest.mark.parametrize("size", [(640, 480), (101, 999), (17, 23)])
def test_tiles_cover_the_photo_and_overlap(size: tuple[int, int]) -> None:
    w, h = size
    covered = np.zeros((h, w), int)
    boxes = zoom.tile_boxes(w, h)
    assert len(boxes) == zoom.GRID ** 2
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        covered[y0:y1, x0:x1] += 1
    assert covered.min() >= 1 and covered.max() >= 2  # every pixel seen, neighbours share a band


def test_person_height_is_the_share_of_rows_with_a_confident_person() -> None:
    prob = torch.zeros(100, 80)
    prob[10:40, 5:10] = 0.9
    prob[60:65, 50:60] = 0.4  # unsure: not counted
    assert zoom.person_height(prob) == pytest.approx(0.30)
    assert zoom.wants_zoom(prob, "auto") and not zoom.wants_zoom(prob, "off") and zoom.wants_zoom(prob, "on")
    prob[:, 40] = 0.8  # a person from top to bottom: a portrait keeps today's single pass
    assert not zoom.wants_zoom(prob, "auto")


def test_unknown_zoom_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown zoom 'maybe'"):
        zoom.wants_zoom(torch.zeros(4, 4), "maybe")


def test_merge_adds_a_person_only_the_tiles_found() -> None:
    """A fake forward pass (a unit test beside the real one below): the first pass saw nothing, a tile
    finds a bright square; the merged map marks it where the photo has it, at twice the resolution."""
    arr = np.full((200, 300, 3), 20, np.uint8)
    arr[120:160, 200:230] = 240
    photo = Image.fromarray(arr)

    def bright(tiles: Sequence[Image.Image]) -> list[torch.Tensor]:
        out = []
        for tile in tiles:
            small = tile.resize((max(1, tile.width // 4), max(1, tile.height // 4)))
            out.append(torch.from_numpy((np.asarray(small)[..., 0] > 128).astype(np.float32)))
        return out

    first = torch.zeros(50, 75)
    merged = zoom.zoomed(photo, first, bright)
    assert merged.shape == (100, 150)
    square = merged[60:80, 100:115]
    assert square.mean() > 0.8 and merged[:40].max() < 0.2
    # The merge never loses what the first pass was sure of.
    first[0:10, 0:10] = 1.0
    assert zoom.zoomed(photo, first, bright)[0:18, 0:18].min() > 0.99


def test_segmenter_zoom_modes_give_full_size_masks() -> None:
    torch.manual_seed(0)
    seg = Segmenter(UNet(base_filters=4), image_size=64, amp=False)
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 130, 3), dtype=np.uint8))
    for mode in zoom.ZOOM_MODES:
        mask = seg.predict_one(photo, zoom=mode)
        assert mask.shape == (90, 130) and mask.dtype == np.uint8
    with pytest.raises(ValueError, match="unknown zoom"):
        seg.predict_one(photo, zoom="2x")


def test_shipped_model_finds_more_of_a_small_group_with_zoom() -> None:
    """The real network on a scene of small people pasted on a plain wall: the closer look finds more."""
    from training import scenes

    astronaut = Image.open(__file__.rsplit("/", 2)[0] + "/gimp/data/astronaut.jpg").convert("RGB")
    seg = Segmenter.from_checkpoint(device="cpu")
    person = np.asarray(astronaut)
    mask = seg.predict_one(astronaut) >= 128
    cut = scenes.cut_out(person, mask)
    assert cut is not None
    rng = np.random.default_rng(4)
    wall = np.full((900, 1400, 3), (128, 120, 110), np.uint8)
    photo, truth = scenes.paste_people(wall, np.zeros((900, 1400), bool), [cut] * 5, rng, (0.08, 0.12))
    image = Image.fromarray(photo)

    def iou(m: np.ndarray) -> float:
        return float((m & truth).sum() / max(1, (m | truth).sum()))

    off = iou(seg.predict_one(image, zoom="off") >= 128)
    on = iou(seg.predict_one(image, zoom="on") >= 128)
    assert zoom.wants_zoom(seg.predict_lowres([image])[0], "auto")
    assert on > off, (on, off)
