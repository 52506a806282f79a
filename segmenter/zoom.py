"""A second, closer look for photos whose people are small: overlapping tiles at the model's input size.

At the served input size a person a tenth of the photo's height is a few dozen pixels tall, and the network
misses such people rather than blurring them. The zoom pass runs the network again on a grid of overlapping
tiles of the photo, each at the full input size (so twice the resolution for a 2 x 2 grid), blends the
tiles into one probability map and merges it with the first pass's.

It costs a tile batch (four forward passes for 2 x 2), so ``"auto"`` spends it only where the first pass
suggests small people: when no person in it is tall, or when it holds several people. What each mode
gains and loses per hard case is measured by ``benchmarks/tuning/zoom_quality.py`` (docs/BENCHMARKS.md, "Zoom pass").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from segmenter.people import label

ZOOM_MODES = ("off", "auto", "on")
# What the server and evaluate.py use unless told otherwise. "off": on the validation sets and their hard cases
# the closer look gains on scenes of small people and loses about as much on large ones, partly by finding
# bystanders the truth masks leave unlabelled (docs/research/zoom-pass.md).
DEFAULT_ZOOM = "off"
GRID = 2  # tiles per side
OVERLAP = 0.25  # share of a tile's side that it shares with its neighbour
# "auto" looks again when the first pass's tallest person (a connected region of confident pixels, its height
# as a share of the photo's) is below AUTO_MAX_HEIGHT, or when it holds AUTO_MIN_PEOPLE people or more: a group,
# where the people behind the first are the ones missed. Regions under FRAGMENT_AREA of the map are pieces
# (a hand, a speckle), not people.
AUTO_MAX_HEIGHT = 0.75
AUTO_MIN_PEOPLE = 2
FRAGMENT_AREA = 0.002
CONFIDENT = 0.5
# In the merge, a person the first pass saw at least this tall keeps the first pass's map (the tiles cut it
# and see it without its context); elsewhere the tiles may add what they find. docs/research/zoom-pass.md.
KEEP_FIRST_HEIGHT = 0.5
# ... and so does a margin around them, as a share of the map's longer side (their soft edge).
KEEP_FIRST_MARGIN = 0.02

Box = tuple[int, int, int, int]  # left, top, right, bottom in photo pixels


def tile_boxes(width: int, height: int, grid: int = GRID, overlap: float = OVERLAP) -> list[Box]:
    """``grid`` x ``grid`` tiles covering the photo, neighbours sharing ``overlap`` of a tile's side."""
    def spans(n: int) -> list[tuple[int, int]]:
        side = n / (grid - (grid - 1) * overlap)
        step = side * (1 - overlap)
        return [(round(i * step), min(n, round(i * step + side))) for i in range(grid)]
    return [(x0, y0, x1, y1) for y0, y1 in spans(height) for x0, x1 in spans(width)]


def people(prob: torch.Tensor, confident: float = CONFIDENT) -> tuple[np.ndarray, list[float]]:
    """The first pass's people: a label map of its confident regions (0 outside, fragments dropped) and
    each region's height as a share of the map's, in label order."""
    labels, n = label((prob >= confident).numpy())
    if n == 0:
        return labels, []
    h = labels.shape[0]
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    rows = np.nonzero(labels)[0]
    ids = labels[labels > 0]
    top = np.full(n + 1, h)
    bottom = np.full(n + 1, -1)
    np.minimum.at(top, ids, rows)
    np.maximum.at(bottom, ids, rows)
    keep = areas >= FRAGMENT_AREA * labels.size
    keep[0] = False
    renumber = np.zeros(n + 1, np.int32)
    renumber[keep] = np.arange(1, int(keep.sum()) + 1)
    heights = ((bottom[keep] - top[keep] + 1) / h).tolist()
    return renumber[labels], heights


def person_height(prob: torch.Tensor, confident: float = CONFIDENT) -> float:
    """The tallest person's height as a share of the map's: near 1 for a portrait, small for far people."""
    return max(people(prob, confident)[1], default=0.0)


def wants_zoom(prob: torch.Tensor, mode: str, max_height: float = AUTO_MAX_HEIGHT,
               min_people: int = AUTO_MIN_PEOPLE) -> bool:
    if mode not in ZOOM_MODES:
        raise ValueError(f"unknown zoom {mode!r}; expected one of: {', '.join(ZOOM_MODES)}")
    if mode != "auto":
        return mode == "on"
    heights = people(prob)[1]
    return max(heights, default=0.0) < max_height or len(heights) >= min_people


def _first_keeps(first: torch.Tensor, size: tuple[int, int], height: float) -> torch.Tensor:
    """Where the merge keeps the first pass: its people at least ``height`` tall and a margin around them."""
    labels, heights = people(first)
    tall = np.flatnonzero(np.asarray(heights) >= height) + 1
    keep = torch.from_numpy(np.isin(labels, tall).astype(np.float32))
    r = max(1, round(KEEP_FIRST_MARGIN * max(first.shape)))
    keep = F.max_pool2d(keep[None, None], 2 * r + 1, stride=1, padding=r)
    return F.interpolate(keep, size=size, mode="nearest")[0, 0] > 0


def _window(h: int, w: int) -> torch.Tensor:
    """Blending weights that fall off towards a tile's edges, where the network sees the least context."""
    wy = torch.minimum(torch.arange(h) + 1, torch.arange(h, 0, -1)).float()
    wx = torch.minimum(torch.arange(w) + 1, torch.arange(w, 0, -1)).float()
    return torch.outer(wy / wy.max(), wx / wx.max()).clamp_min(1e-3)


def _resize(prob: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(prob[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]


def zoomed(image: Image.Image, first: torch.Tensor,
           predict: Callable[[Sequence[Image.Image]], list[torch.Tensor]], scale: int = GRID,
           keep_first_height: float | None = KEEP_FIRST_HEIGHT) -> torch.Tensor:
    """The merged probability map at ``scale`` times the first pass's size.

    ``predict`` is the low-resolution forward pass (``Segmenter.predict_lowres``); the tiles go through it in
    one batch. A person counts where either look is confident (the maximum), so a person the tiles find
    is added; but around a person the first pass saw at least ``keep_first_height`` tall the first pass's
    map stays as it is: the tiles cut a large person and judge its pieces without the rest, which cost
    large people more than the small ones gained. ``None``: the maximum everywhere.
    """
    h, w = first.shape
    out_h, out_w = h * scale, w * scale
    acc = torch.zeros(out_h, out_w)
    weight = torch.zeros(out_h, out_w)
    boxes = tile_boxes(*image.size)
    probs = predict([image.crop(box) for box in boxes])
    sx, sy = out_w / image.width, out_h / image.height
    for (x0, y0, x1, y1), prob in zip(boxes, probs, strict=True):
        tx0, ty0 = round(x0 * sx), round(y0 * sy)
        tx1, ty1 = max(tx0 + 1, round(x1 * sx)), max(ty0 + 1, round(y1 * sy))
        win = _window(ty1 - ty0, tx1 - tx0)
        acc[ty0:ty1, tx0:tx1] += _resize(prob, (ty1 - ty0, tx1 - tx0)) * win
        weight[ty0:ty1, tx0:tx1] += win
    tiles = acc / weight.clamp_min(1e-6)
    before = _resize(first, (out_h, out_w))
    merged = torch.maximum(tiles, before)
    if keep_first_height is None:
        return merged
    return torch.where(_first_keeps(first, (out_h, out_w), keep_first_height), before, merged)
