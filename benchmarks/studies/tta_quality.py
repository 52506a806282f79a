"""Test-time options the server could add, measured: the mirror pass, a second input size, the threshold.

    python benchmarks/studies/tta_quality.py --checkpoint segmenter/weights/person_unet.pt \\
        --data datasets/eg1800 --val-list training/splits/shared_val.txt --second-size 416

Asks whether post-processing alone can close a gap to a target before more training is spent on it
(docs/MODEL_CARD.md). Per data set, mean person IoU of the served mask (guided upsampling, the
server's code) for: the input size alone, with the mirror pass (``tta=flip``), the mean of the low-resolution
maps at the input size and at ``--second-size``, and both; and, for the input size with and without the
mirror pass, at each ``--thresholds`` value of the served mask (0.5 is what every other figure uses).
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
import torch.nn.functional as F

from evaluation.data_options import add_data_options, read_pairs
from evaluation.metrics import iou
from evaluation.progress import Progress
from evaluation.validation import iter_samples
from segmenter.inference import Segmenter
from segmenter.preprocess import THRESHOLD
from segmenter.refine import upsample


def variants(base: Segmenter, second: Segmenter, image) -> dict[str, torch.Tensor]:
    """Low-resolution probability maps per option; the second size is resampled onto the first's grid."""
    one, one_flip = base.predict_lowres([image])[0], base.predict_lowres([image], "flip")[0]
    two, two_flip = second.predict_lowres([image])[0], second.predict_lowres([image], "flip")[0]

    def on_grid(p: torch.Tensor) -> torch.Tensor:
        return F.interpolate(p[None, None], size=one.shape, mode="bilinear", align_corners=False)[0, 0]

    return {"size": one, "size + flip": one_flip, "second size": two, "second size + flip": two_flip,
            "both sizes": (one + on_grid(two)) / 2, "both sizes + flip": (one_flip + on_grid(two_flip)) / 2}


def score(base: Segmenter, second: Segmenter, samples: list, thresholds: Sequence[float]) -> dict[str, float]:
    rows: dict[str, list[float]] = {}
    bar = Progress(len(samples), "tta")
    for _, image, truth in samples:
        for name, prob in variants(base, second, image).items():
            mask = torch.from_numpy(upsample(prob, image, "guided"))
            for t in thresholds if name in ("size", "size + flip") else [THRESHOLD]:
                rows.setdefault(f"{name} @ {t:g}", []).append(iou(mask >= round(t * 255), truth))
        bar.update()
    bar.close()
    return {k: float(np.mean(v)) for k, v in rows.items()}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_options(p, val_list_required=True)
    p.add_argument("--second-size", type=int, default=416, help="the other input size averaged in (px)")
    p.add_argument("--thresholds", default="0.45,0.5,0.55,0.6", help="served-mask thresholds to try")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    base = Segmenter.from_checkpoint(args.checkpoint, device="cpu")
    second = Segmenter.from_checkpoint(args.checkpoint, device="cpu")
    second.image_size = args.second_size
    thresholds = [float(x) for x in args.thresholds.split(",")]
    for root, pairs in read_pairs(args).items():
        samples = list(iter_samples(pairs))
        print(f"{root}: {len(samples)} pairs, input {base.image_size} px, second size {args.second_size} px")
        for name, value in score(base, second, samples, thresholds).items():
            print(f"  {name:<28} IoU {value:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
