"""Should ``keep`` split a region of touching people, by a watershed on the distance to the region's edge?

    python benchmarks/studies/keep_split.py --data datasets/eg1800 --data datasets/ccp \\
        --val-list training/splits/shared_val.txt --limit 12

People who touch form one region of the mask, and one point keeps the region whole. With one point there is
no seed for the other person, so the only split available is by the region's shape: the distance of each
pixel to the region's edge (the frame's edges do not count: people continue beyond them) has a peak in each
body, and a watershed from the peaks cuts the region at the necks between them. A head also sits on a neck,
so a peak only keeps its own basin when it stands out: its height above the saddle where it meets a higher
peak is at least ``persistence`` times its own height. Scored on ``benchmarks/tuning/keep_quality.py``'s
two-person photos: IoU of the kept person against their own mask, without a split and with it at several
persistences, and the split's time.
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

from benchmarks.tuning.keep_quality import CASES, CUT, _iou, inside_point
from evaluation.data_options import add_data_options, case_runs
from segmenter import checkpoint, people
from segmenter.inference import Segmenter

PERSISTENCES = (0.4, 0.5, 0.6)


def distance(region: np.ndarray) -> np.ndarray:
    """Octagonal distance (chessboard and cross steps in turn) of each region pixel to the nearest pixel
    outside it; pixels beyond the frame count as the region's own."""
    d = np.zeros(region.shape, np.int32)
    cur = region.copy()
    for k in range(max(region.shape)):
        if not cur.any():
            break
        d += cur
        p = np.pad(cur, 1, mode="edge")
        nxt = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
        if k % 2:
            nxt &= p[:-2, :-2] & p[:-2, 2:] & p[2:, :-2] & p[2:, 2:]
        if np.array_equal(nxt, cur):
            break
        cur = nxt
    return d


def split(region: np.ndarray, persistence: float, levels: int = 32) -> np.ndarray:
    """Basins of the region (labels 1..k): a watershed on the distance from its peaks, flooding down at
    ``levels`` thresholds; a peak that rises less than ``persistence`` of its height above the saddle where it
    meets a higher one joins that one."""
    d = distance(region)
    top = int(d.max())
    if top < 2:
        return region.astype(np.int32)
    owner = np.zeros(region.shape, np.int32)
    peak: dict[int, int] = {}
    thresholds = sorted(set(np.linspace(top, 1, min(levels, top)).round().astype(int).tolist()), reverse=True)
    previous = top
    for t in thresholds:
        level = d >= t
        owner = people._grow(owner, (previous - t) * 2 + 2, within=level)
        labels, n = people.label(level)
        for c in range(1, n + 1):
            inside = labels == c
            present = [int(o) for o in np.unique(owner[inside]) if o > 0]
            if not present:
                owner[inside] = len(peak) + 1
                peak[len(peak) + 1] = int(d[inside].max())
            elif len(present) > 1:
                best = max(present, key=lambda o: peak[o])
                for o in present:
                    if o != best and peak[o] - t < persistence * peak[o]:
                        owner[owner == o] = best
        previous = t
    return people._grow(owner, 4 * max(region.shape), within=region)


def keep_split(mask: np.ndarray, point: tuple[int, int], persistence: float) -> np.ndarray:
    """``people.keep_people`` with one point, the region it lies in cut down to the point's basin."""
    h, w = mask.shape
    binary = people._work_copy(mask, people.WORK_SIDE)
    wh, ww = binary.shape
    labels, n = people.label(binary)
    sx, sy = ww / w, wh / h
    wx, wy = min(ww - 1, int(point[0] * sx)), min(wh - 1, int(point[1] * sy))
    chosen = int(labels[wy, wx])
    if n == 0 or chosen == 0:
        return people.keep_people(mask, [point])
    region = labels == chosen
    basin = split(region, persistence)
    basin = basin == basin[wy, wx]
    if basin.sum() == region.sum():
        return people.keep_people(mask, [point])
    labels[region & ~basin] = n + 1  # the rest of the region: another person, dropped
    reach = max(2, round(people.FRAGMENT_REACH * float(np.hypot(wh, ww))))
    sizes = np.bincount(labels.ravel(), minlength=n + 2)
    whole = np.flatnonzero(sizes >= people.FRAGMENT_FRACTION * wh * ww)
    owner = people._grow(np.where(np.isin(labels, whole[whole > 0]), labels, 0), reach)
    rows = np.minimum((np.arange(h) + 0.5) * sy, wh - 1).astype(np.intp)
    cols = np.minimum((np.arange(w) + 0.5) * sx, ww - 1).astype(np.intp)
    return np.where((owner == chosen)[rows][:, cols], mask, 0).astype(np.uint8)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_options(p, limit=12)
    args = p.parse_args(argv)
    seg = Segmenter.from_checkpoint(args.checkpoint or checkpoint.default_weights())
    rows: dict[str, list[dict[object, float]]] = {}
    times: list[float] = []
    for root, samples, i, case in case_runs(args, CASES, "split"):
        image, truths = CASES[case](samples[i], samples[(i + 1) % len(samples)])
        if len(truths) < 2:
            continue
        mask = seg.predict([image])[0]
        for truth in truths:
            if truth.sum() < 64:
                continue
            point = inside_point(truth)
            row: dict[object, float] = {"none": _iou(people.keep_people(mask, [point]) >= CUT, truth)}
            for q in PERSISTENCES:
                start = time.perf_counter()
                kept = keep_split(mask, point, q)
                times.append(time.perf_counter() - start)
                row[q] = _iou(kept >= CUT, truth)
            rows.setdefault(f"{root}: {case}", []).append(row)
    print()
    print("| case | people | no split | " + " | ".join(f"split, persistence {q:g}" for q in PERSISTENCES) + " |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in PERSISTENCES) + " |")
    every = [r for rs in rows.values() for r in rs]
    for name, rs in [*rows.items(), ("all", every)]:
        cells = " | ".join(f"{np.mean([r[q] for r in rs]):.4f}" for q in PERSISTENCES)
        print(f"| {name} | {len(rs)} | {np.mean([r['none'] for r in rs]):.4f} | {cells} |")
    if times:
        print(f"\nkeep with a split: median {np.median(times) * 1000:.0f} ms per photo at these sizes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
