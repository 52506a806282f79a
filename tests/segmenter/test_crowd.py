"""The crowd network: which first looks count as a group, and the Segmenter that hands those photos on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from segmenter import checkpoint, crowd
from segmenter.inference import Segmenter
from segmenter.preprocess import MEAN, STD
from tests.conftest import build_tiny_checkpoint


def blobs(boxes: list[tuple[int, int, int, int]], size: tuple[int, int] = (100, 80)) -> torch.Tensor:
    """A probability map (height, width) that is 1 in each (x0, y0, x1, y1) box."""
    prob = torch.zeros(size)
    for x0, y0, x1, y1 in boxes:
        prob[y0:y1, x0:x1] = 1.0
    return prob


def test_a_tall_person_is_not_a_group_and_three_people_are() -> None:
    portrait = blobs([(20, 10, 60, 100)])  # 90% of the height
    assert crowd.regions(portrait) == (1, pytest.approx(0.9))
    assert not crowd.is_group(portrait)
    three = blobs([(5, 20, 20, 90), (30, 20, 45, 90), (55, 20, 70, 90)])  # each 70% tall
    assert crowd.regions(three) == (3, pytest.approx(0.7))
    assert crowd.is_group(three)
    two = blobs([(5, 20, 30, 90), (45, 20, 70, 90)])  # two tall people: the main network's photo
    assert not crowd.is_group(two)
    # a full-length person whose map fell into three pieces (legs apart, a stray blob by the feet)
    pieces = blobs([(20, 2, 60, 60), (22, 60, 30, 98), (50, 62, 58, 98), (70, 90, 75, 95)])
    assert crowd.regions(pieces) == (3, pytest.approx(0.96)) and not crowd.is_group(pieces)


def test_small_people_and_an_empty_look_go_to_the_crowd_network() -> None:
    assert crowd.is_group(blobs([(30, 40, 45, 80)]))  # one person, 40% of the height
    assert crowd.is_group(torch.zeros(100, 80))  # nobody found: people may be too small for the first look


def test_specks_do_not_count_as_people() -> None:
    speckled = blobs([(20, 10, 60, 100), (2, 2, 4, 4), (70, 2, 72, 4)])  # a portrait and two 4-pixel specks
    assert crowd.regions(speckled)[0] == 1 and not crowd.is_group(speckled)


def test_modes_and_an_unknown_one() -> None:
    portrait, group = blobs([(20, 10, 60, 100)]), blobs([(30, 40, 45, 80)])
    assert [crowd.wants_crowd(portrait, m) for m in crowd.CROWD_MODES] == [False, False, True]
    assert [crowd.wants_crowd(group, m) for m in crowd.CROWD_MODES] == [False, True, True]
    with pytest.raises(ValueError, match="unknown crowd 'all'; expected one of: off, auto, on"):
        crowd.wants_crowd(group, "all")


class Bright(nn.Module):
    """A stand-in first network: person wherever the photo is bright."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, :1] * STD[0] + MEAN[0] - 0.5) * 40.0


class Everyone(nn.Module):
    """A stand-in crowd network that calls every pixel person, so its look is easy to tell apart."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x[:, :1], 10.0)


def photo(boxes: list[tuple[int, int, int, int]], size: tuple[int, int] = (160, 200)) -> Image.Image:
    arr = np.zeros((size[1], size[0], 3), np.uint8)
    for x0, y0, x1, y1 in boxes:
        arr[y0:y1, x0:x1] = 255
    return Image.fromarray(arr)


def test_the_segmenter_hands_only_groups_to_the_crowd_network() -> None:
    seg = Segmenter(Bright(), 96, "cpu", amp=False, crowd_model=Everyone())
    portrait = photo([(40, 10, 120, 195)])
    group = photo([(10, 120, 30, 170), (60, 120, 80, 170), (110, 120, 130, 170)])
    probs, sent = seg.looks([portrait, group])
    assert sent == [False, True]
    assert probs[0].max() > 0.99 and probs[0].min() < 0.01  # the first look, person and background
    assert probs[1].min() > 0.99  # the crowd network's look
    assert seg.looks([portrait, group], crowd="off")[1] == [False, False]
    on, sent_on = seg.looks([portrait, group], crowd="on")
    assert sent_on == [True, True] and on[0].min() > 0.99
    masks = seg.predict([portrait, group])  # the full-size masks follow the same looks
    assert masks[0].min() < 10 and masks[1].min() > 245
    with pytest.raises(ValueError, match="unknown crowd"):
        seg.looks([portrait], crowd="maybe")


def test_without_a_crowd_network_every_photo_keeps_the_first_look() -> None:
    seg = Segmenter(Bright(), 96, "cpu", amp=False)
    group = photo([(10, 120, 30, 170), (60, 120, 80, 170), (110, 120, 130, 170)])
    probs, sent = seg.looks([group], crowd="on")
    assert sent == [False] and probs[0].min() < 0.01


def test_the_shipped_crowd_network_comes_only_with_the_shipped_model(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    own = build_tiny_checkpoint(tmp_path / "own.pt")
    assert crowd.default_for(own) is None
    monkeypatch.setattr(crowd, "SHIPPED_CROWD", tmp_path / "missing.pt")
    assert crowd.default_for(checkpoint.SHIPPED_WEIGHTS) is None  # a checkout without it serves the main look
    assert crowd.present(tmp_path / "named.pt") == tmp_path / "named.pt"  # a named one must exist (load says)


def test_a_crowd_network_of_another_input_size_is_refused(tmp_path: Path) -> None:
    main = build_tiny_checkpoint(tmp_path / "main.pt")
    other = checkpoint.load(build_tiny_checkpoint(tmp_path / "other.pt", seed=1))
    other["config"] = {**other["config"], "image_size": other["config"].get("image_size", 256) + 32}
    checkpoint.save_atomic(other, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other\.pt: a crowd network needs the main network's image_size"):
        Segmenter.from_checkpoint(main, "cpu", crowd_path=tmp_path / "other.pt")
    seg = Segmenter.from_checkpoint(main, "cpu", crowd_path=build_tiny_checkpoint(tmp_path / "same.pt", seed=2))
    assert seg.crowd_model is not None


@pytest.mark.skipif(not crowd.SHIPPED_CROWD.is_file(), reason="no shipped crowd network in this checkout")
def test_the_shipped_model_comes_with_its_crowd_network() -> None:
    assert Segmenter.from_checkpoint(device="cpu").crowd_model is not None


def test_the_largest_region_is_the_main_person() -> None:
    prob = blobs([(20, 10, 60, 100), (70, 5, 78, 15)])
    main = crowd.largest_region(prob)
    assert main.sum() == 40 * 90 and main[50, 40] and not main[10, 74]
    assert not crowd.largest_region(torch.zeros(100, 80)).any()
