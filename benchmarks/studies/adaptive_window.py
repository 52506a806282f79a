"""Would a guided-filter window that widens over plain backgrounds get both edges? An experiment, not served code.

    python benchmarks/studies/adaptive_window.py --data datasets/eg1800 --data datasets/ccp \\
        --val-list training/splits/shared_val.txt --limit 100

segmenter/refine.py uses a narrow window (1/64 of the working size): best on real photos, where a wide one
snaps the outline to patterned clothes and clutter, but worse on plain backdrops, where every colour edge is
the person's and the wide 1/16 window finds it (docs/SERVING.md, "Edge refinement"). This fits both windows'
coefficients and blends them per pixel by how plain the *background* is in the wide window: the variance of
the guide's colours over the pixels the network calls background (weights ``1 - p``, or ``p < q`` with
``--q``), turned into a weight ``exp(-variance / tau)`` for the wide window. Each validation photo is scored
as it is and put onto pure green through its softened true mask (as benchmarks/tuning/matting_quality.py does):
IoU and boundary F on the real photo, IoU and the soft mask's mean error in the edge band on the green one.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if importlib.util.find_spec("segmenter") is None:  # a Python without `make setup`'s install
    sys.exit(f"{Path(__file__).name}: the project is not installed here; run `make setup` and use .venv/bin/python")

import numpy as np
import torch
from PIL import Image

from benchmarks.tuning.matting_quality import blend, edge_band, soft_matte
from evaluation.data_options import SHARED, add_data_options, all_pairs
from evaluation.metrics import image_metrics
from segmenter import imaging, refine
from segmenter.inference import Segmenter

GREEN = (0, 255, 0)
WIDE = 1 / 16  # the wide window of the sweep in segmenter/refine.py's RADIUS_FRACTION comment


def background_variance(prob: torch.Tensor, image: Image.Image, q: float | None,
                        size: tuple[int, int]) -> torch.Tensor:
    """The guide's colour variance over the background in the wide window: low where the backdrop is plain.

    ``size`` is the working size ``(h, w)`` that ``refine.fit`` chose, read off its coefficients.
    """
    wh, ww = size
    guide = refine._as_tensor(refine._pixels(image, "rgb", (ww, wh)))
    p = refine._upsample(prob.float()[None, None], (wh, ww))
    background = (1 - p).clamp(0, 1) if q is None else (p < q).float()
    sums = refine._box(torch.cat([background, background * guide, background * guide * guide], 1),
                       max(1, round(WIDE * max(ww, wh))))
    weight = sums[:, :1].clamp_min(1e-6)
    mean, square = sums[:, 1:4] / weight, sums[:, 4:7] / weight
    return (square - mean * mean).clamp_min(0).sum(1, keepdim=True)[0]


def mix(narrow: torch.Tensor, wide: torch.Tensor, variance: torch.Tensor, tau: float) -> torch.Tensor:
    """Both windows' coefficients, weighted per pixel towards the wide one by ``exp(-variance / tau)``."""
    w = torch.exp(-variance / tau)
    return w * wide + (1 - w) * narrow


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_options(p, val_list_required=True, limit=100, limit_mode=SHARED)
    p.add_argument("--taus", default="1e-3,3e-3,1e-2")
    p.add_argument("--qs", default="soft,0.02,0.05", help="background weights: soft (1 - p) or p < q")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    seg = Segmenter.from_checkpoint(args.checkpoint)
    qs = [None if q == "soft" else float(q) for q in args.qs.split(",")]
    taus = [float(t) for t in args.taus.split(",")]
    names = ["narrow 1/64 (served)", "wide 1/16"] + [
        f"adaptive q={'soft' if q is None else f'{q:g}'} tau={tau:g}" for q, tau in itertools.product(qs, taus)]
    scores: dict[str, dict[str, list[float]]] = {k: {"real IoU": [], "real BF": [], "green IoU": [],
                                                     "green edge error": []} for k in names}
    found = all_pairs(args)
    start = time.monotonic()
    for pair in found:
        person = np.asarray(imaging.load_image(pair.image))
        truth = np.asarray(imaging.load_mask(pair.mask))
        alpha, band, t = soft_matte(truth), edge_band(truth), torch.from_numpy(truth)
        real, green = Image.fromarray(person), Image.fromarray(blend(person, alpha, GREEN))
        with torch.inference_mode():
            low = seg.predict_lowres([real, green])
            masks: dict[str, list[np.ndarray]] = {name: [] for name in names}
            for pr, im in zip(low, (real, green), strict=True):
                narrow, wide = refine.fit(pr, im), refine.fit(pr, im, radius_fraction=WIDE)
                variances = [background_variance(pr, im, q, narrow.shape[-2:]) for q in qs]
                fitted = [narrow, wide] + [mix(narrow, wide, v, tau) for v, tau in itertools.product(variances, taus)]
                pixels = refine._pixels(im, "rgb")
                for name, coeffs in zip(names, fitted, strict=True):
                    masks[name].append(refine.apply(refine.with_levels(coeffs), pixels))
        for name, (real_mask, green_mask) in masks.items():
            m = image_metrics(torch.from_numpy(real_mask) >= 128, t)
            row = scores[name]
            row["real IoU"].append(m["iou"])
            row["real BF"].append(m["boundary_f"])
            row["green IoU"].append(image_metrics(torch.from_numpy(green_mask) >= 128, t)["iou"])
            row["green edge error"].append(float(np.abs(green_mask[band] / 255.0 - alpha[band]).mean()))
    print(f"adaptive_window.py: {len(found)} pairs, {time.monotonic() - start:.0f} s")
    print("| variant | " + " | ".join(next(iter(scores.values()))) + " |")
    print("| --- |" + " --- |" * 4)
    for name, row in scores.items():
        print(f"| {name} | " + " | ".join(f"{np.mean(v):.4f}" for v in row.values()) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
