"""The zoom pass: what it gains per hard case, what it costs, and which ``zoom.AUTO_MAX_HEIGHT`` to serve.

    python benchmarks/tuning/zoom_quality.py --data datasets/eg1800 --data datasets/ccp \\
        --val-list training/splits/shared_val.txt --limit 30

Builds ``benchmarks/robustness.py``'s cases from the validation pairs and scores, per case, the mask with
the zoom pass off, on, and "auto" at several thresholds of the first pass's person height (with the share of
photos each threshold sends to the second look, which is what it costs). Rerun it when the model changes:
the threshold depends on how confident the first pass is.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if importlib.util.find_spec("segmenter") is None:  # a Python without `make setup`'s install
    sys.exit(f"{Path(__file__).name}: the project is not installed here; run `make setup` and use .venv/bin/python")

import numpy as np
import torch

from benchmarks.robustness import CASES
from evaluation.data_options import add_data_options, case_runs
from evaluation.metrics import image_metrics
from segmenter import checkpoint, zoom
from segmenter.inference import Segmenter
from segmenter.preprocess import THRESHOLD
from segmenter.refine import WORK_SIZE, upsample

THRESHOLDS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.9, 1.01)


def score(seg: Segmenter, image, truth: np.ndarray) -> dict[str, float]:
    """IoU and milliseconds of one photo with the zoom pass off and on, and its first-pass person height."""
    cut = round(THRESHOLD * 255)
    t = torch.from_numpy(truth)
    start = time.perf_counter()
    first = seg.predict_lowres([image])[0]
    off = upsample(first, image)
    t_off = time.perf_counter() - start
    start = time.perf_counter()
    finer = zoom.zoomed(image, first, seg.predict_lowres)
    on = upsample(finer, image, "guided", WORK_SIZE * zoom.GRID)
    t_on = t_off + time.perf_counter() - start
    return {"height": zoom.person_height(first),
            "off": image_metrics(torch.from_numpy(off >= cut), t)["iou"],
            "on": image_metrics(torch.from_numpy(on >= cut), t)["iou"],
            "ms_off": t_off * 1000, "ms_on": t_on * 1000}


def report(rows: dict[str, list[dict[str, float]]]) -> None:
    heads = " | ".join(f"auto {th:.2f}" for th in THRESHOLDS)
    print(f"| case | images | off | on | {heads} |")
    print("| --- | --- | --- | --- | " + " | ".join("---" for _ in THRESHOLDS) + " |")
    for case, rs in rows.items():
        cells = []
        for th in THRESHOLDS:
            picked = [r["on"] if r["height"] < th else r["off"] for r in rs]
            zoomed = np.mean([r["height"] < th for r in rs])
            cells.append(f"{np.mean(picked):.4f} ({zoomed:.0%})")
        print(f"| {case} | {len(rs)} | {np.mean([r['off'] for r in rs]):.4f} | "
              f"{np.mean([r['on'] for r in rs]):.4f} | " + " | ".join(cells) + " |")
    every = [r for rs in rows.values() for r in rs]
    print(f"\nmedian ms per photo: off {np.median([r['ms_off'] for r in every]):.0f}, "
          f"on {np.median([r['ms_on'] for r in every]):.0f} (photos of {len(every)} built cases)")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_options(p, limit=30)
    p.add_argument("--case", action="append", choices=sorted(CASES), dest="cases",
                   help="score only this case (repeatable; default: all)")
    args = p.parse_args(argv)
    seg = Segmenter.from_checkpoint(args.checkpoint or checkpoint.default_weights())
    rows: dict[str, list[dict[str, float]]] = {}
    for root, samples, i, case in case_runs(args, args.cases or CASES, "zoom"):
        rows.setdefault(f"{root}: {case}", []).append(score(seg, *CASES[case](samples, i)))
    print()
    report(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
