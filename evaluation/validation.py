"""Score a segmenter on validation pairs: the one scoring path of train.py, evaluate.py and the benchmarks.

Predictions go through ``segmenter.inference.Segmenter`` (what TorchServe serves) and are compared
with the truth at each photo's original resolution, so a training run's validation figure is the
figure users get.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import islice

import torch
from PIL import Image

from evaluation.metrics import image_metrics, mean_metrics
from evaluation.pairs import Pair
from evaluation.progress import Progress
from segmenter.crowd import DEFAULT_CROWD
from segmenter.imaging import load_image, load_mask
from segmenter.inference import Segmenter
from segmenter.preprocess import THRESHOLD


def evaluate_samples(segmenter: Segmenter, samples: Iterable[tuple[Pair, Image.Image, torch.Tensor]],
                     refine: str = "guided", batch_size: int = 8, total: int | None = None,
                     tta: str = "none", crowd: str = DEFAULT_CROWD) -> list[dict]:
    """Per-image metrics rows (name, root, iou, dice, boundary_f); streams, so memory stays flat."""
    rows = []
    bar = Progress(total or 0, "evaluate", enabled=total is not None)
    it = iter(samples)
    while chunk := list(islice(it, batch_size)):
        masks = segmenter.predict([img for _, img, _ in chunk], refine=refine, tta=tta, crowd=crowd)
        for (pair, _, truth), soft in zip(chunk, masks, strict=True):
            pred = torch.from_numpy(soft) >= round(THRESHOLD * 255)
            rows.append({"name": pair.name, "root": str(pair.root), **image_metrics(pred, truth)})
        bar.update(len(chunk))
    bar.close()
    return rows


def iter_samples(pairs: Sequence[Pair]) -> Iterator[tuple[Pair, Image.Image, torch.Tensor]]:
    for p in pairs:
        yield p, load_image(p.image), torch.from_numpy(load_mask(p.mask))


def summarize(rows: list[dict]) -> dict:
    per_root: dict[str, list[dict]] = {}
    for r in rows:
        per_root.setdefault(r["root"], []).append(r)
    overall = mean_metrics(rows)
    return {
        "mean_iou": overall["iou"], "mean_dice": overall["dice"], "mean_boundary_f": overall["boundary_f"],
        "count": overall["count"],
        "per_dataset": {root: mean_metrics(rs) for root, rs in per_root.items()},
    }
