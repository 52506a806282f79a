"""How much IoU the model's input size alone costs: the truth itself, shrunk and grown back.

    python benchmarks/studies/resolution_ceiling.py --data datasets/eg1800 --data datasets/ccp \\
        --val-list training/splits/shared_val.txt --sizes 192,256,320

Each truth mask is box-averaged to the size the photo has inside the model's letterboxed input
(``preprocess.letterbox_size``), brought back to full size bilinearly and thresholded at 0.5. A
perfect network at that input size could do no worse than this (the guided filter can only add
detail), so when the figure is near 1 the input size is not what holds IoU down; the network is.
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

from evaluation.data_options import add_data_options, read_pairs
from evaluation.metrics import iou
from segmenter.imaging import load_mask
from segmenter.preprocess import THRESHOLD, letterbox_size


def ceiling_iou(truth: np.ndarray, image_size: int) -> float:
    """IoU of the truth against itself after a round trip through the model's input size."""
    h, w = truth.shape
    mask = Image.fromarray(truth.astype(np.uint8) * 255)
    small = mask.resize(letterbox_size(w, h, image_size), Image.Resampling.BOX)
    back = np.asarray(small.resize((w, h), Image.Resampling.BILINEAR)) >= THRESHOLD * 255
    return iou(torch.from_numpy(back), torch.from_numpy(truth))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_options(p, checkpoint=False)
    p.add_argument("--sizes", default="192,256,320", help="model input sides to try, comma-separated")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"{'dataset':<32} {'pairs':>5} " + " ".join(f"{f'IoU@{s}':>8}" for s in sizes))
    for root, pairs in read_pairs(args).items():
        truths = [load_mask(q.mask) for q in pairs]
        figures = [np.mean([ceiling_iou(t, s) for t in truths]) for s in sizes]
        print(f"{str(root):<32} {len(pairs):>5} " + " ".join(f"{f:>8.4f}" for f in figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
