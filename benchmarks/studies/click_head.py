"""Can a head that is told where the user clicked cut that one person out of a group?

    python benchmarks/studies/click_head.py --data datasets/eg1800 --data datasets/ccp --data datasets/vikram \\
        --val-list training/splits/shared_val.txt --out runs/click-head.pt          # trains, then scores

``keep`` receives a point, but the served split (``segmenter.people.split_touching``) and the seam head
(``seam_head.py``) both try to find every boundary between people without it, and a boundary they miss
merges two people while a false one cuts a body that stands alone. Interactive segmentation works the other
way: the network is given the click and asked for the one object under it. This study trains such a *click
head* on the frozen shipped network: its decoder levels, the photo and the probability at half the network's
resolution, plus two click channels (a small disc and a broad Gaussian around the point), through a context
path at a quarter of the resolution with dilations up to 16 (a view as wide as the photo), back to half
resolution. Its target is the clicked person's own mask. Its training photos are ``seam_head.compose``'s
(single people, side by side, pasted in front or behind), from training pairs only, with a click on each
person: the person's pixel nearest their centroid (where ``keep_quality`` and a user click) or any of their
pixels.

Scored on ``benchmarks/tuning/keep_quality.py``'s two-person photos and on single photos (the change in IoU
against keeping everyone: 0 when the head keeps a lone person whole), four ways of using the head:
``head`` keeps the served mask where the head says the clicked person is; ``served & head`` keeps the
served ``keep_people`` result there; ``head, then regions`` runs ``keep_people`` on the mask the head kept
(its region rules drop the head's stray pieces); ``keep_chosen`` is the served form of the last
(``segmenter.people.keep_chosen``: the same person pixels, the kept person's soft edge left whole).
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

if importlib.util.find_spec("segmenter") is None:  # a Python without `make setup`'s install
    sys.exit(f"{Path(__file__).name}: the project is not installed here; run `make setup` and use .venv/bin/python")

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from benchmarks.studies.seam_head import (
    KINDS,
    SIZE,
    Features,
    compose,
    frozen_network,
    load_or_train,
    load_training,
    sheet,
    take_step,
)
from benchmarks.tuning.keep_quality import CASES, CUT, _iou, alone, inside_point
from evaluation.data_options import add_data_options, case_runs
from segmenter import checkpoint, people
from segmenter.chooser import click_maps
from segmenter.inference import Segmenter
from segmenter.preprocess import normalize
from segmenter.refine import resize_map
from training.losses import BCEDiceLoss

WIDTH = 32  # the head's channels
RULES = ("head", "served & head", "head, then regions", "keep_chosen")


class ClickHead(nn.Module):
    """1x1 reduction at half resolution; a context path at quarter resolution (3x3 convolutions dilated 1 to
    16, residual); back up, joined with the reduction, to one logit per half-resolution pixel."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(in_channels + 2, WIDTH, 1), nn.ReLU())
        self.context = nn.ModuleList(nn.Conv2d(WIDTH, WIDTH, 3, padding=d, dilation=d) for d in (1, 2, 4, 8, 16, 1))
        self.join = nn.Sequential(nn.Conv2d(2 * WIDTH, WIDTH, 3, padding=1), nn.ReLU(), nn.Conv2d(WIDTH, 1, 1))

    def forward(self, features: torch.Tensor, clicks: torch.Tensor) -> torch.Tensor:
        fine = self.reduce(torch.cat([features, clicks], 1))
        x = F.avg_pool2d(fine, 2)
        for conv in self.context:
            x = x + F.relu(conv(x))
        x = F.interpolate(x, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        return self.join(torch.cat([x, fine], 1))


def pick_click(person: np.ndarray, r: random.Random) -> tuple[int, int]:
    """Where a user clicks on a person: nearest their centroid half the time, any of their pixels otherwise."""
    if r.random() < 0.5:
        return inside_point(person)
    ys, xs = np.nonzero(person)
    k = r.randrange(len(xs))
    return int(xs[k]), int(ys[k])


def train(args: argparse.Namespace, features: Features) -> ClickHead:
    data = load_training(args)
    torch.manual_seed(0)
    head = ClickHead(features.channels)
    opt = torch.optim.Adam(head.parameters(), 1e-3)
    loss_fn = BCEDiceLoss()  # BCE plus Dice per clicked person, as the segmenter trains
    r, start = random.Random(11), time.perf_counter()
    for step in range(args.steps):
        photos, index, points, targets = [], [], [], []
        for _ in range(args.batch):
            photo, inst = compose(data, r, args.mix)
            photos.append(photo)
            for k in (1, 2):
                person = inst == k
                if person.sum() >= 30:
                    index.append(len(photos) - 1)
                    points.append(pick_click(person, r))
                    targets.append(torch.from_numpy(person).float())
        batch = normalize(torch.from_numpy(np.stack(photos)).permute(0, 3, 1, 2).contiguous())
        target = F.avg_pool2d(torch.stack(targets)[:, None], 2)
        with torch.autocast("cpu", torch.bfloat16):
            out = head(features(batch)[index], click_maps(points, (SIZE, SIZE), step=2)).float()
        take_step(opt, loss_fn(out, target), step, args.steps, start)
    return head


def chosen(seg: Segmenter, features: Features, head: ClickHead, image: Image.Image,
           points: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """For each point, the head's probability that a pixel belongs to the person clicked there, at the
    photo's size; the network runs once for all of them."""
    batch, sizes = seg.model_input([image])
    w, h = sizes[0]
    s = w / image.width  # the photo's pixels to the network's
    with torch.inference_mode():
        seen = features(batch.contiguous())
        maps = click_maps([(x * s, y * s) for x, y in points], batch.shape[-2:], step=2)
        out = torch.sigmoid(head(seen.expand(len(points), -1, -1, -1), maps).float())
        out = F.interpolate(out, scale_factor=2, mode="bilinear", align_corners=False)[:, 0, :h, :w]
        return [resize_map(o, (image.height, image.width)).numpy() for o in out]


def kept(rule: str, mask: np.ndarray, prob: torch.Tensor, choice: np.ndarray, point: tuple[int, int],
         threshold: float) -> np.ndarray:
    """The kept mask's person pixels under one of ``RULES``."""
    inside = choice >= threshold
    if rule == "head":
        return (mask >= CUT) & inside
    if rule == "served & head":
        return (people.keep_people(mask, [point], prob) >= CUT) & inside
    if rule == "keep_chosen":  # as served (segmenter.people.keep_chosen)
        return people.keep_chosen(mask, [point], [choice], prob, threshold) >= CUT
    return people.keep_people(np.where(inside, mask, 0).astype(np.uint8), [point], prob) >= CUT


def add_study_options(p: argparse.ArgumentParser, steps: int, batch: int) -> None:
    """The options the click studies share: where the weights go, what trains and what scores."""
    add_data_options(p, limit=30)
    p.add_argument("--out", type=Path, required=True, help="the trained weights: trained and written if missing")
    p.add_argument("--score-data", nargs="+", help="roots to score on (default: the --data roots but vikram)")
    p.add_argument("--mix", type=float, nargs=4, default=[0.35, 0.15, 0.35, 0.15], metavar="SHARE",
                   help="shares of " + ", ".join(KINDS) + " photos in training")
    p.add_argument("--pairs", type=int, default=1500, help="training pairs read")
    p.add_argument("--steps", type=int, default=steps, help="batches")
    p.add_argument("--batch", type=int, default=batch, help="photos per batch (each with a click on each person)")
    p.add_argument("--threshold", type=float, nargs="+", default=[0.5, 0.3])
    p.add_argument("--picture", type=Path, help="also write the choice on a few photos to this PNG")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_study_options(p, steps=1600, batch=8)
    args = p.parse_args(argv)
    model = frozen_network(args)
    features = Features(model, range(len(model.decoder)))
    head = load_or_train(args, ClickHead(features.channels), lambda: train(args, features))
    seg = Segmenter.from_checkpoint(args.checkpoint or checkpoint.default_weights())
    score_choices(args, seg, lambda image, points: chosen(seg, features, head, image, points))
    return 0


Chooser = Callable[[Image.Image, Sequence[tuple[int, int]]], list[np.ndarray]]


def score_choices(args: argparse.Namespace, seg: Segmenter, choose: Chooser, label: str = "head") -> None:
    """Print every rule's keep IoU on ``keep_quality``'s two-person photos and single photos, ``choose``
    giving the clicked person's probability per point at the photo's size (``label`` names it in the rules)."""
    args.data = args.score_data or [d for d in args.data if Path(d).name != "vikram"]
    cases = {**CASES, "single": alone}
    rows: dict[tuple[str, str, float], list[float]] = {}
    names, shown = [], []
    for root, samples, i, case in case_runs(args, cases, "clicks"):
        name = f"{root}: {case}"
        names.append(name)
        image, truths = cases[case](samples[i], samples[(i + 1) % len(samples)])
        with torch.inference_mode():
            prob = seg.predict_lowres([image])[0]
            mask = seg.full_mask(prob, image)
        clicked = [(truth, inside_point(truth)) for k, truth in enumerate(truths)
                   if truth.sum() >= 64 and not (len(truths) == 2 and truths[1 - k].sum() < 64)]
        choices = choose(image, [point for _, point in clicked]) if clicked else []
        for (truth, point), choice in zip(clicked, choices, strict=True):
            if len(shown) < 12 and name not in {n for n, *_ in shown}:
                shown.append((name, image, choice, truth))
            base = _iou(mask >= CUT, truth) if case == "single" else 0.0
            rows.setdefault((name, "served", 0.0), []).append(
                _iou(people.keep_people(mask, [point], prob) >= CUT, truth) - base)
            for rule in RULES:
                for t in args.threshold:
                    rows.setdefault((name, rule, t), []).append(_iou(kept(rule, mask, prob, choice, point, t), truth)
                                                                - base)
    report(rows, list(dict.fromkeys(names)), args.threshold, label)
    if args.picture:
        picture(shown).save(args.picture)


def report(rows: dict[tuple[str, str, float], list[float]], names: list[str], thresholds: Sequence[float],
           label: str = "head") -> None:
    print(f"\n| rule | {label} at | " + " | ".join(names) + " | all two-person |")
    print("| --- | --- | " + " | ".join("---" for _ in names) + " | --- |")
    for rule, t in [("served", 0.0)] + [(r, t) for r in RULES for t in thresholds]:
        cells = [f"{np.mean(rows[(n, rule, t)]):+.3f}" if n.endswith("single") else f"{np.mean(rows[(n, rule, t)]):.3f}"
                 for n in names]
        pairs = [v for n in names if not n.endswith("single") for v in rows[(n, rule, t)]]
        name = rule.replace("head", label)
        print(f"| {name} | {'-' if rule == 'served' else t} | {' | '.join(cells)} | {np.mean(pairs):.4f} |")


def picture(shown: Sequence[tuple[str, Image.Image, np.ndarray, np.ndarray]], height: int = 200,
            width: int = 1200) -> Image.Image:
    """The photo with the head's choice in red, beside the clicked person's truth, one tile per case."""
    tiles = []
    for _name, image, choice, truth in shown:
        photo = np.asarray(image.convert("RGB"), np.float32)
        tint = photo.copy()
        tint[choice >= 0.5] = tint[choice >= 0.5] * 0.4 + np.array([255, 0, 0]) * 0.6
        truth_rgb = np.repeat((truth[..., None] * 255).astype(np.uint8), 3, axis=2)
        gap = np.full((photo.shape[0], 8, 3), 255, np.uint8)
        tile = Image.fromarray(np.concatenate([tint.astype(np.uint8), gap, truth_rgb], 1))
        tiles.append(tile.resize((round(height * tile.width / tile.height), height)))
    return sheet(tiles, height, width)


if __name__ == "__main__":
    sys.exit(main())
