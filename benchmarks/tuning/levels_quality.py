"""Matte levels: how much of the old background shows through, per setting of ``refine.LEVELS``.

    python benchmarks/tuning/levels_quality.py --checkpoint segmenter/weights/person_unet.pt \\
        --data datasets/eg1800 --data datasets/ccp --val-list training/splits/shared_val.txt

IoU and boundary F threshold the mask at 0.5, so they cannot see a soft mask's haze: a
background pixel at mask value 20 lets 8% of the old background through the new one. This
prints, per data set and levels setting (lo, hi), on the same guided-filter coefficients:

- ``MAE``: mean |mask/255 - truth| over all pixels (the truth is binary);
- ``haze``: share of truth-background pixels with mask value >= 8 (3% or more shows through);
- ``soft``: share of all pixels strictly between 8 and 247 (the feathered band);
- ``PNG B/px``: size of the served mask PNG per pixel (``imaging.encode_png``);
- ``IoU`` and ``BF`` at the 0.5 threshold, which symmetric levels (lo + hi = 1) leave unchanged.
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

from evaluation.data_options import add_data_options, read_pairs
from evaluation.metrics import image_metrics
from evaluation.progress import Progress
from evaluation.validation import iter_samples
from segmenter import refine
from segmenter.imaging import encode_png
from segmenter.inference import Segmenter
from segmenter.preprocess import THRESHOLD

HAZE_LEVEL = 8
COLUMNS = ("mae", "haze", "soft", "png", "iou", "boundary_f")


def mask_figures(mask: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """The table's columns for one full-resolution uint8 mask against its boolean truth."""
    background = ~truth
    metrics = image_metrics(torch.from_numpy(mask >= round(THRESHOLD * 255)), torch.from_numpy(truth))
    return {"mae": float(np.abs(mask / 255.0 - truth).mean()),
            "haze": float((mask[background] >= HAZE_LEVEL).mean()) if background.any() else 0.0,
            "soft": float(((mask > HAZE_LEVEL) & (mask < 255 - HAZE_LEVEL)).mean()),
            "png": len(encode_png(mask)) / mask.size, "iou": metrics["iou"], "boundary_f": metrics["boundary_f"]}


def parse_levels(text: str) -> list[tuple[float, float]]:
    """'0.25' -> (0.25, 0.75); settings are comma-separated lower levels, each paired with 1 - lo."""
    return [(float(lo), 1.0 - float(lo)) for lo in text.split(",")]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_options(p, val_list_required=True)
    p.add_argument("--lows", default="0,0.05,0.1,0.15,0.2,0.25,0.3",
                   help="lower levels to try, each with upper = 1 - lower (default includes the shipped one)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    segmenter = Segmenter.from_checkpoint(args.checkpoint, device="cpu")
    settings = parse_levels(args.lows)
    print(f"levels_quality: shipped LEVELS={refine.LEVELS}", file=sys.stderr)
    print(f"| data | levels | pairs | MAE | haze | soft | PNG B/px | IoU | BF |\n|{' --- |' * 9}")
    for root, pairs in read_pairs(args).items():
        rows: dict[tuple[float, float], list[dict[str, float]]] = {s: [] for s in settings}
        bar = Progress(len(pairs), Path(root).name)
        for _, image, truth in iter_samples(pairs):
            coeffs = refine.fit(segmenter.predict_lowres([image])[0], image)
            pixels = refine._pixels(image, refine.GUIDE)
            for setting in settings:
                mask = refine.apply(refine.with_levels(coeffs, setting), pixels)
                rows[setting].append(mask_figures(mask, truth.numpy()))
            bar.update()
        bar.close()
        for setting, figures in rows.items():
            mean = {k: float(np.mean([f[k] for f in figures])) for k in COLUMNS}
            mark = " (shipped)" if setting == tuple(refine.LEVELS) else ""
            print(f"| {Path(root).name} | {setting[0]:g}-{setting[1]:g}{mark} | {len(figures)} | {mean['mae']:.4f} | "
                  f"{mean['haze']:.3f} | {mean['soft']:.3f} | {mean['png']:.3f} | {mean['iou']:.4f} | "
                  f"{mean['boundary_f']:.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
