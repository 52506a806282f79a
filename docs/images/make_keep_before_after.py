"""Make docs/images/keep_before_after.png and keep_in_front.png: two people, everyone and then each one kept.

The photo is the public-domain test photo. In the first, cut just beyond its person's shoulder, it stands
beside its mirror image; in the second, a mirrored copy of its person at 40% of the height stands in front
of them at the bottom right, so that the mask holds one region for both. ``keep`` with one point on each
person in turn, as the server does it (the click network's answer, the network's probability map, the edge
stage on), composited onto a plain colour (docs/API.md, "Choosing who stays").

    .venv/bin/python docs/images/make_keep_before_after.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from sheets import arguments, save_sheet

from segmenter import chooser, imaging, matting, people
from segmenter.chooser import Chooser
from segmenter.inference import Segmenter

SIDE = 220  # px high per panel: the sheet stays under 300 KB as a PNG
GAP = 10
BACKGROUND = (30, 144, 255)
SHOULDER = 0.72  # share of the test photo's width kept: its person's shoulder just inside the frame


def kept_panels(photo: Image.Image, points: list[tuple[int, int]]) -> tuple[list[Image.Image], list[float]]:
    """Everyone, then each point's person kept as served, on a plain colour; and each point's share of the mask."""
    seg = Segmenter.from_checkpoint()
    pick = Chooser(chooser.load()[0], seg.device, seg.amp)
    with torch.inference_mode():
        prob = seg.predict_lowres([photo])[0]
        mask = seg.full_mask(prob, photo)
    panels, shares = [], []
    for keep in ([], *([p] for p in points)):
        kept = people.keep_chosen(mask, keep, pick.choose(seg, photo, keep) if keep else [], prob)
        edge = matting.matte(photo, kept)
        panels.append(Image.fromarray(imaging.composite(edge.foreground, edge.alpha, BACKGROUND)))
        if keep:
            shares.append(np.count_nonzero(kept >= 128) / np.count_nonzero(mask >= 128))
    _, regions = people.regions_at_threshold(mask)
    print(f"the mask holds {regions} region(s); each point keeps " + ", ".join(f"{s:.2f}" for s in shares))
    return panels, shares


def main() -> None:
    args = arguments(__doc__, "keep_before_after.png")
    one = imaging.load_image(args.photo)
    side = one.crop((0, 0, round(one.width * SHOULDER), one.height))
    photo = Image.new("RGB", (2 * side.width, side.height))
    photo.paste(side, (0, 0))
    photo.paste(ImageOps.mirror(side), (side.width, 0))
    panels, _ = kept_panels(photo, [(side.width // 2, side.height // 2), (side.width * 3 // 2, side.height // 2)])
    save_sheet(panels, SIDE, GAP, args.out)

    seg = Segmenter.from_checkpoint()
    mirrored = ImageOps.mirror(one)
    small = (one.width * 2 // 5, one.height * 2 // 5)
    cut = Image.fromarray(seg.predict_one(mirrored)).resize(small)
    scene = one.copy()
    scene.paste(mirrored.resize(small), (one.width - small[0], one.height - small[1]), cut)
    front = (one.width - small[0] // 2, one.height - small[1] // 3)  # the chest of the one in front
    behind = (one.width // 3, one.height // 2)
    panels, _ = kept_panels(scene, [front, behind])
    save_sheet(panels, SIDE, GAP, str(Path(args.out).with_name("keep_in_front.png")))


if __name__ == "__main__":
    main()
