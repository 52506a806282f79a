"""Make docs/images/harmonize_before_after.png: one composite at harmonize 0, 0.5 and 1.

The person is composited the way the server makes ``mode=composite`` with an uploaded background (the edge
stage on), onto a cool evening backdrop whose light plainly differs from the photo's; only the strength of
``harmonize`` changes from panel to panel.

    .venv/bin/python docs/images/make_harmonize_before_after.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from segmenter import harmonize, imaging, matting
from segmenter.inference import Segmenter

ROOT = Path(__file__).resolve().parents[2]
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
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photo", default=str(ROOT / "tests/gimp/data/astronaut.jpg"))
    p.add_argument("--out", default=str(ROOT / "docs/images/harmonize_before_after.png"))
    args = p.parse_args()

    photo = imaging.load_image(args.photo)
    mask = Segmenter.from_checkpoint().predict_one(photo)
    edge = matting.matte(photo, mask)
    backdrop = evening(photo.size)
    half = (round(SIDE * photo.width / photo.height), SIDE)
    sheet = Image.new("RGB", (len(STRENGTHS) * (half[0] + GAP) - GAP, SIDE), (255, 255, 255))
    for k, strength in enumerate(STRENGTHS):
        person = harmonize.harmonize(edge.foreground, edge.alpha, photo, backdrop, strength)
        panel = Image.fromarray(imaging.composite(person, edge.alpha, backdrop))
        sheet.paste(panel.resize(half, Image.Resampling.LANCZOS), (k * (half[0] + GAP), 0))
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
