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

Only the kept pixels of the soft mask are left as they were: the rest becomes 0. Numpy only (no scipy: it
is not a dependency of the server).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

Point = tuple[float, float]  # x, y in the photo's pixels (after its EXIF orientation)

WORK_SIDE = 512  # regions are found on a copy whose longer side is at most this many pixels
THRESHOLD = 128  # a mask value at or above this (0.5 of 255) is person
FRAGMENT_FRACTION = 0.001  # regions under this share of the photo's area are pieces, not people
FRAGMENT_REACH = 0.02  # as a share of the working copy's diagonal: how far a piece or an edge may lie


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


def _grow(owner: np.ndarray, steps: int) -> np.ndarray:
    """Each unlabelled pixel takes the label of the nearest labelled one within ``steps`` (chessboard
    distance; ties go to the higher label)."""
    t = owner.astype(np.int32)
    for _ in range(steps):
        padded = np.pad(t, 1)
        h, w = t.shape
        grown = t.copy()
        for dy in range(3):
            for dx in range(3):
                np.maximum(grown, padded[dy:dy + h, dx:dx + w], out=grown)
        grown = np.where(t > 0, t, grown)
        if np.array_equal(grown, t):
            break
        t = grown
    return t


def _nearest_label(labels: np.ndarray, allowed: np.ndarray, x: float, y: float) -> int:
    """The label among ``allowed`` whose nearest pixel is nearest to (x, y) (working pixels), or 0."""
    ys, xs = np.nonzero(np.isin(labels, allowed))
    if ys.size == 0:
        return 0
    d = (xs - x) ** 2 + (ys - y) ** 2
    return int(labels[ys[d.argmin()], xs[d.argmin()]])


def kept_regions(mask: np.ndarray, points: Sequence[Point], side: int = WORK_SIDE) -> np.ndarray:
    """A boolean map at the mask's size: True where the pixel belongs to a person a point chose.

    ``mask`` is HxW uint8 (255 = person); points are (x, y) in its pixels and must lie inside it.
    """
    h, w = mask.shape
    binary = _work_copy(mask, side)
    wh, ww = binary.shape
    labels, n = label(binary)
    if n == 0:
        return np.zeros((h, w), bool)
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
    if (wh, ww) == (h, w):
        return keep
    rows = np.minimum((np.arange(h) + 0.5) * sy, wh - 1).astype(np.intp)  # nearest working pixel
    cols = np.minimum((np.arange(w) + 0.5) * sx, ww - 1).astype(np.intp)
    return keep[rows][:, cols]


def keep_people(mask: np.ndarray, points: Sequence[Point]) -> np.ndarray:
    """``mask`` with every person no point chose set to 0; the chosen ones keep their soft edge.

    No points: the mask as it is (everyone stays).
    """
    if not points:
        return mask
    for x, y in points:
        if not (0 <= x < mask.shape[1] and 0 <= y < mask.shape[0]):
            raise ValueError(f"point ({x:g}, {y:g}) is outside the {mask.shape[1]}x{mask.shape[0]} mask")
    return np.where(kept_regions(mask, points), mask, 0).astype(np.uint8)


def regions_at_threshold(mask: np.ndarray, side: int = WORK_SIDE) -> tuple[np.ndarray, int]:
    """The working-size labels of a mask and their count: what ``keep_people`` calls people."""
    return label(_work_copy(mask, side))
