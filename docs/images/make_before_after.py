"""Make docs/images/before_after.png: a test photo beside its composite from the shipped model.

The composite is made the way the server makes ``mode=composite`` by default (guided upsampling, the edge
stage) with the mirror pass the GIMP plug-in turns on, so the picture shows what users get.

    .venv/bin/python docs/images/make_before_after.py
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from sheets import arguments, cut_out, save_sheet

from segmenter import imaging

SIDE = 360  # px high per half: the sheet stays under 300 KB as a PNG
GAP = 12


def gradient(size: tuple[int, int]) -> Image.Image:
    """A warm-to-blue studio backdrop: plainly not the photo's own background."""
    width, height = size
    y = np.linspace(0, 1, height)[:, None, None]
    x = np.linspace(0, 1, width)[None, :, None]
    top, bottom = np.array([255, 196, 140]), np.array([70, 110, 190])
    pixels = (top * (1 - y) + bottom * y) * (0.85 + 0.15 * (1 - x))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def main() -> None:
    args = arguments(__doc__, "before_after.png")
    photo, edge = cut_out(args.photo, tta="flip")
    after = Image.fromarray(imaging.composite(edge.foreground, edge.alpha, gradient(photo.size)))
    save_sheet([photo, after], SIDE, GAP, args.out)


if __name__ == "__main__":
    main()
