"""Choose who stays: keep only the people a user pointed at, drop the others from the mask.

A mask says "person" for everyone in the photo; a user who wants one person out of a group points at
them. A *person* here is a connected region of the mask (threshold 0.5, 8-connected): people who touch
form one region, and one region is kept or dropped as a whole. Each point keeps the region that contains
it, or the region nearest to it (the distance from the point to the region's nearest pixel).

The regions are found at a reduced resolution (``WORK_SIDE``), which keeps the labelling a few
milliseconds at camera sizes and bridges the one-pixel cracks a full-size mask can have. Two rules keep the
kept person whole and soft:

- *fragments*, regions smaller than ``FRAGMENT_FRACTION`` of the photo (a detached hand, a speckle), go
  with the nearest region within ``FRAGMENT_REACH`` of them, so keeping a person keeps their loose pieces;
- every pixel within ``FRAGMENT_REACH`` of a kept region is kept, so the feathered edge around it, which
  lies below the 0.5 threshold, survives; where two people nearly touch, the pixels between them go to
  whichever region is nearer.

People who touch are split where the network tells them apart: given its probability map (``certainty``),
each region's near-certain cores (at least ``CORE_LEVEL``), each at least ``CORE_SHARE`` of the region, are
its people, and the rest of the region goes to the nearest core within it. The network is near-certain
inside each body and less so where two bodies meet; one body is one core (an arm or a head less certain
than the trunk is too small a core to count).

Only the kept pixels of the soft mask are left as they were: the rest becomes 0. Numpy, and torch only to
read the network's map (no scipy: it is not a dependency of the server).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from segmenter.refine import resize_map

Point = tuple[float, float]  # x, y in the photo's pixels (after its EXIF orientation)

WORK_SIDE = 512  # regions are found on a copy whose longer side is at most this many pixels
THRESHOLD = 128  # a mask value at or above this (0.5 of 255) is person
FRAGMENT_FRACTION = 0.001  # regions under this share of the photo's area are pieces, not people
FRAGMENT_REACH = 0.02  # as a share of the working copy's diagonal: how far a piece or an edge may lie
# Splitting touching people (docs/BENCHMARKS.md, "Choosing who stays"): a core is where the network's
# probability is at least CORE_LEVEL; a region with two or more cores of CORE_SHARE of its area is cut.
CORE_LEVEL = 253 / 255
CORE_SHARE = 0.25


def label(binary: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected regions of a boolean map: an int32 map of labels 1..n (0 outside), and n.

    Union-find over the runs of each row: a person mask has a few runs per row, so a working-size map has
    a few thousand runs and the Python loop over them is short; the runs are found and painted with numpy.
    """
    h, w = binary.shape
    padded = np.zeros((h, w + 2), np.int8)
    padded[:, 1:-1] = binary
    steps = np.diff(padded, axis=1)
    rows, starts = np.nonzero(steps == 1)  # row-major order, so starts and ends pair up
    _, ends = np.nonzero(steps == -1)  # exclusive
    n = len(rows)
    if n == 0:
        return np.zeros((h, w), np.int32), 0
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first = np.searchsorted(rows, np.arange(h + 1)).tolist()
    s, e = starts.tolist(), ends.tolist()
    for y in range(1, h):
        i, i_end, j, j_end = first[y - 1], first[y], first[y], first[y + 1]
        while i < i_end and j < j_end:
            if s[j] <= e[i] and s[i] <= e[j]:  # overlap or diagonal touch (8-connected)
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
            if e[i] < e[j]:
                i += 1
            else:
                j += 1
    roots = np.array([find(i) for i in range(n)])
    _, run_label = np.unique(roots, return_inverse=True)
    run_label = run_label.astype(np.int32) + 1
    # paint: +label at each run's start, -label at its end, then a running sum along the row
    marks = np.zeros((h, w + 1), np.int32)
    np.add.at(marks, (rows, starts), run_label)
    np.add.at(marks, (rows, ends), -run_label)
    return np.cumsum(marks, axis=1)[:, :w], int(run_label.max())


def _work_copy(mask: np.ndarray, side: int) -> np.ndarray:
    """The mask averaged down so its longer side is at most ``side`` (area average, then threshold)."""
    h, w = mask.shape
    scale = min(1.0, side / max(h, w))
    if scale == 1.0:
        return mask >= THRESHOLD
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.BOX)) >= THRESHOLD


def _grow(owner: np.ndarray, steps: int, within: np.ndarray | None = None) -> np.ndarray:
    """Each unlabelled pixel takes the label of the nearest labelled one within ``steps`` (chessboard
    distance; ties go to the higher label); with ``within``, only those pixels take one, and the distance
    is measured inside them (a label does not jump a gap)."""
    t = owner.astype(np.int32)
    for _ in range(steps):
        padded = np.pad(t, 1)
        h, w = t.shape
        grown = t.copy()
        for dy in range(3):
            for dx in range(3):
                np.maximum(grown, padded[dy:dy + h, dx:dx + w], out=grown)
        grown = np.where(t > 0, t, grown)
        if within is not None:
            grown[(t == 0) & ~within] = 0
        if np.array_equal(grown, t):
            break
        t = grown
    return t


def split_touching(labels: np.ndarray, n: int, certainty: np.ndarray) -> tuple[np.ndarray, int]:
    """``labels`` (n regions) with every region that holds two or more near-certain cores cut between
    them: each core keeps the region's pixels nearest to it (inside the region), as a label of its own.

    ``certainty`` is the network's probability at the labels' size, float in [0, 1].
    """
    cores, m = label((labels > 0) & (certainty >= CORE_LEVEL))
    if m < 2:
        return labels, n
    core_area = np.bincount(cores.ravel(), minlength=m + 1)
    region_of = np.zeros(m + 1, np.int64)
    region_of[cores[cores > 0]] = labels[cores > 0]  # a core lies inside one region
    region_area = np.bincount(labels.ravel(), minlength=n + 1)
    big = np.flatnonzero((core_area >= CORE_SHARE * region_area[region_of]) & (np.arange(m + 1) > 0))
    per_region = np.bincount(region_of[big], minlength=n + 1)
    split = np.flatnonzero(per_region >= 2)
    if split.size == 0:
        return labels, n
    seeds = np.zeros_like(labels)
    count = n
    for r in split:
        for k, core in enumerate(big[region_of[big] == r]):
            if k == 0:
                seeds[cores == core] = r
            else:
                count += 1
                seeds[cores == core] = count
    cut = np.isin(labels, split)
    owner = _grow(seeds, max(labels.shape), within=cut)
    return np.where(cut & (owner > 0), owner, labels).astype(labels.dtype), count


def _certainty_at(certainty: np.ndarray | torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """The network's probability map resized (bilinear, as the mask's upsampling does) to ``size`` (width,
    height), float32."""
    values = torch.as_tensor(certainty, dtype=torch.float32).cpu()
    if values.shape[::-1] == size:
        return values.numpy()
    return resize_map(values, size[::-1]).numpy()


def _nearest_label(labels: np.ndarray, allowed: np.ndarray, x: float, y: float) -> int:
    """The label among ``allowed`` whose nearest pixel is nearest to (x, y) (working pixels), or 0."""
    ys, xs = np.nonzero(np.isin(labels, allowed))
    if ys.size == 0:
        return 0
    d = (xs - x) ** 2 + (ys - y) ** 2
    return int(labels[ys[d.argmin()], xs[d.argmin()]])


def kept_regions(mask: np.ndarray, points: Sequence[Point], side: int = WORK_SIDE,
                 certainty: np.ndarray | torch.Tensor | None = None) -> np.ndarray:
    """A boolean map at the mask's size: True where the pixel belongs to a person a point chose.

    ``mask`` is HxW uint8 (255 = person); points are (x, y) in its pixels and must lie inside it.
    ``certainty``, the network's probability map at any size, lets touching people be told apart.
    """
    h, w = mask.shape
    binary = _work_copy(mask, side)
    wh, ww = binary.shape
    labels, n = label(binary)
    if n == 0:
        return np.zeros((h, w), bool)
    if certainty is not None:
        labels, n = split_touching(labels, n, _certainty_at(certainty, (ww, wh)))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    whole = np.flatnonzero(sizes >= FRAGMENT_FRACTION * wh * ww)
    whole = whole[whole > 0]
    if whole.size == 0:  # only small pieces: each counts as a person
        whole = np.arange(1, n + 1)
    reach = max(2, round(FRAGMENT_REACH * float(np.hypot(wh, ww))))
    owner = _grow(np.where(np.isin(labels, whole), labels, 0), reach)

    whole_set = set(whole.tolist())
    chosen: set[int] = set()
    pieces: set[int] = set()  # pieces a point lies in: kept by themselves
    sx, sy = ww / w, wh / h
    for x, y in points:
        wx, wy = min(ww - 1, int(x * sx)), min(wh - 1, int(y * sy))
        inside = int(labels[wy, wx])
        if inside in whole_set:
            chosen.add(inside)
        elif inside:
            pieces.add(inside)
        else:
            chosen.add(_nearest_label(labels, whole, (x + 0.5) * sx - 0.5, (y + 0.5) * sy - 0.5))
    keep = np.isin(owner, sorted(chosen))
    if pieces:
        keep |= _grow(np.where(np.isin(labels, sorted(pieces)), 1, 0), reach) > 0
    return _full_size(keep, h, w)


def _full_size(small: np.ndarray, h: int, w: int) -> np.ndarray:
    """A working-size map back at h x w, each pixel from its nearest working pixel."""
    wh, ww = small.shape
    if (wh, ww) == (h, w):
        return small
    rows = np.minimum((np.arange(h) + 0.5) * (wh / h), wh - 1).astype(np.intp)
    cols = np.minimum((np.arange(w) + 0.5) * (ww / w), ww - 1).astype(np.intp)
    return small[rows][:, cols]


def _drop_their_outline(keep: np.ndarray, trimmed: np.ndarray, others: np.ndarray, candidates: np.ndarray,
                        side: int = WORK_SIDE) -> None:
    """Clear from ``keep`` the ``candidates`` (soft pixels no one was chosen at) that lie within reach
    (``FRAGMENT_REACH``) of ``others``, the people cut off, and nearer to them than to anyone left in
    ``trimmed``: the soft outline of someone who was left out. Nearness is measured at the working size,
    and only the candidates are looked up at full size."""
    ys, xs = np.nonzero(candidates)
    if ys.size == 0:
        return
    h, w = trimmed.shape
    left_in = _work_copy(trimmed, side)
    cut_off = _work_copy(np.where(others, np.uint8(255), np.uint8(0)), side)
    wh, ww = left_in.shape
    reach = max(2, round(FRAGMENT_REACH * float(np.hypot(wh, ww))))
    owner = _grow(np.where(left_in, 1, np.where(cut_off, 2, 0)), reach)
    theirs = _grow((owner == 2).astype(np.int32), 1) > 0  # the border between the zones is a working pixel wide
    rows = np.minimum(((ys + 0.5) * (wh / h)).astype(np.intp), wh - 1)
    cols = np.minimum(((xs + 0.5) * (ww / w)).astype(np.intp), ww - 1)
    hit = theirs[rows, cols]
    keep[ys[hit], xs[hit]] = False


def inside_point(mask: np.ndarray) -> tuple[int, int]:
    """The mask's own pixel nearest to its centroid: where a user clicks on a person. The centroid itself may
    lie outside a person (an arm on a hip, someone bending), so the nearest pixel inside is taken."""
    ys, xs = np.nonzero(mask)
    k = int(((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2).argmin())
    return int(xs[k]), int(ys[k])


def _check_points(mask: np.ndarray, points: Sequence[Point]) -> None:
    """Every point must lie in the mask: the server checks them against the photo first, so one outside is
    a caller's bug, not a user's."""
    for x, y in points:
        if not (0 <= x < mask.shape[1] and 0 <= y < mask.shape[0]):
            raise ValueError(f"point ({x:g}, {y:g}) is outside the {mask.shape[1]}x{mask.shape[0]} mask")


def keep_people(mask: np.ndarray, points: Sequence[Point],
                certainty: np.ndarray | torch.Tensor | None = None) -> np.ndarray:
    """``mask`` with every person no point chose set to 0; the chosen ones keep their soft edge.

    No points: the mask as it is (everyone stays). With ``certainty`` (the network's probability map),
    people who touch are told apart (``split_touching``); without it a region is one person.
    """
    if not points:
        return mask
    _check_points(mask, points)
    return np.where(kept_regions(mask, points, certainty=certainty), mask, 0).astype(np.uint8)


def keep_chosen(mask: np.ndarray, points: Sequence[Point], choices: Sequence[np.ndarray],
                certainty: np.ndarray | torch.Tensor | None = None, level: float = 0.5) -> np.ndarray:
    """``keep_people`` told which pixels each point's person covers: ``choices`` holds, per point, a click
    network's probability at the mask's size (``segmenter.chooser``).

    For each point, the mask's person pixels the network gives to someone else (below ``level``) leave the
    mask, with the soft outline nearer to them than to the kept person, and the region rules run on what is
    left: they keep the person under the point with their soft edge and drop the network's stray pieces.
    So a person standing in front of another, one region for the mask, comes out alone. A point whose
    person the network does not see (it gives no person pixel of the mask) keeps by the region rules
    alone, as ``keep_people`` would.
    """
    if not points:
        return mask
    if len(choices) != len(points):
        raise ValueError(f"{len(points)} points but {len(choices)} choices")
    _check_points(mask, points)
    person = mask >= THRESHOLD
    out: np.ndarray | None = None
    for point, choice in zip(points, choices, strict=True):
        if choice.shape != mask.shape:
            raise ValueError(f"a choice is {choice.shape[1]}x{choice.shape[0]}, "
                             f"the mask {mask.shape[1]}x{mask.shape[0]}")
        below = choice < level
        others = person & below
        if (person & ~below).any():
            trimmed = np.where(others, np.uint8(0), mask)
        else:  # the network sees no one here: the regions alone
            trimmed, others = mask, None
        keep = kept_regions(trimmed, [point], certainty=certainty)
        if others is not None and others.any():  # the outline of whoever was cut off goes with them
            soft = keep & below & ~person
            soft &= mask > 0
            _drop_their_outline(keep, trimmed, others, soft)
        kept = np.where(keep, trimmed, np.uint8(0))
        out = kept if out is None else np.maximum(out, kept, out=out)
    assert out is not None
    return out


def regions_at_threshold(mask: np.ndarray, side: int = WORK_SIDE) -> tuple[np.ndarray, int]:
    """The working-size labels of a mask and their count: what ``keep_people`` calls people."""
    return label(_work_copy(mask, side))
