"""Can a second network trained on scenes of several people serve the group photos, chosen by the first look?

    python benchmarks/studies/group_expert.py --data datasets/eg1800 --data datasets/ccp \\
        --val-list training/splits/shared_val.txt --limit 30 --expert runs/group-expert/last.pt \\
        --rows runs/group-expert-rows.json

Training on group scenes lifts them by +0.03 to +0.05 IoU but costs single-person photos up to 0.010
(docs/research/zoom-pass.md); no dose of scenes removed the conflict. A specialist does not need to be good at
portraits if it never sees them: the shipped network takes the first look, a few features of its map say
whether the photo holds several or small people, and only then does the specialist's map replace it.

Per photo of ``benchmarks/robustness.py``'s cases it records both networks' IoU and the first look's
features (``--rows`` keeps them, so rules can be scored again without the networks), then prints, for each
rule and threshold, the routed IoU per case and the share of photos sent to the specialist.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

if importlib.util.find_spec("segmenter") is None:  # a Python without `make setup`'s install
    sys.exit(f"{Path(__file__).name}: the project is not installed here; run `make setup` and use .venv/bin/python")

import numpy as np
import torch

from benchmarks.robustness import CASES
from evaluation.data_options import add_data_options, case_runs
from evaluation.metrics import dilate, image_metrics
from segmenter import checkpoint, crowd, people, zoom
from segmenter.inference import Segmenter
from segmenter.refine import upsample

CUT = 128
ROUTES = ("expert", "mean", "merge")
REACH = 0.02  # "merge": the first look is kept within this share of the map's diagonal of its largest person
FAINT = 0.2  # "outside": faint evidence of a person, farther than REACH from the largest one


def features(prob: torch.Tensor) -> dict[str, float]:
    """What the first look says about how many people it saw and how large they are (the served two first)."""
    count, tallest = crowd.regions(prob)
    confident = (prob >= crowd.CONFIDENT).numpy()
    labels, n = people.label(confident)
    area = np.bincount(labels.ravel(), minlength=n + 1)[1:] / labels.size
    area = np.sort(area[area >= crowd.SPECK])[::-1]
    unsure = ((prob >= 0.15) & (prob < crowd.CONFIDENT)).numpy()
    return {"regions": float(count), "largest_height": tallest, "height": zoom.person_height(prob),
            "largest": float(area[0]) if len(area) else 0.0, "others": float(area[1:].sum()),
            "unsure": float(unsure.mean()),
            "outside": float(((prob >= FAINT) & ~_near_largest(prob)).float().mean())}


def _near_largest(prob: torch.Tensor) -> torch.Tensor:
    """The map's largest person and what lies within ``REACH`` of the diagonal of it (all False without one)."""
    largest = crowd.largest_region(prob)
    if not largest.any():
        return torch.zeros(prob.shape, dtype=torch.bool)
    return dilate(torch.from_numpy(largest), max(1, round(REACH * float(np.hypot(*largest.shape)))))


def merge(first: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """The first look on and around its largest person, the more confident of the two looks elsewhere: the
    main person keeps the main network's edges, the people behind get the crowd network's."""
    near = _near_largest(first)
    if not near.any():
        return other
    return torch.where(near, first, torch.maximum(first, other))


# rule name -> (feature, "above" or "below"), the thresholds tried
RULES: dict[str, tuple[Callable[[dict], float], str, tuple[float, ...]]] = {
    "tallest person under": (lambda r: r["height"], "below", (0.5, 0.6, 0.75, 0.9)),
    "largest region's height under": (lambda r: r["largest_height"], "below", (0.5, 0.6, 0.75, 0.9)),
    "regions at least": (lambda r: r["regions"], "above", (2, 3, 4)),
    "other regions' area over": (lambda r: r["others"], "above", (0.002, 0.005, 0.01, 0.02)),
    "unsure area over": (lambda r: r["unsure"], "above", (0.01, 0.02, 0.04)),
    # rows written before the feature existed lack it: they never pass
    "evidence away from the largest person over": (lambda r: r.get("outside", -1.0), "above",
                                                   (0.0005, 0.001, 0.002, 0.005)),
}


def routed(rows: list[dict], sends: Callable[[dict], bool], to: str) -> tuple[float, float]:
    """Mean IoU when ``sends`` picks the photos that get ``to`` (a row's key), and the share it picks."""
    sent = [sends(r) for r in rows]
    return float(np.mean([r[to] if s else r["base"] for r, s in zip(rows, sent, strict=True)])), float(np.mean(sent))


def served(row: dict) -> bool:
    """``segmenter.crowd.is_group`` on the row's features."""
    return crowd.looks_like_group(int(row["regions"]), row["largest_height"])


def report(rows: list[dict], to: str) -> None:
    """The table for routing to ``to``: "expert" (the specialist's map), "mean" (the two maps averaged) or
    "merge" (``merge``)."""
    print(f"\nrouted to: {to}\n")
    cases = sorted({r["case"] for r in rows}, key=lambda c: [r["case"] for r in rows].index(c))
    by_case = {c: [r for r in rows if r["case"] == c] for c in cases}
    print("| rule | " + " | ".join(cases) + " | all |")
    print("| --- | " + " | ".join("---" for _ in cases) + " | --- |")

    def line(name: str, pick: Callable[[list[dict]], tuple[float, float]]) -> None:
        cells = [pick(by_case[c]) for c in cases]
        mean, share = pick(rows)
        print(f"| {name} | " + " | ".join(f"{m:.4f} ({s:.0%})" for m, s in cells) + f" | {mean:.4f} ({share:.0%}) |")

    line("shipped network", lambda rs: (float(np.mean([r["base"] for r in rs])), 0.0))
    line(to, lambda rs: (float(np.mean([r[to] for r in rs])), 1.0))
    line("better of the two (oracle)", lambda rs: (float(np.mean([max(r["base"], r[to]) for r in rs])),
                                                    float(np.mean([r[to] > r["base"] for r in rs]))))
    line("served: the largest under 0.5 high, or 3 regions or more and the largest under 0.9",
         lambda rs: routed(rs, served, to))
    line("3 regions or more whatever their height, or the largest under 0.5",
         lambda rs: routed(rs, lambda r: r["largest_height"] < crowd.LARGEST_HEIGHT or r["regions"] >= 3, to))
    for name, (feature, side, thresholds) in RULES.items():
        for th in thresholds:
            def sends(r: dict, f: Callable[[dict], float] = feature, s: str = side, t: float = th) -> bool:
                return f(r) >= t if s == "above" else f(r) < t
            line(f"{name} {th:g}", lambda rs, sends=sends: routed(rs, sends, to))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_options(p, limit=30)
    p.add_argument("--expert", type=Path, help="the specialist's checkpoint (needed unless --rows exists)")
    p.add_argument("--rows", type=Path, help="per-photo rows: read if the file exists, else written")
    p.add_argument("--case", action="append", choices=sorted(CASES), dest="cases",
                   help="score only this case (repeatable; default: all)")
    args = p.parse_args(argv)
    if args.rows and args.rows.exists():
        rows = json.loads(args.rows.read_text())
        for to in (r for r in ROUTES if r in rows[0]):  # rows written before a route existed lack it
            report(rows, to)
        return 0
    if args.expert is None:
        p.error("--expert is needed to score photos (or give --rows of an earlier run)")
    base = Segmenter.from_checkpoint(args.checkpoint or checkpoint.default_weights())
    expert = Segmenter.from_checkpoint(args.expert)
    rows = []
    for root, samples, i, case in case_runs(args, args.cases or CASES, "experts"):
        image, truth = CASES[case](samples, i)
        t = torch.from_numpy(truth)
        # the main network's own first look, and the specialist alone, whatever crowd network ships beside them
        first = base.predict_lowres([image], crowd="off")[0]
        other = expert.predict_lowres([image], crowd="off")[0]
        rows.append({"root": root, "case": f"{root}: {case}", "index": i, **features(first),
                     "base": image_metrics(torch.from_numpy(upsample(first, image) >= CUT), t)["iou"],
                     "expert": image_metrics(torch.from_numpy(upsample(other, image) >= CUT), t)["iou"],
                     "mean": image_metrics(torch.from_numpy(upsample((first + other) / 2, image) >= CUT), t)["iou"],
                     "merge": image_metrics(torch.from_numpy(upsample(merge(first, other), image) >= CUT), t)["iou"]})
    if args.rows:
        args.rows.parent.mkdir(parents=True, exist_ok=True)
        args.rows.write_text(json.dumps(rows))
    for to in ROUTES:
        report(rows, to)
    return 0


if __name__ == "__main__":
    sys.exit(main())
