"""Make docs/images/harmonize_before_after.png: one composite at harmonize 0, 0.5 and 1.

The person is composited the way the server makes ``mode=composite`` with an uploaded background (the edge
stage on), onto a cool evening backdrop whose light plainly differs from the photo's; only the strength of
``harmonize`` changes from panel to panel.

    .venv/bin/python docs/images/make_harmonize_before_after.py
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from sheets import arguments, cut_out, save_sheet

from segmenter import harmonize, imaging

SIDE = 260  # px high per panel: the sheet stays under 300 KB as a PNG
GAP = 10
STRENGTHS = (0.0, 0.5, 1.0)


def evening(size: tuple[int, int]) -> Image.Image:
    """A cool, dim evening backdrop: a deep blue sky over a dark ground, with a little grain."""
    width, height = size
    y = np.linspace(0, 1, height)[:, None, None]
    sky = np.array([70, 100, 170]) * (1 - y) + np.array([30, 40, 80]) * y
    ground = np.where(y > 0.7, 0.6, 1.0)
    noise = np.random.default_rng(0).normal(0, 2, (height, width, 3))
    return Image.fromarray(np.clip(sky * ground + noise, 0, 255).astype(np.uint8))


def main() -> None:
    args = arguments(__doc__, "harmonize_before_after.png")
    photo, edge = cut_out(args.photo)
    backdrop = evening(photo.size)
    panels = []
    for strength in STRENGTHS:
        person = harmonize.harmonize(edge.foreground, edge.alpha, photo, backdrop, strength)
        panels.append(Image.fromarray(imaging.composite(person, edge.alpha, backdrop)))
    save_sheet(panels, SIDE, GAP, args.out)


if __name__ == "__main__":
    main()
