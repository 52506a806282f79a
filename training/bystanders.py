"""Mark the people a data set's masks leave out, so that training can leave them out of the loss.

    python training/bystanders.py --data datasets/ccp --val-list training/splits/shared_val.txt \\
        --checkpoint runs/group/best.pt --out runs/bystanders
    python training/train.py ... --ignore-masks runs/bystanders

Street photography labels only its main subject: passers-by are "background" in its masks. A model taught
to find small people (``--group-prob``) is punished for finding them there, and learns the two lessons
against each other. This script runs a model that finds them (one trained with group scenes, looking
again closer with the zoom pass) over the training pairs and writes, for each photo where it sees a person
the mask does not have, a mask of those pixels: every pixel it calls person that lies farther than
``--margin`` of the photo's diagonal from the labelled subject (nearer, a disagreement is the subject's own
edge, which training must keep learning), grown by the same margin to take in their soft edges.
``train.py --ignore-masks`` then leaves them out of the loss. The validation pairs (``--val-list``) are
skipped: their truth stays as it is.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

if importlib.util.find_spec("segmenter") is None:  # a Python without `make setup`'s install
    sys.exit(f"{Path(__file__).name}: the project is not installed here; run `make setup` and use .venv/bin/python")

import numpy as np
import torch
from PIL import Image

from evaluation.metrics import dilate
from evaluation.pairs import DatasetError, find_pairs, read_name_list
from evaluation.progress import Progress
from segmenter import checkpoint
from segmenter.imaging import load_image, load_mask
from segmenter.inference import Segmenter
from segmenter.zoom import ZOOM_MODES

MARGIN = 0.02  # of the photo's diagonal


def grow(binary: np.ndarray, pixels: int) -> np.ndarray:
    """``binary`` grown by ``pixels`` in every direction (a square window)."""
    return dilate(torch.from_numpy(binary), pixels).numpy() if pixels > 0 else binary


def left_out(found: np.ndarray, truth: np.ndarray, margin: float = MARGIN) -> np.ndarray:
    """Pixels to leave out of the loss: ``found`` people farther than ``margin`` of the diagonal from
    ``truth``'s, grown by the margin, outside ``truth``."""
    pixels = max(1, round(margin * float(np.hypot(*truth.shape))))
    far = found & ~grow(truth, pixels)
    return grow(far, pixels) & ~truth


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", action="append", type=Path, required=True, help="dataset root (repeatable)")
    p.add_argument("--val-list", type=Path, help="base names to skip (the validation split)")
    p.add_argument("--checkpoint", type=Path, help="the model that finds people (default: the shipped one)")
    p.add_argument("--zoom", choices=ZOOM_MODES, default="on", help="its closer look (default on: small people)")
    p.add_argument("--margin", type=float, default=MARGIN, help="share of the diagonal (default %(default)s)")
    p.add_argument("--out", type=Path, required=True, help="folder for the masks (one PNG per photo with any)")
    args = p.parse_args(argv)
    try:
        skip = read_name_list(args.val_list) if args.val_list else set()
        pairs = [pair for pair in find_pairs(args.data) if pair.name not in skip]
    except DatasetError as exc:
        sys.exit(f"bystanders.py: {exc}")
    seg = Segmenter.from_checkpoint(args.checkpoint or checkpoint.default_weights())
    args.out.mkdir(parents=True, exist_ok=True)
    written, share = 0, []
    bar = Progress(len(pairs), "bystanders")
    try:
        for pair in pairs:
            truth = load_mask(pair.mask)  # find_pairs has checked it is the photo's size
            with torch.inference_mode():
                found = seg.predict_one(load_image(pair.image), zoom=args.zoom) >= 128
            marked = left_out(found, truth, args.margin)
            if marked.any():
                Image.fromarray(marked.astype(np.uint8) * 255).save(args.out / f"{pair.name}.png")
                written += 1
                share.append(marked.mean())
            bar.update(1)
    finally:
        bar.close()
    print(f"bystanders.py: {written} of {len(pairs)} photos have people their masks leave out "
          f"(on those, {100 * float(np.mean(share)) if share else 0:.2f}% of the pixels on average); "
          f"masks in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
