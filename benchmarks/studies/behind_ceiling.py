"""How high can *people behind* go if only the people behind are found better?

``benchmarks/robustness.py``'s *people behind* case pastes 3-6 small people behind a validation photo's own
person. Its IoU mixes two things: how well the small people are found, and how well the photo's own
person is cut, which is the validation figure itself. This study separates them, per photo:

- ``served``: the served mask (crowd rule on, ``crowd=auto``);
- ``crowd on``: the crowd network's mask on every scene;
- ``served, people behind perfect``: the served mask with every pasted person's pixels set right: the
  most any better search for the people behind can reach, with today's cut of the main person;
- ``own person alone``: the main network on the photo before the people were pasted, scored on that
  photo's mask: the ``as is`` figure of the same photos;
- ``own person perfect``: the served mask with the photo's own person set right, people behind as served.

A target above ``served, people behind perfect`` cannot be met by finding people behind: it needs a
better cut of the main person too.

    python benchmarks/studies/behind_ceiling.py --data $DATASETS/eg1800 --data $DATASETS/ccp \\
        --val-list training/splits/shared_val.txt --limit 60
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

from benchmarks.robustness import people_behind
from evaluation.data_options import add_crowd_options, add_data_options, case_runs
from evaluation.metrics import image_metrics
from segmenter import checkpoint
from segmenter.inference import Segmenter
from segmenter.preprocess import THRESHOLD

COLUMNS = ("served", "crowd on", "served, people behind perfect", "own person alone", "own person perfect")


def _iou(mask: np.ndarray, truth: np.ndarray) -> float:
    return image_metrics(torch.from_numpy(mask), torch.from_numpy(truth))["iou"]


def ceilings(served: np.ndarray, crowd_on: np.ndarray, alone: np.ndarray, own: np.ndarray,
             truth: np.ndarray) -> dict[str, float]:
    """One scene's row: the masks as bool arrays; ``own`` is the photo's own person, ``truth`` the scene's
    (``own`` and the people behind), ``alone`` the main network's mask of the photo before the paste."""
    behind = truth & ~own
    return {"served": _iou(served, truth), "crowd on": _iou(crowd_on, truth),
            "served, people behind perfect": _iou((served & ~behind) | behind, truth),
            "own person alone": _iou(alone, own),
            "own person perfect": _iou((served & ~own) | own, truth)}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_options(p, limit=60)
    add_crowd_options(p)
    args = p.parse_args(argv)
    seg = Segmenter.from_checkpoint(args.checkpoint or checkpoint.default_weights(), crowd_path=args.crowd_checkpoint)
    if seg.crowd_model is None:
        p.error("no crowd network: ship one beside the weights or give --crowd-checkpoint")
    cut = round(THRESHOLD * 255)
    rows: dict[str, list[dict[str, float]]] = {}
    for root, samples, i, _ in case_runs(args, ["people behind"], "ceilings"):
        photo, own = samples[i]
        scene, truth = people_behind(samples, i)
        masks = [seg.predict_one(image, crowd=mode) >= cut
                 for image, mode in ((scene, "auto"), (scene, "on"), (photo, "off"))]
        rows.setdefault(root, []).append(ceilings(*masks, own, truth))
    print("\n| set | photos | " + " | ".join(COLUMNS) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in COLUMNS) + " |")
    for root, rs in rows.items():
        print(f"| {root} | {len(rs)} | " + " | ".join(f"{np.mean([r[c] for r in rs]):.4f}" for c in COLUMNS) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
