"""Make docs/images/keep_before_after.png: two people side by side, everyone and then each one kept.

The photo is the public-domain test photo, cut just beyond its person's shoulder, beside its mirror image;
``keep`` with one point on each person in turn, as the server does it (the network's probability map, the
edge stage on), composited onto a plain colour. Cut at the shoulder itself (``SHOULDER`` 0.66), the two
halves join into one seamless suit that the network is sure of throughout: one region, which a point keeps
whole (docs/API.md, "Choosing who stays").

    .venv/bin/python docs/images/make_keep_before_after.py
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageOps
from sheets import arguments, save_sheet

from segmenter import imaging, matting, people
from segmenter.inference import Segmenter

SIDE = 220  # px high per panel: the sheet stays under 300 KB as a PNG
GAP = 10
BACKGROUND = (30, 144, 255)
SHOULDER = 0.72  # share of the test photo's width kept: its person's shoulder just inside the frame


def main() -> None:
    args = arguments(__doc__, "keep_before_after.png")
    one = imaging.load_image(args.photo)
    one = one.crop((0, 0, round(one.width * SHOULDER), one.height))
    photo = Image.new("RGB", (2 * one.width, one.height))
    photo.paste(one, (0, 0))
    photo.paste(ImageOps.mirror(one), (one.width, 0))
    seg = Segmenter.from_checkpoint()
    with torch.inference_mode():
        prob = seg.predict_lowres([photo])[0]
        mask = seg.full_mask(prob, photo)
    _, regions = people.regions_at_threshold(mask)
    points = [(one.width // 2, one.height // 2), (one.width * 3 // 2, one.height // 2)]
    panels = []
    for keep in ([], points[:1], points[1:]):
        kept = people.keep_people(mask, keep, prob)
        edge = matting.matte(photo, kept)
        panels.append(Image.fromarray(imaging.composite(edge.foreground, edge.alpha, BACKGROUND)))
    shares = [np.count_nonzero(people.keep_people(mask, [p], prob) >= 128) / np.count_nonzero(mask >= 128)
              for p in points]
    print(f"the mask holds {regions} region(s); each point keeps " + ", ".join(f"{s:.2f}" for s in shares))
    save_sheet(panels, SIDE, GAP, args.out)


if __name__ == "__main__":
    main()
