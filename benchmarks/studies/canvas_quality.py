"""Does the inference canvas change the masks? The served canvas against the full square, per hard case.

    python benchmarks/studies/canvas_quality.py --data datasets/eg1800 --data datasets/ccp \
        --val-list training/splits/shared_val.txt --limit 60

``Segmenter`` runs a portrait photo on a canvas cut to its width (``preprocess.canvas_size``) and a
landscape on the square. This scores three canvases on the same photos, per image IoU at the photo's
resolution (threshold 0.5), averaged:

- ``square``: every photo on the full letterboxed square (the canvas before ``preprocess.canvas_size`` cut portraits);
- ``served``: what ``Segmenter`` does now;
- ``both cut``: the black band below a landscape cut as well (measured and not adopted).

The cases are ``benchmarks/robustness.py``'s pair cases (the validation photos are portraits; ``group of two`` is a
landscape) plus ``top, 352:256``: a portrait's top cropped to a landscape whose letterboxed height is a
multiple of 32, so ``both cut`` leaves no black below the person cut by the bottom edge. No MediaPipe here.
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

from benchmarks.robustness import Sample, cut_by_frame, group_of_two, small_far
from evaluation.data_options import add_data_options, case_runs
from evaluation.metrics import image_metrics
from segmenter import checkpoint
from segmenter.inference import Segmenter
from segmenter.preprocess import THRESHOLD, canvas_size


class SquareCanvas(Segmenter):
    """Every photo on the full square, as before ``preprocess.canvas_size`` cut portraits."""

    def _canvas(self, size: tuple[int, int]) -> tuple[int, int]:
        return self.image_size, self.image_size


class BothCut(Segmenter):
    """The band below a landscape cut too: its height rounded up to the network's step."""

    def _canvas(self, size: tuple[int, int]) -> tuple[int, int]:
        step = getattr(self.model, "multiple", 32)
        # canvas_size(n, ...)[1] is n rounded up to the step, capped at the square: the served width rule,
        # applied here to the height as well
        height = canvas_size(size[1], self.image_size, step)[1]
        width = canvas_size(size[0], self.image_size, step)[1]
        return height, width


def top_landscape(a: Sample, b: Sample) -> Sample:
    """The top of the photo, cropped to 352:256 (the person cut by the bottom edge)."""
    image, truth = a
    h = max(16, round(image.width * 256 / 352))
    return image.crop((0, 0, image.width, h)), truth[:h]


# The cases the study was run on: robustness.py's cases built from a photo and the next one, plus a landscape.
CASES = {"as is": lambda a, b: a, "cut by frame": cut_by_frame, "group of two": group_of_two,
         "small, far": small_far, "top, 352:256": top_landscape}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_options(p, limit=60)
    args = p.parse_args(argv)
    served = Segmenter.from_checkpoint(args.checkpoint or checkpoint.default_weights(), device="cpu")
    segs = {"square": SquareCanvas(served.model, served.image_size, served.device, served.amp), "served": served,
            "both cut": BothCut(served.model, served.image_size, served.device, served.amp)}
    cut = round(THRESHOLD * 255)
    scores: dict[tuple[str, str], dict[str, list[float]]] = {}
    for root, samples, i, case in case_runs(args, CASES, "canvas"):
        image, truth = CASES[case](samples[i], samples[(i + 1) % len(samples)])
        row = scores.setdefault((root, case), {name: [] for name in segs})
        for name, seg in segs.items():
            mask = torch.from_numpy(seg.predict_one(image) >= cut)
            row[name].append(image_metrics(mask, torch.from_numpy(truth))["iou"])
    print("\n| set | case | images | " + " | ".join(f"{n} IoU" for n in segs) + " |")
    print("| --- | --- | --- |" + " --- |" * len(segs))
    for (root, case), row in scores.items():
        cells = " | ".join(f"{np.mean(v):.4f}" for v in row.values())
        print(f"| {root} | {case} | {len(row['served'])} | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
