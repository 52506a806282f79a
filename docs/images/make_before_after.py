"""Make docs/images/before_after.png: a test photo beside its composite from the shipped model.

The composite is made the way the server makes ``mode=composite`` by default (guided upsampling, the edge
stage) with the mirror pass the GIMP plug-in turns on, so the picture shows what users get.

    .venv/bin/python docs/images/make_before_after.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from segmenter import imaging, matting
from segmenter.inference import Segmenter

ROOT = Path(__file__).resolve().parents[2]
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
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photo", default=str(ROOT / "tests/gimp/data/astronaut.jpg"))
    p.add_argument("--out", default=str(ROOT / "docs/images/before_after.png"))
    args = p.parse_args()

    photo = imaging.load_image(args.photo)
    mask = Segmenter.from_checkpoint().predict_one(photo, tta="flip")
    edge = matting.matte(photo, mask)
    after = Image.fromarray(imaging.composite(edge.foreground, edge.alpha, gradient(photo.size)))

    half = (round(SIDE * photo.width / photo.height), SIDE)
    sheet = Image.new("RGB", (2 * half[0] + GAP, SIDE), (255, 255, 255))
    sheet.paste(photo.resize(half, Image.Resampling.LANCZOS), (0, 0))
    sheet.paste(after.resize(half, Image.Resampling.LANCZOS), (half[0] + GAP, 0))
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
