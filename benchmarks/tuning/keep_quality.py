"""Choose who stays: keeping one person of two by a point, against that person's own mask.

    python benchmarks/tuning/keep_quality.py --data datasets/eg1800 --data datasets/ccp \\
        --val-list training/splits/shared_val.txt --limit 30

Builds two-person photos from the validation pairs, where each person's own truth mask is known:

- ``side by side``: photo ``i`` and the next one glued side by side (``benchmarks/robustness.py``'s group of
  two); portraits that fill their frame meet at the seam, shoulder to shoulder;
- ``near and far``: the next pair's person at 40% of the height in the bottom-right corner (robustness.py's
  small, far), in front of photo ``i``'s person where they overlap;
- ``beside``: the next pair's person cut out at 70% of the height and pasted at the bottom on the side of the
  photo away from photo ``i``'s person;
- ``alone``: photo ``i`` as it is, one person: a point on them must keep them as the mask has them (its keep
  IoU against the "everyone" column); it stays out of the ``all`` row, which is the two-person photos.

For each person of each photo, the served mask (the default zoom) is cut down to the people a point chose as
the server does: the shipped click network's answer weighed against its rival's and
``segmenter.people.keep_chosen`` (``--one-pass``: the answer alone; ``--no-chooser``: the regions alone,
``segmenter.people.keep_people``), the point being the person's own pixel nearest to their
centroid, where a user would click. Printed per case: the IoU of the kept mask against that person's truth
("keep"), of the mask with everyone in it ("everyone", what the option improves on), the share of people whose
truth touches the other's (one region even for a perfect mask: "truth touch"), the share whose kept region
also holds most of the other person ("merged"), and the IoU where they were not merged. Then the cost of
``keep_people`` on a 12-MP mask and, with the click network, of its passes and ``keep_chosen`` on a 12-MP
photo.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

if importlib.util.find_spec("segmenter") is None:  # a Python without `make setup`'s install
    sys.exit(f"{Path(__file__).name}: the project is not installed here; run `make setup` and use .venv/bin/python")

import numpy as np
import torch
from PIL import Image, ImageFilter

from benchmarks.robustness import group_of_two, small_far
from evaluation.data_options import add_data_options, case_runs
from segmenter import checkpoint, chooser, people
from segmenter.inference import TTA_MODES, Segmenter
from segmenter.people import inside_point
from training import scenes

Sample = tuple[Image.Image, np.ndarray]
Scene = tuple[Image.Image, list[np.ndarray]]  # the photo and each person's own truth mask
CUT = 128
ALONE = "alone"  # the one case with a single person: outside the "all" row, which is two-person photos


def _side_by_side(a: Sample, b: Sample) -> Scene:
    image, union = group_of_two(a, b)
    first = np.zeros_like(union)
    first[:, :a[0].width] = a[1]
    return image, [first, union & ~first]


def _near_and_far(a: Sample, b: Sample) -> Scene:
    image, union = small_far(a, b)
    if image is a[0]:  # the far person did not fit
        return image, [a[1]]
    far = np.zeros_like(union)
    h, w = union.shape
    sh = max(16, round(a[0].height * 0.4))
    sw = round(b[0].width * sh / b[0].height)
    resized = np.asarray(Image.fromarray(b[1].astype(np.uint8) * 255).resize((sw, sh), Image.Resampling.BILINEAR))
    far[h - sh:, w - sw:] = resized >= CUT
    return image, [a[1] & ~far, far]


def _beside(a: Sample, b: Sample) -> Scene:
    """``b``'s person, 70% of the height, pasted at the bottom on the side away from ``a``'s person."""
    image, truth = a
    cut = scenes.cut_out(np.asarray(b[0]), b[1])
    if cut is None or not truth.any():
        return image, [truth]
    h, w = truth.shape
    ph = max(16, round(h * 0.7))
    pw = max(2, round(cut[0].shape[1] * ph / cut[0].shape[0]))
    if pw >= w:
        return image, [truth]
    person = np.asarray(Image.fromarray(cut[0]).resize((pw, ph), Image.Resampling.BILINEAR))
    mask = np.asarray(Image.fromarray(cut[1].astype(np.uint8) * 255).resize((pw, ph), Image.Resampling.BILINEAR))
    x = 0 if np.nonzero(truth)[1].mean() > w / 2 else w - pw
    soft = np.asarray(Image.fromarray(mask).filter(ImageFilter.GaussianBlur(0.8)), np.float32)[..., None] / 255
    out = np.asarray(image, np.float32).copy()
    out[h - ph:, x:x + pw] = person * soft + out[h - ph:, x:x + pw] * (1 - soft)
    second = np.zeros_like(truth)
    second[h - ph:, x:x + pw] = mask >= CUT
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8)), [truth & ~second, second]


def alone(a: Sample, b: Sample) -> Scene:
    """The photo as it is: a point on its one person must keep them as the mask has them."""
    return a[0], [a[1]]


CASES = {"side by side": _side_by_side, "near and far": _near_and_far, "beside": _beside}  # two people each


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


def _touch(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two truth masks form one region (8-connected) at the working size ``keep_people`` uses."""
    union = ((a | b) * 255).astype(np.uint8)
    labels, _ = people.regions_at_threshold(union)
    small_a = people._work_copy((a * 255).astype(np.uint8), people.WORK_SIDE)
    small_b = people._work_copy((b * 255).astype(np.uint8), people.WORK_SIDE)
    la, lb = set(np.unique(labels[small_a]).tolist()) - {0}, set(np.unique(labels[small_b]).tolist()) - {0}
    return bool(la & lb)


def score(mask: np.ndarray, truths: list[np.ndarray], certainty: torch.Tensor | None = None,
          choose: Callable[[list[tuple[int, int]]], list[np.ndarray]] | None = None) -> list[dict[str, float]]:
    """Per person: IoU of the kept mask (one point inside them, and the network's map as the server has it);
    with ``choose`` (the click network's answer for points), kept as the server keeps with one."""
    rows = []
    everyone = mask >= CUT
    for k, truth in enumerate(truths):
        if truth.sum() < 64:
            continue
        other = truths[1 - k] if len(truths) == 2 else np.zeros_like(truth)
        point = inside_point(truth)
        if choose is None:
            kept = people.keep_people(mask, [point], certainty) >= CUT
        else:
            kept = people.keep_chosen(mask, [point], choose([point]), certainty) >= CUT
        held = np.count_nonzero(kept & other) / max(1, np.count_nonzero(other))
        rows.append({"keep": _iou(kept, truth), "everyone": _iou(everyone, truth),
                     "touch": float(_touch(truth, other)), "merged": float(held > 0.5)})
    return rows


def timing(repeats: int = 3, seg: Segmenter | None = None, pick: chooser.Chooser | None = None,
           one_pass: bool = False) -> float:
    """Median milliseconds of ``keep_people`` on a 12-MP mask of two soft people, with a network-sized map;
    with ``pick``, of the click network's passes (one with ``one_pass``) on a 12-MP photo and ``keep_chosen``
    instead."""
    h, w = 3000, 4000
    yy, xx = np.mgrid[:h, :w]
    hard = (((xx - 1100) / 600) ** 2 + ((yy - 1800) / 1100) ** 2 < 1) | (((xx - 2900) / 500) ** 2
                                                                       + ((yy - 2000) / 900) ** 2 < 1)
    mask = np.asarray(Image.fromarray((hard * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(3)))
    certainty = np.asarray(Image.fromarray(mask).resize((352, 264), Image.Resampling.BILINEAR), np.float32) / 255
    photo = Image.fromarray(np.repeat(mask[..., None], 3, axis=2))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        if pick is None:
            people.keep_people(mask, [(1100, 1800)], certainty)
        else:
            choices = pick.choose(seg, photo, [(1100, 1800)], everyone=None if one_pass else certainty)
            people.keep_chosen(mask, [(1100, 1800)], choices, certainty)
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def report(rows: dict[str, list[dict[str, float]]]) -> None:
    print("| case | people | keep IoU | everyone IoU | truth touch | merged | keep IoU, not merged | share >= 0.90 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    every = [r for name, rs in rows.items() if not name.endswith(f": {ALONE}") for r in rs]
    for name, rs in [*rows.items(), ("all", every)]:
        if not rs:
            continue
        apart = [r["keep"] for r in rs if not r["merged"]]
        print(f"| {name} | {len(rs)} | {np.mean([r['keep'] for r in rs]):.4f} | "
              f"{np.mean([r['everyone'] for r in rs]):.4f} | {np.mean([r['touch'] for r in rs]):.0%} | "
              f"{np.mean([r['merged'] for r in rs]):.0%} | {np.mean(apart) if apart else float('nan'):.4f} | "
              f"{np.mean([r['keep'] >= 0.9 for r in rs]):.0%} |")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_options(p, limit=30)
    p.add_argument("--no-timing", action="store_true", help="skip the 12-MP timing")
    p.add_argument("--no-split", action="store_true", help="a region is one person (no network map to split by)")
    p.add_argument("--tta", choices=TTA_MODES, default="none",
                   help="the served option: the mirror pass for the mask and the click network alike")
    clicks = p.add_mutually_exclusive_group()
    clicks.add_argument("--chooser", type=Path, default=chooser.SHIPPED_CHOOSER,
                        help="the click network (default: the shipped one, as served)")
    clicks.add_argument("--no-chooser", action="store_true", help="keep by the mask's regions alone")
    p.add_argument("--one-pass", action="store_true",
                   help="ask the click network once per point, without weighing its answer against a rival's")
    args = p.parse_args(argv)
    seg = Segmenter.from_checkpoint(args.checkpoint or checkpoint.default_weights())
    pick = None
    if not args.no_chooser and (click_file := chooser.present(args.chooser)) is not None:
        pick = chooser.Chooser(chooser.load(click_file)[0], seg.device, seg.amp)
    print(f"keep by {'the click network ' + str(args.chooser) if pick else 'the regions alone'}")
    rows: dict[str, list[dict[str, float]]] = {}
    cases = {**CASES, ALONE: alone}
    for root, samples, i, case in case_runs(args, cases, "keep"):
        image, truths = cases[case](samples[i], samples[(i + 1) % len(samples)])
        with torch.inference_mode():
            prob = seg.predict_lowres([image], args.tta)[0]
            mask = seg.full_mask(prob, image)
        choose = None if pick is None else (lambda points, image=image, prob=prob: pick.choose(
            seg, image, points, args.tta, None if args.one_pass else prob))
        rows.setdefault(f"{root}: {case}", []).extend(score(mask, truths, None if args.no_split else prob, choose))
    print()
    report(rows)
    if not args.no_timing:
        print(f"\nkeep_people on a 12-MP mask: {timing():.0f} ms (median of 3)")
        if pick is not None:
            print(f"the click network's passes and keep_chosen on a 12-MP photo: "
                  f"{timing(3, seg, pick, args.one_pass):.0f} ms (median of 3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
