"""A second, closer look for photos whose people are small: overlapping tiles at the model's input size.

At the served input size a person a tenth of the photo's height is a few dozen pixels tall, and the network
misses such people rather than blurring them. The zoom pass runs the network again on a grid of overlapping
tiles of the photo, each at the full input size (so twice the resolution for a 2 x 2 grid), blends the
tiles into one probability map and merges it with the first pass's.

It costs a tile batch (four forward passes for 2 x 2), so ``"auto"`` spends it only where the first pass
suggests small people: when no person in it is tall. What each mode gains and loses per hard case is
measured by ``benchmarks/tuning/zoom_quality.py`` (docs/BENCHMARKS.md, "Zoom pass").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image

from segmenter.refine import resize_map

ZOOM_MODES = ("off", "auto", "on")
# What the server and evaluate.py use unless told otherwise. "off": on the validation sets and their hard cases
# the closer look gains on scenes of small people and loses about as much on large ones, partly by finding
# bystanders the truth masks leave unlabelled (docs/research/zoom-pass.md).
DEFAULT_ZOOM = "off"
GRID = 2  # tiles per side
OVERLAP = 0.25  # share of a tile's side that it shares with its neighbour
# "auto" looks again when the first pass's tallest person (rows holding confident person pixels, as a share of
# the photo's height) is below this.
AUTO_MAX_HEIGHT = 0.75
CONFIDENT = 0.5

Box = tuple[int, int, int, int]  # left, top, right, bottom in photo pixels


def tile_boxes(width: int, height: int, grid: int = GRID, overlap: float = OVERLAP) -> list[Box]:
    """``grid`` x ``grid`` tiles covering the photo, neighbours sharing ``overlap`` of a tile's side."""
    def spans(n: int) -> list[tuple[int, int]]:
        side = n / (grid - (grid - 1) * overlap)
        step = side * (1 - overlap)
        return [(round(i * step), min(n, round(i * step + side))) for i in range(grid)]
    return [(x0, y0, x1, y1) for y0, y1 in spans(height) for x0, x1 in spans(width)]


def person_height(prob: torch.Tensor, confident: float = CONFIDENT) -> float:
    """Share of the map's rows that hold a confident person pixel: near 1 for a portrait, small for far people."""
    rows = (prob >= confident).any(dim=1)
    return float(rows.float().mean()) if rows.numel() else 0.0


def wants_zoom(prob: torch.Tensor, mode: str, max_height: float = AUTO_MAX_HEIGHT) -> bool:
    if mode not in ZOOM_MODES:
        raise ValueError(f"unknown zoom {mode!r}; expected one of: {', '.join(ZOOM_MODES)}")
    return mode == "on" or (mode == "auto" and person_height(prob) < max_height)


def _window(h: int, w: int) -> torch.Tensor:
    """Blending weights that fall off towards a tile's edges, where the network sees the least context."""
    wy = torch.minimum(torch.arange(h) + 1, torch.arange(h, 0, -1)).float()
    wx = torch.minimum(torch.arange(w) + 1, torch.arange(w, 0, -1)).float()
    return torch.outer(wy / wy.max(), wx / wx.max()).clamp_min(1e-3)


def looks(image: Image.Image, first: torch.Tensor, predict: Callable[[Sequence[Image.Image]], list[torch.Tensor]],
          scale: int = GRID) -> tuple[torch.Tensor, torch.Tensor]:
    """The tiles' map (blended where they overlap) and the first look's, both at ``scale`` times its size.

    ``predict`` is the low-resolution forward pass (``Segmenter.predict_lowres``); the tiles go through it in
    one batch. Apart from ``zoomed`` so that other ways of merging the two can be measured on the same looks.
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
        acc[ty0:ty1, tx0:tx1] += resize_map(prob, (ty1 - ty0, tx1 - tx0)) * win
        weight[ty0:ty1, tx0:tx1] += win
    return acc / weight.clamp_min(1e-6), resize_map(first, (out_h, out_w))


def zoomed(image: Image.Image, first: torch.Tensor,
           predict: Callable[[Sequence[Image.Image]], list[torch.Tensor]], scale: int = GRID) -> torch.Tensor:
    """The merged probability map at ``scale`` times the first pass's size.

    A person counts where either look is confident (the maximum), so a person the tiles find is added and the
    first pass's whole-photo view keeps a large person whole where a tile cuts it (``looks`` gives the two).
    """
    tiles, whole = looks(image, first, predict, scale)
    return torch.maximum(tiles, whole)
