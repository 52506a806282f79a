"""The zoom pass: what it gains per hard case, what it costs, and what ``"auto"`` sends to it.

    python benchmarks/tuning/zoom_quality.py --data datasets/eg1800 --data datasets/ccp \\
        --val-list training/splits/shared_val.txt --limit 30

Builds ``benchmarks/robustness.py``'s cases from the validation pairs and scores, per case, the mask with
the zoom pass off; on with the plain maximum merge; on with the served merge (large people keep the first
pass, ``zoom.KEEP_FIRST_HEIGHT``); and ``"auto"`` as served (``zoom.wants_zoom``), with the share of photos it
sends to the second look, which is what it costs. Rerun it when the model changes: the trigger depends on how
confident the first pass is.
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


def score(seg: Segmenter, image, truth: np.ndarray) -> dict[str, float]:
    """IoU and milliseconds of one photo with the zoom pass off and on (both merges), and the served trigger."""
    cut = round(THRESHOLD * 255)
    t = torch.from_numpy(truth)
    start = time.perf_counter()
    first = seg.predict_lowres([image])[0]
    off = upsample(first, image)
    t_off = time.perf_counter() - start
    start = time.perf_counter()
    tiles = seg.predict_lowres([image.crop(box) for box in zoom.tile_boxes(*image.size)])
    out = {}
    for name, keep in (("on", zoom.KEEP_FIRST_HEIGHT), ("max", None)):
        finer = zoom.zoomed(image, first, lambda _: tiles, keep_first_height=keep)
        out[name] = upsample(finer, image, "guided", WORK_SIZE * zoom.GRID)
        if name == "on":
            t_on = t_off + time.perf_counter() - start

    def iou(mask: np.ndarray) -> float:
        return image_metrics(torch.from_numpy(mask >= cut), t)["iou"]

    return {"auto": zoom.wants_zoom(first, "auto"), "height": zoom.person_height(first),
            "off": iou(off), "on": iou(out["on"]), "max": iou(out["max"]), "ms_off": t_off * 1000, "ms_on": t_on * 1000}


def report(rows: dict[str, list[dict[str, float]]]) -> None:
    print("| case | images | off | on, maximum merge | on (served merge) | auto (share zoomed) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for case, rs in rows.items():
        auto = [r["on"] if r["auto"] else r["off"] for r in rs]
        print(f"| {case} | {len(rs)} | {np.mean([r['off'] for r in rs]):.4f} | {np.mean([r['max'] for r in rs]):.4f} | "
              f"{np.mean([r['on'] for r in rs]):.4f} | {np.mean(auto):.4f} ({np.mean([r['auto'] for r in rs]):.0%}) |")
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
