"""Choose who stays: the people (regions of the mask) a point keeps, and what happens to the rest."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from PIL import Image, ImageFilter

from segmenter import people


def _flood_labels(binary: np.ndarray) -> int:
    """The number of 8-connected regions, by a plain flood fill (the reference for ``people.label``)."""
    h, w = binary.shape
    seen = np.zeros_like(binary)
    count = 0
    for y0, x0 in zip(*np.nonzero(binary), strict=True):
        if seen[y0, x0]:
            continue
        count += 1
        todo = deque([(y0, x0)])
        seen[y0, x0] = True
        while todo:
            y, x = todo.popleft()
            for ny in range(max(0, y - 1), min(h, y + 2)):
                for nx in range(max(0, x - 1), min(w, x + 2)):
                    if binary[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        todo.append((ny, nx))
    return count


@pytest.mark.parametrize("seed", range(6))
def test_labels_match_a_flood_fill(seed: int) -> None:
    rng = np.random.default_rng(seed)
    binary = rng.random((37, 53)) < rng.uniform(0.2, 0.6)
    labels, n = people.label(binary)
    assert n == _flood_labels(binary)
    assert (labels[~binary] == 0).all() and (labels[binary] > 0).all()
    # one label per region: as many distinct (label, flood region) pairs as regions
    assert len(np.unique(labels[binary])) == n


def test_diagonal_neighbours_are_one_region() -> None:
    binary = np.zeros((5, 5), bool)
    binary[0, 0] = binary[1, 1] = binary[2, 2] = True
    binary[4, 0] = True
    assert people.label(binary)[1] == 2


def _two_people(h: int = 600, w: int = 800, gap: int = 0) -> np.ndarray:
    """A soft mask of two upright ellipses, left and right; ``gap`` < 0 makes them overlap."""
    yy, xx = np.mgrid[:h, :w]
    left = ((xx - w * 0.3) / (w * 0.15)) ** 2 + ((yy - h * 0.55) / (h * 0.4)) ** 2 < 1
    right = ((xx - w * 0.7 + gap) / (w * 0.12)) ** 2 + ((yy - h * 0.6) / (h * 0.35)) ** 2 < 1
    hard = ((left | right) * 255).astype(np.uint8)
    return np.array(Image.fromarray(hard).filter(ImageFilter.GaussianBlur(2)))


def test_a_point_inside_keeps_that_person_and_drops_the_other() -> None:
    mask = _two_people()
    kept = people.keep_people(mask, [(240, 330)])
    assert np.array_equal(kept[:, :400], mask[:, :400])  # the left person whole, soft edge and all
    assert kept[:, 450:].max() == 0
    assert ((kept[:, :400] > 0) & (kept[:, :400] < 255)).sum() > 500  # its feathered edge is still soft
    right = people.keep_people(mask, [(560, 360)])
    assert right[:, :400].max() == 0 and np.array_equal(right[:, 450:], mask[:, 450:])


def test_a_point_between_people_keeps_the_nearest() -> None:
    mask = _two_people()
    near_right = people.keep_people(mask, [(440, 330)])  # in the gap, nearer the right person
    assert near_right[:, :400].max() == 0 and near_right[:, 450:].max() == 255


def test_two_points_keep_two_people_and_no_point_keeps_everyone() -> None:
    mask = _two_people()
    assert np.array_equal(people.keep_people(mask, [(240, 330), (560, 360)]), mask)
    assert people.keep_people(mask, []) is mask


def test_people_who_touch_are_one_region() -> None:
    mask = _two_people(gap=120)  # the right ellipse moved left until they overlap
    _, n = people.regions_at_threshold(mask)
    assert n == 1
    assert np.array_equal(people.keep_people(mask, [(240, 330)]), mask)


def _certainty(h: int, w: int, gap: int, dip: float) -> np.ndarray:
    """A network-like probability map at a tenth of the size: near 1 inside each ellipse of ``_two_people``,
    ``dip`` where the two meet (they overlap between x = 344 and 360)."""
    small = people._certainty_at(_two_people(h, w, gap).astype(np.float32) / 255, (w // 10, h // 10))
    prob = np.where(small > 0.5, 0.999, small).astype(np.float32)
    prob[:, 34:37] = np.minimum(prob[:, 34:37], dip)  # the seam, x = 340 to 370
    return prob


def test_the_network_tells_touching_people_apart() -> None:
    """Given the network's map, one point keeps one of two people who touch: each body is a near-certain
    core, the seam between them is not, and the seam's pixels go to the nearer body."""
    mask = _two_people(gap=120)
    left = (240, 330)
    kept = people.keep_people(mask, [left], _certainty(600, 800, 120, 0.9))
    assert np.array_equal(kept[:, :330], mask[:, :330])  # the left person whole
    assert kept[:, 380:].max() == 0  # the right one dropped
    right = people.keep_people(mask, [(480, 360)], _certainty(600, 800, 120, 0.9))
    assert right[:, :330].max() == 0 and np.array_equal(right[:, 380:], mask[:, 380:])
    # certain all through the seam: one region, as without the map
    assert np.array_equal(people.keep_people(mask, [left], _certainty(600, 800, 120, 0.999)), mask)


def test_a_small_certain_part_does_not_split_a_person() -> None:
    """A core below CORE_SHARE of its region (a hand, a head less certain at the neck) stays with its body."""
    mask = _two_people()[:, :400]  # one person
    prob = people._certainty_at(mask.astype(np.float32) / 255, (40, 60))
    prob = np.where(prob > 0.5, 0.999, prob).astype(np.float32)
    prob[18:20, :] = np.minimum(prob[18:20, :], 0.9)  # a less certain neck: a small head core above it
    labels, n = people.label(mask >= 128)
    split, m = people.split_touching(labels, n, people._certainty_at(prob, mask.shape[::-1]))
    assert m == n == 1 and np.array_equal(split, labels)
    assert np.array_equal(people.keep_people(mask, [(120, 400)], prob), mask)


def test_a_loose_piece_goes_with_the_nearest_person() -> None:
    mask = _two_people()
    mask[300:306, 155:158] = 255  # a small piece just left of the left person (a detached hand)
    kept = people.keep_people(mask, [(240, 330)])
    assert kept[300:306, 155:158].min() == 255
    dropped = people.keep_people(mask, [(560, 360)])
    assert dropped[300:306, 155:158].max() == 0


def test_a_point_outside_the_mask_is_an_error() -> None:
    with pytest.raises(ValueError, match="outside the 800x600 mask"):
        people.keep_people(_two_people(), [(800, 10)])


def test_an_empty_mask_stays_empty() -> None:
    empty = np.zeros((50, 60), np.uint8)
    assert people.keep_people(empty, [(5, 5)]).max() == 0


def test_camera_sized_masks_map_back_to_full_resolution() -> None:
    mask = _two_people(3000, 4000)
    kept = people.keep_people(mask, [(1200, 1650)])
    assert kept.shape == mask.shape
    assert np.array_equal(kept[:, :2000], mask[:, :2000]) and kept[:, 2300:].max() == 0


# --- keep_chosen: a click network says which pixels are the clicked person's --------------------------

def _choice(mask: np.ndarray, x0: int, x1: int) -> np.ndarray:
    """A click network's answer: probability 0.9 on columns x0..x1 of the person, 0.05 elsewhere."""
    choice = np.full(mask.shape, 0.05, np.float32)
    choice[:, x0:x1] = 0.9
    return choice


def test_the_chosen_person_comes_out_of_a_region_the_mask_cannot_split() -> None:
    mask = _two_people(gap=120)  # one region: keep_people keeps both whatever the point
    left = people.keep_chosen(mask, [(240, 330)], [_choice(mask, 0, 352)])
    assert left[:, 360:].max() == 0 and np.array_equal(left[:, :300], mask[:, :300])
    right = people.keep_chosen(mask, [(560, 360)], [_choice(mask, 352, 800)])
    assert right[:, :340].max() == 0 and right[:, 400:].max() == 255
    both = people.keep_chosen(mask, [(240, 330), (560, 360)], [_choice(mask, 0, 352), _choice(mask, 352, 800)])
    assert both[:, :300].max() == 255 and both[:, 400:].max() == 255


def test_the_chosen_persons_soft_edge_stays_and_stray_pieces_go() -> None:
    mask = _two_people()
    choice = _choice(mask, 0, 400)
    choice[20:40, 600:620] = 0.9  # a stray piece of the network's answer on the other person
    kept = people.keep_chosen(mask, [(240, 330)], [choice])
    assert np.array_equal(kept[:, :400], mask[:, :400])  # the left person whole, feathered edge included
    assert ((kept > 0) & (kept < 255)).sum() > 500
    assert kept[:, 450:].max() == 0


def test_a_point_the_network_gives_nobody_keeps_by_the_regions() -> None:
    mask = _two_people()
    nobody = np.zeros(mask.shape, np.float32)
    assert np.array_equal(people.keep_chosen(mask, [(240, 330)], [nobody]), people.keep_people(mask, [(240, 330)]))
    assert people.keep_chosen(mask, [], []) is mask


def test_keep_chosen_refuses_what_does_not_fit() -> None:
    mask = _two_people()
    with pytest.raises(ValueError, match="2 points but 1 choices"):
        people.keep_chosen(mask, [(1, 1), (2, 2)], [_choice(mask, 0, 10)])
    with pytest.raises(ValueError, match="outside the 800x600 mask"):
        people.keep_chosen(mask, [(800, 1)], [_choice(mask, 0, 10)])
    with pytest.raises(ValueError, match="a choice is 10x600"):
        people.keep_chosen(mask, [(1, 1)], [np.zeros((600, 10), np.float32)])
