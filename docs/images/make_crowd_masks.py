"""Make docs/images/crowd_masks.png: scenes of small people, the main network's mask and the crowd network's.

Rows: the first three *small group* scenes of each validation set (``benchmarks/robustness.py``'s case, built
from the first pairs of the split in order, not chosen by result) that the served rule hands to the crowd
network. Columns: truth | the main network's look alone (``crowd=off``) | the crowd network's (``crowd=auto``,
as served); masks only, coloured as ``make quality``'s grid (white person, red background called person, blue
person missed): the photos' licences do not allow showing them.

    .venv/bin/python docs/images/make_crowd_masks.py --data $DATASETS/eg1800 --data $DATASETS/ccp
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from benchmarks.quality import _error_tile
from benchmarks.robustness import CASES
from evaluation.data_options import add_data_options, read_pairs
from segmenter.imaging import load_image, load_mask
from segmenter.inference import Segmenter

ROOT = Path(__file__).resolve().parents[2]
PER_SET = 3
HEIGHT = 150
GAP = 4


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_options(p, limit=30, checkpoint=False)
    p.add_argument("--out", type=Path, default=ROOT / "docs/images/crowd_masks.png")
    args = p.parse_args()
    args.val_list = args.val_list or ROOT / "training/splits/shared_val.txt"
    seg = Segmenter.from_checkpoint()
    rows = []
    for root, pairs in read_pairs(args).items():
        samples = [(load_image(q.image), load_mask(q.mask)) for q in pairs]
        found = 0
        for i in range(len(samples)):
            photo, truth = CASES["small group"](samples, i)
            if truth.shape == samples[i][1].shape and (truth == samples[i][1]).all():
                continue  # no person-free background in this photo: the case fell back to it as it is
            (prob,), (sent,) = seg.looks([photo])
            if not sent:
                continue
            masks = [seg.predict_one(photo, crowd="off") >= 128, seg.full_mask(prob, photo) >= 128]
            rows.append([_error_tile(truth, truth, HEIGHT), *(_error_tile(m, truth, HEIGHT) for m in masks)])
            print(f"{root.name} scene {i}")
            found += 1
            if found == PER_SET:
                break
    width = max(sum(t.width for t in r) + GAP * (len(r) - 1) for r in rows)
    sheet = Image.new("RGB", (width, (HEIGHT + GAP) * len(rows) - GAP), (255, 255, 255))
    for y, row in enumerate(rows):
        x = 0
        for tile in row:
            sheet.paste(tile, (x, y * (HEIGHT + GAP)))
            x += tile.width + GAP
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
