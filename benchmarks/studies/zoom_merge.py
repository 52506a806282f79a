"""Should the zoom pass add only the people the first look missed, instead of every tile pixel?

    python benchmarks/studies/zoom_merge.py --data datasets/eg1800 --data datasets/ccp \\
        --val-list training/splits/shared_val.txt --limit 12

The served merge (``segmenter.zoom.zoomed``) takes, per pixel, the more confident of the first look and the
tiles. The tiles also add pixels on the background and reshape people the first look had already found. This
variant keeps the first look and adds the tiles only on *new* regions: connected regions of the tiles'
confident pixels of which under ``overlap`` lies in the first look's confident pixels, grown by a few pixels
so their soft edge comes along. Scored on ``benchmarks/robustness.py``'s cases: IoU with the zoom pass off, on
(served merge), on with the new-regions merge, and both merges behind the served trigger ("auto").
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

from benchmarks.robustness import CASES
from evaluation.data_options import add_data_options, case_runs
from evaluation.metrics import image_metrics
from segmenter import checkpoint, people, zoom
from segmenter.inference import Segmenter
from segmenter.refine import WORK_SIZE, upsample

OVERLAPS = (0.1, 0.3)
GROW = 3  # pixels of the merged map a new region is widened by
CUT = 128


def new_regions(tiles: torch.Tensor, first: torch.Tensor, overlap: float) -> torch.Tensor:
    """The first look, with the tiles' map on the regions it missed (see the module's docstring)."""
    labels, n = people.label((tiles >= zoom.CONFIDENT).numpy())
    if n == 0:
        return first
    area = np.bincount(labels.ravel(), minlength=n + 1)
    inside = np.bincount(labels[(first >= zoom.CONFIDENT).numpy()], minlength=n + 1)
    new = np.flatnonzero((inside < overlap * area) & (np.arange(n + 1) > 0))
    if new.size == 0:
        return first
    chosen = torch.from_numpy(np.isin(labels, new)).float()[None, None]
    chosen = F.max_pool2d(chosen, 2 * GROW + 1, 1, GROW)[0, 0] > 0
    return torch.where(chosen, torch.maximum(tiles, first), first)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_options(p, limit=12)
    args = p.parse_args(argv)
    seg = Segmenter.from_checkpoint(args.checkpoint or checkpoint.default_weights())
    rows: dict[str, list[dict[str, float]]] = {}
    for root, samples, i, case in case_runs(args, CASES, "merge"):
        image, truth = CASES[case](samples, i)
        t = torch.from_numpy(truth)

        def iou(mask: np.ndarray, t: torch.Tensor = t) -> float:
            return image_metrics(torch.from_numpy(mask >= CUT), t)["iou"]

        with torch.inference_mode():
            first = seg.predict_lowres([image])[0]
            tiles, up = zoom.looks(image, first, seg.predict_lowres)
            fine = WORK_SIZE * zoom.GRID
            row = {"height": zoom.person_height(first), "off": iou(upsample(first, image)),
                   "on": iou(upsample(torch.maximum(tiles, up), image, "guided", fine))}
            for q in OVERLAPS:
                row[f"new {q:g}"] = iou(upsample(new_regions(tiles, up, q), image, "guided", fine))
        rows.setdefault(f"{root}: {case}", []).append(row)
    merges = ["on", *(f"new {q:g}" for q in OVERLAPS)]
    print("\n| case | photos | off | " + " | ".join(merges) + " | " + " | ".join(f"auto, {m}" for m in merges) + " |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in merges * 2) + " |")
    every = [r for rs in rows.values() for r in rs]
    for name, rs in [*rows.items(), ("all", every)]:
        def auto(m: str, rs: list[dict[str, float]] = rs) -> float:
            return float(np.mean([r[m] if r["height"] < zoom.AUTO_MAX_HEIGHT else r["off"] for r in rs]))
        cells = " | ".join(f"{np.mean([r[m] for r in rs]):.4f}" for m in merges)
        print(f"| {name} | {len(rs)} | {np.mean([r['off'] for r in rs]):.4f} | {cells} | "
              + " | ".join(f"{auto(m):.4f}" for m in merges) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
