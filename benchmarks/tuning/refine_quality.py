"""Guided (edge-aware) vs bilinear upsampling of the mask: boundary F-score at full resolution.

    python benchmarks/tuning/refine_quality.py --checkpoint segmenter/weights/person_unet.pt \\
        --data datasets/ccp --data datasets/eg1800 --data datasets/vikram \\
        --val-list training/splits/shared_val.txt

The comparison runs ``evaluation.validation.evaluate_samples`` — exactly what ``evaluate.py --refine
guided|bilinear`` runs, i.e. the served path — once per method on the same decoded validation
samples, and reports mean IoU and boundary F per method and dataset plus the paired per-image
difference (guided - bilinear): its mean, a bootstrap 95% interval and how often guided wins.

``--sweep`` also tries other guided-filter settings (guide rgb/luma, work size, radius, eps) on
the same low-resolution predictions (the network runs once) to check segmenter/refine.py's defaults.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if importlib.util.find_spec("segmenter") is None:  # a Python without `make setup`'s install
    sys.exit(f"{Path(__file__).name}: the project is not installed here; run `make setup` and use .venv/bin/python")

import numpy as np
import torch

from evaluation.data_options import SPREAD, add_data_options, all_pairs
from evaluation.metrics import image_metrics
from evaluation.progress import Progress
from evaluation.validation import evaluate_samples, iter_samples, summarize
from segmenter import refine
from segmenter.inference import Segmenter
from segmenter.preprocess import THRESHOLD


def paired_difference(a: Sequence[float], b: Sequence[float], seed: int = 0, rounds: int = 2000) -> dict:
    """Mean of a - b per image, a bootstrap 95% interval, and the share of images where a > b."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), (rounds, len(d)))].mean(axis=1)
    return {"mean": float(d.mean()), "ci95": [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))],
            "wins": float((d > 0).mean()), "ties": float((d == 0).mean()), "count": len(d)}


def compare(segmenter: Segmenter, samples: list, batch_size: int) -> dict:
    rows = {}
    for method in ("guided", "bilinear"):
        t0 = time.monotonic()
        rows[method] = evaluate_samples(segmenter, samples, method, batch_size)
        print(f"refine_quality: {method}: {time.monotonic() - t0:.1f} s", file=sys.stderr)
    result = {m: summarize(r) for m, r in rows.items()}
    for metric in ("boundary_f", "iou"):
        result[f"{metric}_guided_minus_bilinear"] = paired_difference(
            [r[metric] for r in rows["guided"]], [r[metric] for r in rows["bilinear"]])
    return result


def sweep(segmenter: Segmenter, samples: list, work_sizes: list[int], radii: list[float], epss: list[float],
          guides: Sequence[str] = refine.GUIDES) -> list:
    """Mean boundary F / IoU for each guided-filter setting (plus bilinear) on shared predictions."""
    variants = {"bilinear": refine.bilinear_upsample}
    for g, w, r, e in itertools.product(guides, work_sizes, radii, epss):
        variants[f"guided {g} ws={w} r={r:g} eps={e:g}"] = (
            lambda prob, img, g=g, w=w, r=r, e=e: refine.guided_upsample(prob, img, w, r, e, g))
    scores: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    threshold = round(THRESHOLD * 255)
    bar = Progress(len(samples), "sweep")
    for _, image, truth in samples:
        prob = segmenter.predict_lowres([image])[0]
        for name, fn in variants.items():
            m = image_metrics(torch.from_numpy(fn(prob, image)) >= threshold, truth)
            scores[name].append((m["boundary_f"], m["iou"]))
        bar.update()
    bar.close()
    table = [{"setting": k, "boundary_f": float(np.mean([s[0] for s in v])), "iou": float(np.mean([s[1] for s in v]))}
             for k, v in scores.items()]
    return sorted(table, key=lambda row: -row["boundary_f"])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_options(p, val_list_required=True, limit_mode=SPREAD, checkpoint_required=True)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--sweep", action="store_true", help="also try other guided-filter constants")
    p.add_argument("--work-sizes", default="384,512,768")
    p.add_argument("--radius-fractions", default="0.00390625,0.0078125,0.015625")
    p.add_argument("--eps", default="1e-4,1e-3,1e-2")
    p.add_argument("--guides", default=",".join(refine.GUIDES), help="guides to sweep (rgb, luma)")
    p.add_argument("--no-compare", action="store_true", help="only the sweep")
    p.add_argument("--json", type=Path, help="write the results here as JSON")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: next to a training run, more threads only spin)")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    segmenter = Segmenter.from_checkpoint(args.checkpoint, device="cpu")
    pairs = all_pairs(args)
    print(f"refine_quality: {args.checkpoint}, {len(pairs)} validation pairs, refine constants "
          f"WORK_SIZE={refine.WORK_SIZE} RADIUS_FRACTION={refine.RADIUS_FRACTION:g} EPS={refine.EPS:g} "
          f"GUIDE={refine.GUIDE}",
          file=sys.stderr)
    samples = list(iter_samples(pairs))
    result = {"checkpoint": str(args.checkpoint), "pairs": len(pairs),
              "constants": {"WORK_SIZE": refine.WORK_SIZE, "RADIUS_FRACTION": refine.RADIUS_FRACTION,
                            "EPS": refine.EPS, "GUIDE": refine.GUIDE}}
    if not args.no_compare:
        result.update(compare(segmenter, samples, args.batch_size))
        print(f"{'method':<10} {'IoU':>7} {'BF':>7}")
        for method in ("guided", "bilinear"):
            print(f"{method:<10} {result[method]['mean_iou']:>7.4f} {result[method]['mean_boundary_f']:>7.4f}")
        d = result["boundary_f_guided_minus_bilinear"]
        print(f"boundary F, guided - bilinear: {d['mean']:+.4f} (95% CI {d['ci95'][0]:+.4f} to "
              f"{d['ci95'][1]:+.4f}), guided better on {d['wins']:.0%} of {d['count']} images")
    if args.sweep:
        table = sweep(segmenter, samples, [int(x) for x in args.work_sizes.split(",")],
                      [float(x) for x in args.radius_fractions.split(",")], [float(x) for x in args.eps.split(",")],
                      args.guides.split(","))
        result["sweep"] = table
        for row in table:
            print(f"{row['setting']:<40} BF {row['boundary_f']:.4f}  IoU {row['iou']:.4f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
